"""The LLM simulator's embedding model: a deterministic function of the text.

Feature hashing of syllables and syllable bigrams (Vietnamese words are mostly two syllables),
with sublinear term frequency and a short stop list, projected onto ``dim`` signed buckets and
L2-normalised. Texts that share words land near each other, so retrieval over it is meaningful.
It is a simulator, not a language model: it knows no synonyms.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

DEFAULT_DIM = 768

_TOKEN = re.compile(r"\w+(?:[/.\-]\w+)*")

# The most frequent function syllables of Vietnamese legal text carry no topic.
STOP_SYLLABLES = frozenset(
    """của và các những được có là cho trong theo này với để về khi thì không một từ đến tại do
    hoặc phải đã bị sẽ như nếu trường hợp quy định điều khoản gì nào ra sao thế""".split()
)
_BIGRAM_WEIGHT = 1.5


def tokens(text: str) -> list[str]:
    """Lower-case NFC syllables of ``text``; document numbers such as 22/2023/qh15 stay whole."""
    return _TOKEN.findall(unicodedata.normalize("NFC", text).lower())


@lru_cache(maxsize=1 << 20)
def _bucket(feature: str, dim: int) -> tuple[int, float]:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    value = int.from_bytes(digest, "little")
    return value % dim, 1.0 if (value >> 63) & 1 else -1.0


def _features(text: str) -> Counter[str]:
    syllables = tokens(text)
    counts: Counter[str] = Counter(s for s in syllables if s not in STOP_SYLLABLES)
    for a, b in zip(syllables, syllables[1:], strict=False):
        if a not in STOP_SYLLABLES or b not in STOP_SYLLABLES:
            counts[f"{a} {b}"] += 1
    return counts


def embed_text(text: str, dim: int = DEFAULT_DIM) -> np.ndarray:
    """Embed one text into a unit vector of ``dim`` float32 values."""
    vector = np.zeros(dim, dtype=np.float64)
    for feature, count in _features(text).items():
        index, sign = _bucket(feature, dim)
        weight = (1.0 + math.log(count)) * (_BIGRAM_WEIGHT if " " in feature else 1.0)
        vector[index] += sign * weight
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        vector[0] = 1.0
        norm = 1.0
    return (vector / norm).astype(np.float32)


def embed_texts(texts: Sequence[str] | Iterable[str], dim: int = DEFAULT_DIM) -> np.ndarray:
    """Embed many texts: an ``(n, dim)`` float32 array of unit rows."""
    rows = [embed_text(t, dim) for t in texts]
    if not rows:
        return np.zeros((0, dim), dtype=np.float32)
    return np.vstack(rows)
