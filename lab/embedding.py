"""The LLM simulator's embedding model: a deterministic function of the text.

Feature hashing of syllables and syllable bigrams (Vietnamese words are mostly two syllables),
with sublinear term frequency and a short stop list, projected onto ``dim`` signed buckets and
L2-normalised. Texts that share words land near each other, so retrieval over it is meaningful.
It is a simulator, not a language model: it knows no synonyms.

Speed: the bucket of each feature is remembered (a bounded cache per ``dim``) and a batch is
accumulated with one ``numpy.bincount``; every row is computed exactly as it would be alone.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_DIM = 768

_TOKEN = re.compile(r"\w+(?:[/.\-]\w+)*")

# The most frequent function syllables of Vietnamese legal text carry no topic.
STOP_SYLLABLES = frozenset(
    """của và các những được có là cho trong theo này với để về khi thì không một từ đến tại do
    hoặc phải đã bị sẽ như nếu trường hợp quy định điều khoản gì nào ra sao thế""".split()  # noqa: SIM905
)
_BIGRAM_WEIGHT = 1.5
_BATCH_ROWS = 1024  # rows accumulated per bincount: bounds the temporary (rows x dim float64)
_CACHE_LIMIT = 1 << 21  # features remembered per dim before that cache starts over


class _Buckets(dict):
    """Feature -> code for one ``dim``: bucket, plus ``dim`` if the sign is negative, plus ``2 * dim`` for bigrams."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def __missing__(self, feature: str) -> int:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        value = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
        code = value % self.dim + (0 if (value >> 63) & 1 else self.dim) + (2 * self.dim if " " in feature else 0)
        self[feature] = code
        return code


_buckets: dict[int, _Buckets] = {}


def tokens(text: str) -> list[str]:
    """Lower-case NFC syllables of ``text``; document numbers such as 22/2023/qh15 stay whole."""
    return _TOKEN.findall(unicodedata.normalize("NFC", text).lower())


def _features(text: str) -> Counter[str]:
    """Counts of the text's syllables and syllable bigrams, unigrams first, each in order of first appearance."""
    syllables = tokens(text)
    stop = STOP_SYLLABLES
    counts: Counter[str] = Counter([s for s in syllables if s not in stop])
    pairs = zip(syllables, syllables[1:], strict=False)
    counts.update([f"{a} {b}" for a, b in pairs if a not in stop or b not in stop])
    return counts


def _tf_weights(top: int) -> np.ndarray:
    """``1 + ln(count)`` for counts ``0..top`` (index 0 unused), with the floats ``math.log`` gives."""
    return np.array([0.0] + [1.0 + math.log(c) for c in range(1, top + 1)], dtype=np.float64)


def _embed_batch(texts: Sequence[str], dim: int) -> np.ndarray:
    buckets = _buckets.get(dim) or _buckets.setdefault(dim, _Buckets(dim))
    codes: list[int] = []
    counts: list[int] = []
    lengths: list[int] = []
    for text in texts:
        features = _features(text)
        codes.extend(map(buckets.__getitem__, features))
        counts.extend(features.values())
        lengths.append(len(features))
    code = np.asarray(codes, dtype=np.int64)
    count = np.asarray(counts, dtype=np.int64)
    weight = _tf_weights(int(count.max(initial=1)))[count]
    weight = np.where(code >= 2 * dim, weight * _BIGRAM_WEIGHT, weight)
    weight = np.where(code % (2 * dim) >= dim, -weight, weight)
    rows = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    matrix = np.bincount(rows * dim + code % dim, weight, len(texts) * dim).reshape(len(texts), dim)
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
    empty = norms == 0.0
    if empty.any():
        matrix[empty, 0] = 1.0
        norms[empty] = 1.0
    return (matrix / norms[:, None]).astype(np.float32)


def embed_texts(texts: Sequence[str] | Iterable[str], dim: int = DEFAULT_DIM) -> np.ndarray:
    """Embed many texts: an ``(n, dim)`` float32 array of unit rows (each row as ``embed_text`` gives it)."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    items = texts if isinstance(texts, Sequence) else list(texts)
    if not items:
        return np.zeros((0, dim), dtype=np.float32)
    blocks = [_embed_batch(items[i : i + _BATCH_ROWS], dim) for i in range(0, len(items), _BATCH_ROWS)]
    return blocks[0] if len(blocks) == 1 else np.vstack(blocks)


def embed_text(text: str, dim: int = DEFAULT_DIM) -> np.ndarray:
    """Embed one text into a unit vector of ``dim`` float32 values."""
    return embed_texts([text], dim)[0]
