"""A deterministic Vietnamese public-procurement legal corpus, its chunks and the questions users ask of it.

The corpus starts with documents of the real legal framework (Luật Đấu thầu 22/2023/QH15, Nghị định
24/2024/NĐ-CP, Nghị định 214/2025/NĐ-CP, Thông tư 22/2024/TT-BKHĐT, Luật Xây dựng 50/2014/QH13, ...: real
numbers and subjects, synthetic article wording) and goes on with generated decisions of provinces, circulars
of ministries and decrees, as many as a profile needs. Each article is split on its own, as the users'
ingestion does, with a re-implementation of LangChain's ``RecursiveCharacterTextSplitter`` (1000
characters, overlap 200).

Questions paraphrase an article's title and the values it states, so retrieval over
:mod:`ragperf_lab.embedding` finds the answering article; each question records which article that is.
"""

from __future__ import annotations

import json
import os
import random
import unicodedata
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ragperf_lab.corpus_docs import TOPICS, Article, Doc, articles, documents
from ragperf_lab.corpus_split import CHUNK_OVERLAP, CHUNK_SIZE, SEPARATORS, split_text
from ragperf_lab.corpus_text import GENERIC_ASKS

__all__ = [
    "CHUNK_OVERLAP",
    "CHUNK_SIZE",
    "DEFAULT_SEED",
    "DOC_TYPES",
    "PROFILES",
    "SEPARATORS",
    "Chunk",
    "Question",
    "chunk_count_target",
    "draw_questions",
    "iter_chunks",
    "question_pool",
    "read_questions_jsonl",
    "split_text",
    "write_questions_jsonl",
    "zipf_weights",
]

PROFILES: dict[str, int] = {"smoke": 5_000, "demo": 100_000}
DEFAULT_SEED = 20231
DOC_TYPES = ("luat", "nghi_dinh", "thong_tu", "quyet_dinh")
QUALITY_SHARE = 0.2
_PKG_SHARE = 0.7  # share of questions citing only a document that also name the packages
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://ragperf.invalid/corpus/chunk")


@dataclass(frozen=True)
class Chunk:
    """A piece of one article as stored in the vector store."""

    id: str
    text: str
    metadata: dict


@dataclass(frozen=True)
class Question:
    """A user question and the article (``doc_number``, ``article``) that answers it."""

    id: int
    text: str
    doc_number: str
    article: int
    mode: str
    doc_type: str


def chunk_count_target(profile: str) -> int:
    """The number of chunks of ``profile``'s corpus; ValueError naming the allowed profiles if unknown."""
    try:
        return PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; allowed profiles: {', '.join(PROFILES)}") from None


def _walk(profile: str, seed: int) -> Iterator[tuple[Article, list[str], bool]]:
    """Articles in corpus order with their chunk texts, cut off once the profile's budget is reached."""
    budget = chunk_count_target(profile)
    produced = 0
    for doc in documents(seed):
        for article in articles(doc):
            pieces = split_text(article.text)
            taken = pieces[: budget - produced]
            yield article, taken, len(taken) == len(pieces)
            produced += len(taken)
            if produced >= budget:
                return


def _metadata(article: Article, index: int) -> dict[str, str | int]:
    doc = article.doc
    return {
        "source": doc.source,
        "doc_type": doc.doc_type,
        "doc_number": doc.number,
        "title": doc.title,
        "chapter": article.chapter,
        "article": article.number,
        "article_title": article.title,
        "year": doc.year,
        "chunk_index": index,
    }


def iter_chunks(profile: str, seed: int = DEFAULT_SEED) -> Iterator[Chunk]:
    """Stream exactly ``chunk_count_target(profile)`` chunks, one article at a time.

    Args:
        profile: A key of :data:`PROFILES`.
        seed: Seed of the wording, numbers and generated documents.

    Yields:
        Chunks in corpus order; ``id`` is a UUID5 of document number, article and chunk index.
    """
    for article, pieces, _ in _walk(profile, seed):
        for index, text in enumerate(pieces):
            key = f"{article.doc.number}|{article.number}|{index}"
            yield Chunk(str(uuid.uuid5(_ID_NAMESPACE, key)), text, _metadata(article, index))


def _nfc_sentence(text: str) -> str:
    text = " ".join(unicodedata.normalize("NFC", text).split())
    return text[:1].upper() + text[1:]


def _ask(article: Article, rng: random.Random) -> str:
    """One question answered by ``article``: a paraphrase of its title, or of a value it states."""
    doc = article.doc
    own = TOPICS[article.topic].asks_for(article.title)
    template = rng.choice(GENERIC_ASKS if not own or rng.random() < 0.6 else own)
    if "{ref}" not in template and "{ctx}" not in template:
        template = "Theo {ref}, " + template[:1].lower() + template[1:]
    if "{ctx}" not in template and "{pkg}" not in template and rng.random() < _PKG_SHARE:
        template = "Đối với {pkg}, " + template[:1].lower() + template[1:]
    ref = rng.choice(doc.refs)
    slots = article.slots | {"ref": ref}
    if "{ref}" in template and doc.where and doc.where in ref:  # name the place once
        slots["ctx"] = doc.pkg
    return _nfc_sentence(template.format(**slots))


def question_pool(profile: str, n: int = 2000, seed: int = DEFAULT_SEED) -> list[Question]:
    """``n`` questions (distinct texts) on articles wholly present in ``profile``'s corpus, ~20% "quality".

    Args:
        profile: A key of :data:`PROFILES`.
        n: Number of questions.
        seed: Seed of the corpus and of the questions.

    Returns:
        Questions with ids ``0..n-1``; articles are visited in a seeded order, more than once if ``n``
        exceeds the number of articles.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    docs: dict[int, Doc] = {}
    present: list[tuple[int, int]] = []
    for article, _, whole in _walk(profile, seed):
        if whole:
            docs[article.doc.index] = article.doc
            present.append((article.doc.index, article.number))
    rng = random.Random(f"ragperf-questions:{seed}:{profile}")
    rng.shuffle(present)
    chosen = [present[i % len(present)] for i in range(n)]
    wanted = set(chosen)
    found: dict[tuple[int, int], Article] = {}
    for doc_index in sorted({d for d, _ in wanted}):
        for article in articles(docs[doc_index]):
            if (doc_index, article.number) in wanted:
                found[(doc_index, article.number)] = article
    questions: list[Question] = []
    seen: set[str] = set()
    for key in chosen:
        article = found[key]
        text = _ask(article, rng)
        for _ in range(8):
            if text not in seen:
                break
            text = _ask(article, rng)
        seen.add(text)
        mode = "quality" if rng.random() < QUALITY_SHARE else "fast"
        questions.append(Question(len(questions), text, article.doc.number, article.number, mode, article.doc.doc_type))
    return questions


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """Popularity of ranks ``0..n-1``, proportional to ``1 / (rank + 1) ** exponent`` and summing to 1."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not exponent > 0:
        raise ValueError(f"exponent must be > 0, got {exponent}")
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return weights / weights.sum()


def draw_questions(pool: list[Question], count: int, exponent: float = 1.1, seed: int = DEFAULT_SEED) -> list[Question]:
    """Draw ``count`` questions with replacement, with Zipf popularity over a seeded ranking of ``pool``.

    Args:
        pool: The questions to draw from.
        count: How many to draw.
        exponent: Zipf exponent (> 0); larger means fewer distinct questions and more repeats.
        seed: Seed of the ranking and of the draws.

    Returns:
        The drawn questions in draw order.
    """
    if not pool:
        raise ValueError("pool is empty")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    weights = zipf_weights(len(pool), exponent)
    rng = np.random.default_rng(seed)
    ranking = rng.permutation(len(pool))
    ranks = rng.choice(len(pool), size=count, p=weights)
    return [pool[i] for i in ranking[ranks]]


def write_questions_jsonl(path: str | os.PathLike[str], questions: Iterable[Question]) -> None:
    """Write questions as UTF-8 JSON lines."""
    with Path(path).open("w", encoding="utf-8") as out:
        for question in questions:
            out.write(json.dumps(asdict(question), ensure_ascii=False) + "\n")


def read_questions_jsonl(path: str | os.PathLike[str]) -> list[Question]:
    """Read questions written by :func:`write_questions_jsonl`."""
    with Path(path).open(encoding="utf-8") as lines:
        return [Question(**json.loads(line)) for line in lines if line.strip()]
