"""The app's search on a real PostgreSQL with pgvector: its collection, its statement, EXPLAIN, index usage.

The table is LangChain's, as the lab creates it, with a few hundred 8-dimensional vectors and a B-tree on
collection_id; on a table this small the planner is steered with enable_* settings, never left to choose.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from ragperf.lab import labdb
from ragperf.systems.postgres import appsearch, embeddings

ROWS = 300
DIMS = 8
DOC_TYPES = ("luat", "nghi_dinh", "thong_tu")
BTREE = "ix_test_collection_id"


@dataclasses.dataclass
class Database:
    port: int
    password: str
    vectors: np.ndarray

    def connect(self, dbname: str = labdb.DATABASE) -> psycopg.Connection:
        return psycopg.connect(labdb.dsn(self.port, labdb.SUPERUSER, self.password, dbname=dbname), autocommit=True)


def _copy(conn: psycopg.Connection, collection_id: uuid.UUID, vectors: np.ndarray, prefix: str) -> None:
    copy_sql = "COPY langchain_pg_embedding (id, collection_id, embedding, document, cmetadata) FROM STDIN"
    with conn.cursor().copy(copy_sql) as copy:
        for i, vector in enumerate(vectors):
            text = "[" + ",".join(f"{x:.6g}" for x in vector) + "]"
            meta = Jsonb({"doc_type": DOC_TYPES[i % len(DOC_TYPES)]})
            copy.write_row((f"{prefix}-{i}", collection_id, text, f"document {i}", meta))


@pytest.fixture(scope="module")
def database(embedded_cluster) -> Iterator[Database]:
    port, password = embedded_cluster.port, embedded_cluster.password
    labdb.bootstrap(port, labdb.Credentials(password, secrets.token_urlsafe(16)))
    vectors = np.random.default_rng(5).normal(size=(ROWS, DIMS))
    db = Database(port, password, vectors)
    with db.connect() as conn:
        conn.execute(labdb.LANGCHAIN_DDL)
        collection_id = uuid.uuid4()
        conn.execute("INSERT INTO langchain_pg_collection (uuid, name) VALUES (%s, %s)", (collection_id, "docs"))
        _copy(conn, collection_id, vectors, "docs")
        conn.execute(f"CREATE INDEX {BTREE} ON langchain_pg_embedding (collection_id)")
        conn.execute("VACUUM (ANALYZE) langchain_pg_embedding")
        conn.execute("CREATE DATABASE empty_db")
    yield db


@pytest.fixture
def second_collection(database: Database) -> Iterator[str]:
    """A smaller second collection, removed (with its rows) after the test."""
    with database.connect() as conn:
        conn.execute("INSERT INTO langchain_pg_collection (uuid, name) VALUES (%s, 'notes')", (uuid.uuid4(),))
        notes = conn.execute("SELECT uuid FROM langchain_pg_collection WHERE name = 'notes'").fetchone()[0]
        _copy(conn, notes, database.vectors[:10], "notes")
    yield "notes"
    with database.connect() as conn:
        conn.execute("DELETE FROM langchain_pg_collection WHERE name = 'notes'")


def test_one_collection_is_found_without_a_name(database: Database):
    with database.connect() as conn:
        found = appsearch.collections(conn)
        assert [(c.name, c.rows) for c in found] == [("docs", ROWS)]
        only = appsearch.find_collection(conn, None)
        assert only == found[0]
        assert appsearch.find_collection(conn, "docs") == only
        assert appsearch.collection_uuid(conn, "docs") == only.uuid


def test_a_missing_collection_lists_the_collections_there(database: Database):
    with database.connect() as conn:
        with pytest.raises(
            appsearch.CollectionError, match=r"'nope' \(target.collection\) not found.*'docs' \(300 rows"
        ):
            appsearch.find_collection(conn, "nope")
        with pytest.raises(appsearch.CollectionError, match="collection 'nope' not found; collections: docs"):
            appsearch.collection_uuid(conn, "nope")


def test_two_collections_need_a_name_and_the_error_lists_both(database: Database, second_collection: str):
    with database.connect() as conn:
        found = appsearch.collections(conn)
        assert [(c.name, c.rows) for c in found] == [("docs", ROWS), (second_collection, 10)]  # largest first
        with pytest.raises(appsearch.CollectionError, match=r"holds 2 collections.*'docs' \(300 rows\), 'notes' \(10"):
            appsearch.find_collection(conn, None)
        assert appsearch.find_collection(conn, second_collection).rows == 10
        with pytest.raises(appsearch.CollectionError, match=r"the collections there: 'docs' .*'notes'"):
            appsearch.find_collection(conn, "nope")


def test_without_langchains_tables_or_collections_the_error_says_so(database: Database):
    with database.connect("empty_db") as conn:
        with pytest.raises(embeddings.SchemaError, match="no table langchain_pg_collection"):
            appsearch.collections(conn)
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(labdb.LANGCHAIN_DDL)
        assert appsearch.collections(conn) == []
        with pytest.raises(appsearch.CollectionError, match="holds no collection"):
            appsearch.find_collection(conn, None)


def test_legacy_search_adds_the_filter_clause_only_for_a_doc_type():
    plain, params = appsearch.legacy_search("c-id", [0.5, 1, -2.25], 4, None)
    assert params == {"embedding_1": "[0.5,1.0,-2.25]", "collection_id_1": "c-id", "param_1": 4}
    assert "jsonb_path_match" not in plain and "{filter}" not in plain
    assert plain == appsearch.LEGACY_SQL_SEARCH.replace("{filter}", "")
    filtered, params = appsearch.legacy_search("c-id", [0.5], 4, "luat")
    assert filtered == appsearch.LEGACY_SQL_SEARCH.replace("{filter}", appsearch.LEGACY_SQL_EQ_FILTER)
    assert params["param_2"] == "$.doc_type == $value"
    assert json.loads(params["param_3"]) == {"value": "luat"}


def test_the_legacy_statement_runs_and_filters(database: Database):
    query = database.vectors[7]
    with database.connect() as conn:
        collection_id = appsearch.collection_uuid(conn, "docs")
        rows = conn.execute(*appsearch.legacy_search(collection_id, query, 5, None)).fetchall()
        assert len(rows) == 5 and rows[0][0] == "docs-7"  # the query is row 7 itself: distance 0
        distances = [r[5] for r in rows]
        assert distances == sorted(distances)
        rows = conn.execute(*appsearch.legacy_search(collection_id, query, 5, "thong_tu")).fetchall()
    assert len(rows) == 5
    assert {r[4]["doc_type"] for r in rows} == {"thong_tu"}


def test_explain_gives_rows_and_the_index_method(database: Database):
    with database.connect() as conn:
        conn.execute("SET enable_seqscan = off")
        explained = appsearch.explain_legacy_query(conn, database.vectors[0], collection_name="docs", k=3)
    assert explained["uses_index"] == BTREE and explained["index_method"] == "btree"
    assert BTREE in explained["indexes_used"]
    assert explained["rows"] == 3
    assert explained["execution_ms"] >= 0 and explained["total_cost"] > 0
    assert f"using {BTREE}" in explained["plan_text"] and "on langchain_pg_embedding" in explained["plan_text"]


def test_explain_without_index_scans_uses_none_and_honours_the_filter(database: Database):
    with database.connect() as conn:
        conn.execute("SET enable_indexscan = off")
        conn.execute("SET enable_bitmapscan = off")
        explained = appsearch.explain_legacy_query(
            conn, database.vectors[0], collection_name="docs", k=4, doc_type="luat"
        )
    assert explained["uses_index"] is None and explained["index_method"] is None
    assert explained["rows"] == 4
    assert "Filter: " in explained["plan_text"] and "jsonb_path_match" in explained["plan_text"]


def _scans(database: Database) -> dict[str, int]:
    with database.connect() as conn:
        frame = appsearch.index_usage(conn)
    return dict(zip(frame["index"], frame["idx_scan"], strict=True))


def test_index_usage_lists_every_index_and_counts_scans(database: Database):
    with database.connect() as conn:
        frame = appsearch.index_usage(conn)
    assert list(frame.columns) == ["index", "idx_scan", "idx_tup_read", "idx_tup_fetch", "size_bytes", "size", "valid"]
    assert set(frame["index"]) == {
        "ix_cmetadata_gin",
        "ix_langchain_pg_embedding_id",
        "langchain_pg_embedding_pkey",
        BTREE,
    }
    assert frame["valid"].all() and (frame["size_bytes"] > 0).all()
    assert list(frame["size"]) == [embeddings.pretty_bytes(b) for b in frame["size_bytes"]]
    before = _scans(database)[BTREE]
    with database.connect() as conn:  # its own backend: counters are flushed when it ends
        conn.execute("SET enable_seqscan = off")
        conn.execute("SELECT count(*) FROM langchain_pg_embedding WHERE collection_id = gen_random_uuid()")
    deadline = time.monotonic() + 10
    while _scans(database)[BTREE] == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _scans(database)[BTREE] > before
