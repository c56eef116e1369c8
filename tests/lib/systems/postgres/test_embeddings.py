"""Introspection of LangChain's embedding table on a real PostgreSQL with pgvector, and its pure helpers.

The tables are tiny (a few hundred 8-dimensional vectors): introspection reads the catalog and samples
the vectors, it does not need the planner to choose anything.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from ragperf.lab import labdb
from ragperf.systems.postgres import embeddings

ROWS = 300
DIMS = 8
DOC_TYPES = ("luat", "nghi_dinh", "thong_tu")


def _fill(conn: psycopg.Connection, table: str, dims: list[int]) -> None:
    """Rows of ``table`` (LangChain's columns), one per entry of ``dims``, doc_type cycling through DOC_TYPES."""
    rng = np.random.default_rng(3)
    collection_id = conn.execute("SELECT uuid FROM langchain_pg_collection").fetchone()[0]
    copy_sql = sql.SQL("COPY {} (id, collection_id, embedding, document, cmetadata) FROM STDIN").format(
        sql.Identifier(table)
    )
    with conn.cursor().copy(copy_sql) as copy:
        for i, n in enumerate(dims):
            text = "[" + ",".join(f"{x:.6g}" for x in rng.normal(size=n)) + "]"
            meta = Jsonb({"doc_type": DOC_TYPES[i % len(DOC_TYPES)]})
            copy.write_row((f"{table}-{i}", collection_id, text, f"document {i}", meta))


def _create(conn: psycopg.Connection, table: str, embedding_type: str) -> None:
    """A table shaped like LangChain's, its embedding of ``embedding_type``, autovacuum off (no surprise ANALYZE)."""
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (id varchar PRIMARY KEY, collection_id uuid REFERENCES langchain_pg_collection (uuid), "
            "embedding {}, document varchar, cmetadata jsonb) WITH (autovacuum_enabled = false)"
        ).format(sql.Identifier(table), sql.SQL(embedding_type))
    )


@pytest.fixture(scope="module")
def dsn(embedded_cluster) -> Iterator[str]:
    """The app's database: LangChain's two tables with ROWS vectors, plus tables of other shapes."""
    port, password = embedded_cluster.port, embedded_cluster.password
    labdb.bootstrap(port, labdb.Credentials(password, secrets.token_urlsafe(16)))
    dsn = labdb.dsn(port, labdb.SUPERUSER, password)
    with psycopg.connect(dsn) as conn:
        conn.execute(labdb.LANGCHAIN_DDL)
        conn.execute("ALTER TABLE langchain_pg_embedding SET (autovacuum_enabled = false)")
        conn.execute("INSERT INTO langchain_pg_collection (uuid, name) VALUES (%s, %s)", (uuid.uuid4(), "docs"))
        _fill(conn, embeddings.TABLE, [DIMS] * ROWS)
        _create(conn, "fixed_embedding", f"vector({DIMS})")
        _fill(conn, "fixed_embedding", [DIMS] * 20)
        _create(conn, "mixed_embedding", "vector")
        _fill(conn, "mixed_embedding", [DIMS] * 10 + [DIMS * 2] * 10)
        _create(conn, "empty_embedding", "halfvec")
        conn.execute("CREATE TABLE plain_embedding (id int, collection_id uuid, embedding real[], cmetadata jsonb)")
        conn.execute("CREATE TABLE nometa_embedding (id int, collection_id uuid, embedding vector)")
    yield dsn


def _connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True)


def test_langchains_table_is_read_as_it_is(dsn: str):
    with _connect(dsn) as conn:
        schema = embeddings.introspect(conn)
    assert schema.table == embeddings.TABLE and schema.table_schema == "public"
    assert list(schema.columns) == ["id", "collection_id", "embedding", "document", "cmetadata"]
    assert schema.columns["collection_id"] == "uuid"
    assert (schema.metadata_column, schema.metadata_type) == ("cmetadata", "jsonb")
    assert (schema.embedding_type, schema.vector_type) == ("vector", "vector")
    assert schema.declared_dims is None and schema.dimensionless
    assert schema.stored_dims == DIMS
    assert schema.rows_estimate == ROWS  # never analyzed: counted
    assert 0 < schema.table_bytes < schema.total_bytes  # the indexes count in the total only
    assert {i.name: i.method for i in schema.indexes} == {
        "ix_cmetadata_gin": "gin",
        "ix_langchain_pg_embedding_id": "btree",
        "langchain_pg_embedding_pkey": "btree",
    }
    gin = schema.index("ix_cmetadata_gin")
    assert gin.valid and gin.columns == ("cmetadata",) and gin.opclasses == ("jsonb_path_ops",)
    assert schema.index("no_such_index") is None
    assert schema.pgvector_version and schema.server_version_num >= 180000
    assert schema.filter_values == {"doc_type": {t: ROWS // len(DOC_TYPES) for t in DOC_TYPES}}
    assert schema.opclass == "vector_cosine_ops"
    assert list(schema.index_table()["index"]) == [i.name for i in schema.indexes]


def test_a_declared_dimension_and_another_operator_are_read(dsn: str):
    with _connect(dsn) as conn:
        schema = embeddings.introspect(conn, "public.fixed_embedding", distance_operator="<->")
    assert schema.embedding_type == f"vector({DIMS})"
    assert schema.declared_dims == DIMS and not schema.dimensionless
    assert schema.stored_dims == DIMS
    assert schema.opclass == "vector_l2_ops"


def test_an_empty_halfvec_table_has_no_stored_dimension(dsn: str):
    with _connect(dsn) as conn:
        schema = embeddings.introspect(conn, "empty_embedding", distance_operator="<#>")
    assert schema.vector_type == "halfvec" and schema.stored_dims is None and schema.rows_estimate == 0
    assert schema.opclass == "halfvec_ip_ops"


def test_mixed_dimensions_are_refused(dsn: str):
    with (
        _connect(dsn) as conn,
        pytest.raises(embeddings.SchemaError, match=rf"mixed dimensions \[{DIMS}, {DIMS * 2}\]"),
    ):
        embeddings.introspect(conn, "mixed_embedding")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("no_such_table", "table no_such_table not found .*empty_embedding, fixed_embedding"),
        ("plain_embedding", r"embedding is real\[\]; expected vector or halfvec"),
        ("nometa_embedding", "has no metadata column .*found columns: id, collection_id, embedding"),
    ],
)
def test_tables_of_another_shape_are_refused_with_what_was_found(dsn: str, table: str, message: str):
    with _connect(dsn) as conn, pytest.raises(embeddings.SchemaError, match=message):
        embeddings.introspect(conn, table)


def test_an_unknown_distance_operator_is_refused(dsn: str):
    with _connect(dsn) as conn, pytest.raises(ValueError, match="unknown distance operator '<~>'"):
        embeddings.introspect(conn, distance_operator="<~>")


def test_statistics_appear_after_analyze(dsn: str):
    with _connect(dsn) as conn:
        _create(conn, "fresh_embedding", "vector")
        _fill(conn, "fresh_embedding", [DIMS] * 30)
        assert embeddings.has_statistics(conn, "fresh_embedding") is False
        assert embeddings.introspect(conn, "fresh_embedding").analyzed is False
        conn.execute("ANALYZE fresh_embedding")
        oid = conn.execute("SELECT 'fresh_embedding'::regclass::oid").fetchone()[0]
        assert embeddings.has_statistics(conn, "fresh_embedding") is True
        assert embeddings.has_statistics(conn, int(oid)) is True
        schema = embeddings.introspect(conn, "fresh_embedding")
    assert schema.analyzed is True and schema.rows_estimate == 30  # from reltuples now


@pytest.mark.parametrize(
    ("query", "operator"),
    [
        ("SELECT id FROM t ORDER BY embedding <=> %(e)s LIMIT 4", "<=>"),
        ("SELECT embedding <-> $1 AS d FROM t ORDER BY d", "<->"),
        ("ORDER BY embedding <#> $1, embedding <#> $2", "<#>"),
        ("ORDER BY embedding <+> $1", "<+>"),
    ],
)
def test_the_distance_operator_of_a_query(query: str, operator: str):
    assert embeddings.distance_operator_of(query) == operator


@pytest.mark.parametrize(
    ("query", "found"),
    [("SELECT 1 ORDER BY id", "found none"), ("ORDER BY e <=> $1, e <-> $1", "found <->, <=>")],
)
def test_a_query_with_no_or_two_distance_operators_is_refused(query: str, found: str):
    with pytest.raises(ValueError, match=f"expected exactly one distance operator .*{found}"):
        embeddings.distance_operator_of(query)


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 kB"),
        (1536, "1.5 kB"),
        (5 * 1024**2, "5.0 MB"),
        (3.5 * 1024**3, "3.5 GB"),
        (2 * 1024**4, "2.0 TB"),
        (-2048, "-2.0 kB"),
    ],
)
def test_pretty_bytes(size: float, shown: str):
    assert embeddings.pretty_bytes(size) == shown
