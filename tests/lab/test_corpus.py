"""The synthetic procurement-law corpus: splitter, chunks, questions, Zipf draws and real retrieval."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ragperf_lab import embedding
from ragperf_lab.corpus import (
    CHUNK_SIZE,
    DOC_TYPES,
    PROFILES,
    Chunk,
    Question,
    chunk_count_target,
    draw_questions,
    iter_chunks,
    question_pool,
    read_questions_jsonl,
    split_text,
    write_questions_jsonl,
    zipf_weights,
)

METADATA_TYPES = {
    "source": str,
    "doc_type": str,
    "doc_number": str,
    "title": str,
    "chapter": str,
    "article": int,
    "article_title": str,
    "year": int,
    "chunk_index": int,
}
VIETNAMESE_LETTERS = set("ăâđêôơưàảãáạằẳẵắặầẩẫấậèẻẽéẹềểễếệìỉĩíịòỏõóọồổỗốộờởỡớợùủũúụừửữứựỳỷỹýỵ")


@pytest.fixture(scope="module")
def smoke_chunks() -> list[Chunk]:
    return list(iter_chunks("smoke"))


@pytest.fixture(scope="module")
def smoke_pool() -> list[Question]:
    return question_pool("smoke")


@pytest.fixture(scope="module")
def smoke_vectors(smoke_chunks: list[Chunk]) -> np.ndarray:
    return embedding.embed_texts([c.text for c in smoke_chunks])


# --- splitter ---------------------------------------------------------------------------------------
# Expected outputs are those of LangChain's RecursiveCharacterTextSplitter with the same settings.


@pytest.mark.parametrize(
    ("text", "size", "overlap", "expected"),
    [
        ("aaaa bbbb cccc dddd eeee", 10, 5, ["aaaa bbbb", "bbbb cccc", "cccc dddd", "dddd eeee"]),
        (
            "\n".join(f"khoản {i}" for i in range(1, 8)),
            24,
            10,
            ["khoản 1\nkhoản 2\nkhoản 3", "khoản 3\nkhoản 4\nkhoản 5", "khoản 5\nkhoản 6\nkhoản 7"],
        ),
        (
            "Chương I\n\nĐiều 1. Phạm vi\nLuật này quy định.\n\nĐiều 2. Đối tượng\nÁp dụng cho nhà thầu.",
            40,
            10,
            ["Chương I", "Điều 1. Phạm vi\nLuật này quy định.", "Điều 2. Đối tượng", "Áp dụng cho nhà thầu."],
        ),
        (
            "Điều 5. Tư cách hợp lệ\n1. Có đăng ký thành lập.\n2. Hạch toán tài chính độc lập.\n"
            "3. Không đang bị cấm tham dự thầu.",
            50,
            30,
            [
                "Điều 5. Tư cách hợp lệ\n1. Có đăng ký thành lập.",
                "2. Hạch toán tài chính độc lập.",
                "3. Không đang bị cấm tham dự thầu.",
            ],
        ),
        ("abcdefghijklmnopqrstuvwxyz", 10, 3, ["abcdefghij", "hijklmnopq", "opqrstuvwx", "vwxyz"]),
    ],
)
def test_split_text_matches_recursive_character_splitter(text: str, size: int, overlap: int, expected: list) -> None:
    assert split_text(text, size, overlap) == expected


def test_split_text_respects_size_and_overlaps_consecutive_chunks() -> None:
    text = " ".join(f"từ{i}" for i in range(600))
    chunks = split_text(text, 100, 30)
    assert len(chunks) > 5
    assert max(map(len, chunks)) <= 100
    for left, right in itertools.pairwise(chunks):
        tail = left[left.rindex(" " + right.split(" ")[0]) + 1 :]
        assert right.startswith(tail) and 0 < len(tail) <= 30  # the next chunk repeats the previous one's end
    assert split_text("", 100, 30) == []
    with pytest.raises(ValueError, match="chunk_overlap"):
        split_text(text, 10, 20)


# --- chunks -----------------------------------------------------------------------------------------


def test_profiles_and_unknown_profile_errors() -> None:
    assert chunk_count_target("smoke") == PROFILES["smoke"] == 5_000
    assert chunk_count_target("demo") >= 100_000
    for call in (
        lambda: chunk_count_target("huge"),
        lambda: next(iter_chunks("huge")),
        lambda: question_pool("huge"),
    ):
        with pytest.raises(ValueError, match="'huge'") as info:
            call()
        assert "smoke" in str(info.value) and "demo" in str(info.value)


def test_smoke_corpus_size_ids_and_metadata(smoke_chunks: list[Chunk]) -> None:
    assert len(smoke_chunks) == chunk_count_target("smoke")  # exactly the budget (within 5% of 5,000)
    assert len({c.id for c in smoke_chunks}) == len(smoke_chunks)
    for chunk in smoke_chunks:
        assert set(chunk.metadata) == set(METADATA_TYPES)
        for key, kind in METADATA_TYPES.items():
            assert type(chunk.metadata[key]) is kind, key
        assert chunk.metadata["doc_type"] in DOC_TYPES
        assert chunk.metadata["source"].endswith(".pdf") and chunk.metadata["source"].isascii()
        assert chunk.metadata["chapter"].startswith("Chương ")
        assert 0 < len(chunk.text) <= CHUNK_SIZE
    json.dumps([c.metadata for c in smoke_chunks])  # JSON-safe
    assert {c.metadata["doc_type"] for c in smoke_chunks} == set(DOC_TYPES)
    numbers = {c.metadata["doc_number"] for c in smoke_chunks}
    assert {"22/2023/QH15", "24/2024/NĐ-CP", "214/2025/NĐ-CP", "22/2024/TT-BKHĐT", "50/2014/QH13"} <= numbers
    sources = {(c.metadata["doc_number"], c.metadata["source"]) for c in smoke_chunks}
    assert len(sources) == len(numbers) == len({s for _, s in sources})  # one file per document
    assert ("22/2023/QH15", "luat-dau-thau-22-2023-qh15.pdf") in sources


def test_articles_are_split_on_their_own_and_start_with_their_heading(smoke_chunks: list[Chunk]) -> None:
    by_article: dict[tuple[str, int], list[Chunk]] = {}
    for chunk in smoke_chunks:
        by_article.setdefault((chunk.metadata["doc_number"], chunk.metadata["article"]), []).append(chunk)
    assert len(by_article) > 1_000
    multi = 0
    for (_, article), chunks in by_article.items():
        assert [c.metadata["chunk_index"] for c in chunks] == list(range(len(chunks)))
        first = chunks[0]
        assert first.text.startswith(f"Điều {article}. {first.metadata['article_title']}\n")
        assert all(not c.text.startswith("Điều ") for c in chunks[1:])
        multi += len(chunks) > 1
    assert multi > len(by_article) // 2  # most articles are longer than one chunk


def test_text_is_nfc_vietnamese_with_varied_specifics(smoke_chunks: list[Chunk]) -> None:
    assert all(unicodedata.is_normalized("NFC", c.text) for c in smoke_chunks)
    with_diacritics = sum(bool(VIETNAMESE_LETTERS & set(c.text.lower())) for c in smoke_chunks)
    assert with_diacritics == len(smoke_chunks)
    text = "\n".join(c.text for c in smoke_chunks[:400])
    for phrase in ("nhà thầu", "hồ sơ mời thầu", "bảo đảm dự thầu", "Hệ thống mạng đấu thầu quốc gia", "đồng"):
        assert phrase in text
    deposits = {c.text for c in smoke_chunks if "Giá trị bảo đảm dự thầu bằng" in c.text}
    rates = {t.split("Giá trị bảo đảm dự thầu bằng ")[1].split("%")[0] for t in deposits}
    assert len(rates) >= 5  # articles state different figures
    titles = Counter(c.metadata["article_title"] for c in smoke_chunks if c.metadata["chunk_index"] == 0)
    assert len(titles) >= 80


def test_chunks_are_deterministic_per_seed() -> None:
    first = list(itertools.islice(iter_chunks("smoke", seed=7), 300))
    again = list(itertools.islice(iter_chunks("smoke", seed=7), 300))
    other = list(itertools.islice(iter_chunks("smoke", seed=8), 300))
    assert first == again
    assert [c.text for c in first] != [c.text for c in other]
    assert first[0].metadata["doc_number"] == other[0].metadata["doc_number"] == "22/2023/QH15"


# --- questions --------------------------------------------------------------------------------------


def test_question_pool_is_tied_to_articles_of_the_corpus(smoke_pool: list[Question], smoke_chunks: list[Chunk]) -> None:
    assert len(smoke_pool) >= 2_000
    assert [q.id for q in smoke_pool] == list(range(len(smoke_pool)))
    assert len({q.text for q in smoke_pool}) == len(smoke_pool)
    doc_types = {(c.metadata["doc_number"], c.metadata["article"]): c.metadata["doc_type"] for c in smoke_chunks}
    for question in smoke_pool:
        assert doc_types[(question.doc_number, question.article)] == question.doc_type
        assert question.mode in ("fast", "quality")
        assert question.text.endswith("?") and unicodedata.is_normalized("NFC", question.text)
    quality = sum(q.mode == "quality" for q in smoke_pool) / len(smoke_pool)
    assert 0.15 <= quality <= 0.25
    texts = [q.text for q in smoke_pool]
    assert sum(q.doc_number in q.text for q in smoke_pool) > 300  # citing the document number
    assert sum("/" not in t for t in texts) > 300  # and not
    assert min(map(len, texts)) < 70 and max(map(len, texts)) > 180
    assert len({(q.doc_number, q.article) for q in smoke_pool}) > 1_200
    assert len({q.doc_type for q in smoke_pool}) == len(DOC_TYPES)


def test_question_pool_is_deterministic_per_seed(smoke_pool: list[Question]) -> None:
    assert question_pool("smoke", n=50, seed=20231) == question_pool("smoke", n=50, seed=20231)
    assert [q.text for q in question_pool("smoke", n=50, seed=3)] != [q.text for q in smoke_pool[:50]]
    with pytest.raises(ValueError, match="n must be"):
        question_pool("smoke", n=0)


def test_questions_round_trip_through_jsonl(smoke_pool: list[Question], tmp_path: Path) -> None:
    path = tmp_path / "questions.jsonl"
    write_questions_jsonl(path, smoke_pool[:100])
    assert read_questions_jsonl(path) == smoke_pool[:100]
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert json.loads(first)["text"] == smoke_pool[0].text and "\\u" not in first


# --- popularity -------------------------------------------------------------------------------------


def test_zipf_weights() -> None:
    weights = zipf_weights(1_000, 1.1)
    assert weights.shape == (1_000,)
    assert math.isclose(float(weights.sum()), 1.0, rel_tol=1e-12)
    assert np.all(np.diff(weights) < 0)
    assert math.isclose(float(weights[0] / weights[9]), 10**1.1, rel_tol=1e-9)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="exponent must be > 0"):
            zipf_weights(10, bad)
    with pytest.raises(ValueError, match="n must be"):
        zipf_weights(0, 1.1)


def test_draw_questions_has_repeats_and_a_long_tail(smoke_pool: list[Question]) -> None:
    drawn = draw_questions(smoke_pool, 5_000, exponent=1.1, seed=1)
    assert len(drawn) == 5_000 and all(q in smoke_pool for q in drawn[:100])
    counts = Counter(q.id for q in drawn)
    top_share = counts.most_common(1)[0][1] / len(drawn)
    assert 0.08 < top_share < 0.3  # the head repeats a lot
    assert sum(1 for n in counts.values() if n == 1) > 300  # and the tail is long
    assert len(counts) > 500
    assert draw_questions(smoke_pool, 500, seed=1) == draw_questions(smoke_pool, 500, seed=1)
    assert draw_questions(smoke_pool, 500, seed=1) != draw_questions(smoke_pool, 500, seed=2)
    steeper = Counter(q.id for q in draw_questions(smoke_pool, 5_000, exponent=2.0, seed=1))
    assert len(steeper) < len(counts)
    with pytest.raises(ValueError, match="exponent"):
        draw_questions(smoke_pool, 10, exponent=0)
    with pytest.raises(ValueError, match="empty"):
        draw_questions([], 10)


# --- embedding and retrieval ------------------------------------------------------------------------


def _reference_embedding(text: str, dim: int) -> np.ndarray:
    """The embedding as defined: signed hashed syllables and bigrams, 1 + ln(tf), bigrams x1.5, unit norm."""
    syllables = embedding.tokens(text)
    stop = embedding.STOP_SYLLABLES
    counts = Counter(s for s in syllables if s not in stop)
    counts.update(f"{a} {b}" for a, b in itertools.pairwise(syllables) if a not in stop or b not in stop)
    vector = np.zeros(dim)
    for feature, count in counts.items():
        value = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
        sign = 1.0 if value >> 63 else -1.0
        vector[value % dim] += sign * (1 + math.log(count)) * (1.5 if " " in feature else 1.0)
    norm = np.linalg.norm(vector)
    if norm == 0:
        vector[0], norm = 1.0, 1.0
    return (vector / norm).astype(np.float32)


def test_embedding_matches_its_definition_and_batches_like_singles(smoke_chunks: list[Chunk]) -> None:
    texts = [c.text for c in smoke_chunks[:150]] + ["", "của và", "Hồ sơ mời thầu gói thầu xây lắp"]
    for dim in (768, 64):
        batch = embedding.embed_texts(texts, dim)
        assert batch.dtype == np.float32 and batch.shape == (len(texts), dim)
        reference = np.stack([_reference_embedding(t, dim) for t in texts])
        np.testing.assert_allclose(batch, reference, atol=1e-6)
        singles = np.stack([embedding.embed_text(t, dim) for t in texts])
        np.testing.assert_array_equal(batch, singles)
    assert embedding.embed_texts(iter(texts[:3])).shape == (3, embedding.DEFAULT_DIM)


def _hits(questions: list[Question], chunks: list[Chunk], vectors: np.ndarray, k: int, by_type: bool) -> float:
    articles = [(c.metadata["doc_number"], c.metadata["article"]) for c in chunks]
    doc_types = np.array([c.metadata["doc_type"] for c in chunks])
    scores = embedding.embed_texts([q.text for q in questions]) @ vectors.T
    hits = 0
    for question, row in zip(questions, scores, strict=True):
        if by_type:
            row = np.where(doc_types == question.doc_type, row, -np.inf)
        top = np.argpartition(-row, k)[:k]
        hits += (question.doc_number, question.article) in {articles[i] for i in top}
    return hits / len(questions)


def test_retrieval_finds_the_answering_article(
    smoke_pool: list[Question], smoke_chunks: list[Chunk], smoke_vectors: np.ndarray
) -> None:
    rng = random.Random(11)
    sample = rng.sample(smoke_pool, 300)
    assert _hits(sample, smoke_chunks, smoke_vectors, k=4, by_type=False) >= 0.8
    quality = rng.sample([q for q in smoke_pool if q.mode == "quality"], 200)
    assert _hits(quality, smoke_chunks, smoke_vectors, k=8, by_type=True) >= 0.8
    # The figure means something: a question does not find its article by chance.
    shuffled = [Question(q.id, q.text, *_other(q, sample)) for q in sample[:100]]
    assert _hits(shuffled, smoke_chunks, smoke_vectors, k=4, by_type=False) < 0.1


def _other(question: Question, pool: list[Question]) -> tuple[str, int, str, str]:
    other = next(q for q in pool if (q.doc_number, q.article) != (question.doc_number, question.article))
    return other.doc_number, other.article, question.mode, question.doc_type
