"""The frozen legacy RAG service: a stand-in for the users' FastAPI app, defects included.

NO PHASE MAY CHANGE THIS FILE. tests/lab/test_legacy_frozen.py checks it against
lab/legacy/MANIFEST.sha256, and every run records that checksum.

It talks to PostgreSQL the way LangChain's PGVector (langchain-postgres) does: the collection is
looked up by name, then ``ORDER BY embedding <=> :query LIMIT k`` with ``WHERE collection_id = ...``;
``quality`` mode adds a metadata filter compiled as LangChain compiles ``$eq`` (jsonb_path_match).

The users' defects, reproduced on purpose and never "fixed" here:
- sync endpoints, served by Starlette's thread pool;
- a new database connection for every request (no pool), and no statement timeout;
- the only cache is an in-process dict of question embeddings;
- provider errors (a 429 under load) are not retried: the request fails.

Configuration comes from the environment, as in the users' deployment:
DATABASE_URL, OPENAI_BASE_URL, OPENAI_API_KEY, COLLECTION_NAME, CHAT_MODEL, EMBEDDING_MODEL.
"""

from __future__ import annotations

import base64
import json
import os
import re
import unicodedata
from typing import Literal

import httpx
import numpy as np
import psycopg
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field, field_validator

DATABASE_URL = os.environ.get("DATABASE_URL", "")
OPENAI_BASE_URL = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8001/v1").rstrip("/")
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
COLLECTION_NAME = os.environ.get("COLLECTION_NAME", "vn_procurement_law")
CHAT_MODEL = os.environ.get("CHAT_MODEL", "gpt-4o-mini")
EMBEDDING_MODEL = os.environ.get("EMBEDDING_MODEL", "text-embedding-3-small")

TOP_K = {"fast": 4, "quality": 8}
DOC_TYPES = {"luật": "luat", "nghị định": "nghi_dinh", "thông tư": "thong_tu", "quyết định": "quyet_dinh"}

SQL_COLLECTION = (
    "SELECT langchain_pg_collection.uuid, langchain_pg_collection.name, langchain_pg_collection.cmetadata \n"
    "FROM langchain_pg_collection \n"
    "WHERE langchain_pg_collection.name = %(name_1)s \n"
    " LIMIT %(param_1)s"
)
SQL_SEARCH = (
    "SELECT langchain_pg_embedding.id, langchain_pg_embedding.collection_id, "
    "langchain_pg_embedding.embedding, langchain_pg_embedding.document, "
    "langchain_pg_embedding.cmetadata, "
    "langchain_pg_embedding.embedding <=> %(embedding_1)s AS distance \n"
    "FROM langchain_pg_embedding "
    "JOIN langchain_pg_collection ON langchain_pg_embedding.collection_id = langchain_pg_collection.uuid \n"
    "WHERE langchain_pg_embedding.collection_id = %(collection_id_1)s::UUID{filter} "
    "ORDER BY distance ASC \n"
    " LIMIT %(param_1)s"
)
SQL_EQ_FILTER = (
    " AND jsonb_path_match(langchain_pg_embedding.cmetadata, "
    "CAST(%(param_2)s AS JSONPATH), CAST(%(param_3)s::JSONB AS JSONB))"
)

app = FastAPI(title="rag_bidding_v2 (legacy)", version="2.0.0")
_embedding_cache: dict[str, list[float]] = {}
_http = httpx.Client(timeout=60.0)


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    mode: Literal["fast", "quality"] = "fast"

    @field_validator("question")
    @classmethod
    def not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("question must not be blank")
        return value


class Source(BaseModel):
    document: str
    doc_number: str
    article: int
    score: float


class AskResponse(BaseModel):
    answer: str
    sources: list[Source]
    mode: str


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {OPENAI_API_KEY}"} if OPENAI_API_KEY else {}


def embed_query(question: str) -> list[float]:
    if question in _embedding_cache:
        return _embedding_cache[question]
    response = _http.post(
        f"{OPENAI_BASE_URL}/embeddings",
        json={"model": EMBEDDING_MODEL, "input": [question], "encoding_format": "base64"},
        headers=_headers(),
    )
    response.raise_for_status()
    raw = base64.b64decode(response.json()["data"][0]["embedding"])
    vector = np.frombuffer(raw, dtype="<f4").tolist()
    _embedding_cache[question] = vector
    return vector


def metadata_filter(question: str) -> dict | None:
    text = unicodedata.normalize("NFC", question).lower()
    for words, doc_type in DOC_TYPES.items():
        if re.search(rf"\b{words}\b", text):
            return {"doc_type": {"$eq": doc_type}}
    return None


def similarity_search(question: str, k: int, filter: dict | None) -> list[tuple[dict, str, float]]:
    vector = embed_query(question)
    with psycopg.connect(DATABASE_URL) as conn:
        collection = conn.execute(SQL_COLLECTION, {"name_1": COLLECTION_NAME, "param_1": 1}).fetchone()
        if collection is None:
            raise HTTPException(status_code=500, detail=f"collection {COLLECTION_NAME!r} not found")
        params: dict[str, object] = {
            "embedding_1": "[" + ",".join(repr(x) for x in vector) + "]",
            "collection_id_1": collection[0],
            "param_1": k,
        }
        clause = ""
        if filter:
            ((field, condition),) = filter.items()
            params["param_2"] = f"$.{field} == $value"
            params["param_3"] = json.dumps({"value": condition["$eq"]})
            clause = SQL_EQ_FILTER
        rows = conn.execute(SQL_SEARCH.format(filter=clause), params).fetchall()
    return [(row[4], row[3], float(row[5])) for row in rows]


def complete(question: str, context: list[str]) -> str:
    messages = [
        {
            "role": "system",
            "content": "Bạn là trợ lý pháp lý về đấu thầu. Trả lời dựa trên ngữ cảnh sau:\n\n"
            + "\n\n---\n\n".join(context),
        },
        {"role": "user", "content": question},
    ]
    response = _http.post(
        f"{OPENAI_BASE_URL}/chat/completions",
        json={"model": CHAT_MODEL, "messages": messages, "temperature": 0},
        headers=_headers(),
    )
    if response.status_code != 200:
        raise HTTPException(status_code=502, detail=f"LLM provider answered {response.status_code}")
    return response.json()["choices"][0]["message"]["content"]


@app.post("/ask", response_model=AskResponse)
def ask(request: AskRequest) -> AskResponse:
    filter = metadata_filter(request.question) if request.mode == "quality" else None
    hits = similarity_search(request.question, TOP_K[request.mode], filter)
    context = [f"[{meta['title']}, Điều {meta['article']}] {document}" for meta, document, _ in hits]
    answer = complete(request.question, context)
    sources = [
        Source(document=meta["title"], doc_number=meta["doc_number"], article=meta["article"], score=1 - dist)
        for meta, _, dist in hits
    ]
    return AskResponse(answer=answer, sources=sources, mode=request.mode)


@app.get("/health")
def health() -> dict[str, str]:
    with psycopg.connect(DATABASE_URL) as conn:
        conn.execute("SELECT 1")
    return {"status": "ok"}
