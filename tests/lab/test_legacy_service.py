"""The frozen legacy service, over HTTP, against the real lab."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ragperf_lab import corpus


@pytest.fixture(scope="module")
def client(lab_up):
    with httpx.Client(base_url=lab_up["app_url"], timeout=60) as http:
        yield http


def test_health(client):
    assert client.get("/health").json() == {"status": "ok"}


def test_answer_has_sources_with_document_article_and_score(client):
    body = client.post("/ask", json={"question": "Tư cách hợp lệ của nhà thầu theo Luật Đấu thầu?"}).json()
    assert body["answer"].strip()
    assert len(body["sources"]) == 4
    for source in body["sources"]:
        assert source["document"] and source["doc_number"] and isinstance(source["article"], int)
        assert -1.0 <= source["score"] <= 1.0


@pytest.mark.parametrize(
    ("body", "content", "names"),
    [
        ({"question": ""}, None, "question"),
        ({"question": "   "}, None, "blank"),
        ({"question": "x" * 4001}, None, "4000"),
        ({"question": "Hợp đồng trọn gói là gì?", "mode": "turbo"}, None, "mode"),
        (None, b"question=hello", "JSON"),
        ({"mode": "fast"}, None, "question"),
    ],
)
def test_bad_input_gets_422_naming_the_problem(client, body, content, names):
    if content is not None:
        response = client.post("/ask", content=content, headers={"Content-Type": "application/json"})
    else:
        response = client.post("/ask", json=body)
    assert response.status_code == 422
    assert names.lower() in response.text.lower()


def test_retrieval_is_real_for_pool_questions(client, lab_up):
    pool = corpus.read_questions_jsonl(lab_up["corpus"]["questions_file"])
    sample = random.Random(7).sample(pool, 120)

    def answered(question: corpus.Question) -> bool:
        response = client.post("/ask", json={"question": question.text, "mode": question.mode})
        response.raise_for_status()
        return any(
            s["doc_number"] == question.doc_number and s["article"] == question.article
            for s in response.json()["sources"]
        )

    with ThreadPoolExecutor(8) as pool_exec:
        hits = list(pool_exec.map(answered, sample))
    assert sum(hits) / len(hits) >= 0.80, f"{sum(hits)}/{len(hits)} questions found their article"


def test_quality_mode_filters_like_langchain(client):
    body = client.post(
        "/ask", json={"question": "Nghị định quy định bảo đảm dự thầu thế nào?", "mode": "quality"}
    ).json()
    assert len(body["sources"]) == 8
    assert all("/NĐ-CP" in s["doc_number"] or "NĐ" in s["doc_number"] for s in body["sources"])
