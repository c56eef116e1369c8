"""Phase 1.2's indexes against a real PostgreSQL with pgvector, started fresh for this module.

The table is LangChain's, as the lab creates it (dimensionless ``vector``, cmetadata jsonb with
LangChain's GIN), holding 20,000 clustered, normalised 64-dimensional vectors: big enough that the
planner picks HNSW by itself. Tests build HNSW with pgvector's defaults (m=16, ef_construction=64):
a few seconds here, and a recall that does not hang on how the parallel build happened to link the
graph (with m=8, one CI run measured 0.855 at ef_search 80 where others passed 0.9).
"""

from __future__ import annotations

import ast
import dataclasses
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from ragperf.core import changes
from ragperf.lab import labdb
from ragperf.systems.postgres import appsearch, embeddings, indexbuild, indexes

ROWS = 20_000
DIMS = 64
DOC_TYPES = {"luat": 0.02, "nghi_dinh": 0.28, "thong_tu": 0.35, "quyet_dinh": 0.35}  # luat is rare on purpose
BUILD = {"m": 16, "ef_construction": 64}
COLLECTION = labdb.COLLECTION  # the collection _load fills
LEGACY_APP = Path(__file__).resolve().parents[4] / "lab" / "legacy" / "app.py"


@dataclasses.dataclass
class Server:
    dsn: str
    vectors: np.ndarray
    original_indexes: set[str]

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)


def _vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    centers = rng.normal(size=(50, DIMS))
    data = centers[rng.integers(0, len(centers), n)] + 0.5 * rng.normal(size=(n, DIMS))
    return data / np.linalg.norm(data, axis=1, keepdims=True)


def _load(conn: psycopg.Connection, vectors: np.ndarray, rng: np.random.Generator) -> None:
    conn.execute(labdb.LANGCHAIN_DDL)
    collection_id = uuid.uuid4()
    conn.execute("INSERT INTO langchain_pg_collection (uuid, name) VALUES (%s, %s)", (collection_id, labdb.COLLECTION))
    doc_types = rng.choice(list(DOC_TYPES), size=len(vectors), p=list(DOC_TYPES.values()))
    copy_sql = "COPY langchain_pg_embedding (id, collection_id, embedding, document, cmetadata) FROM STDIN"
    with conn.cursor().copy(copy_sql) as copy:
        for i, (vector, doc_type) in enumerate(zip(vectors, doc_types, strict=True)):
            text = "[" + ",".join(f"{x:.6g}" for x in vector) + "]"
            copy.write_row((f"chunk-{i}", collection_id, text, f"document {i}", Jsonb({"doc_type": str(doc_type)})))


def _index_names(conn: psycopg.Connection, table: str = embeddings.TABLE) -> set[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass(%s)",
        (table,),
    )
    return {r[0] for r in rows.fetchall()}


def _reset(server: Server) -> None:
    """Back to the lab's untuned state: LangChain's indexes only, a dimensionless column."""
    with server.connect() as conn:
        for name in _index_names(conn) - server.original_indexes:
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute("ALTER TABLE langchain_pg_embedding ALTER COLUMN embedding TYPE vector")


@pytest.fixture(scope="module")
def server(embedded_cluster) -> Iterator[Server]:
    port, password = embedded_cluster.port, embedded_cluster.password
    labdb.bootstrap(port, labdb.Credentials(password, secrets.token_urlsafe(16)))
    rng = np.random.default_rng(12)
    vectors = _vectors(rng, ROWS)
    dsn = labdb.dsn(port, labdb.SUPERUSER, password)
    with psycopg.connect(dsn) as conn:
        _load(conn, vectors, rng)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) langchain_pg_embedding")
        yield Server(dsn, vectors, _index_names(conn))


@pytest.fixture
def clean(server: Server) -> Server:
    _reset(server)
    return server


@pytest.fixture(scope="module")
def applied(server: Server) -> Iterator[tuple[indexes.IndexPlan, indexbuild.IndexApplier, indexbuild.ColumnApplier]]:
    """The full plan applied once for the tests that read the tuned state; undone afterwards."""
    _reset(server)
    with server.connect() as conn:
        planned = indexes.plan(embeddings.introspect(conn), **BUILD)
    index_applier = indexbuild.IndexApplier(server.connect, progress=True, poll_s=0.05)
    column_applier = indexbuild.ColumnApplier(server.connect)
    appliers = {"index": index_applier, "column": column_applier, "analyze": indexbuild.AnalyzeApplier(server.connect)}
    for applier, group in changes.groups(planned, appliers):
        applier.apply(group)
    yield planned, index_applier, column_applier
    for applier, group in reversed(changes.groups(planned, appliers)):
        applier.undo(list(reversed(group)))


def _queries(server: Server, n: int = 20) -> list[list[float]]:
    rng = np.random.default_rng(7)
    picked = server.vectors[rng.choice(len(server.vectors), n, replace=False)] + 0.05 * rng.normal(size=(n, DIMS))
    return (picked / np.linalg.norm(picked, axis=1, keepdims=True)).tolist()


# --- reading and planning ---------------------------------------------------------------------


def test_the_legacy_statements_are_the_apps_verbatim():
    tree = ast.parse(LEGACY_APP.read_text(encoding="utf-8"))
    app_sql = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id.startswith("SQL_")
    }  # fmt: skip
    assert app_sql == {
        "SQL_COLLECTION": appsearch.LEGACY_SQL_COLLECTION,
        "SQL_SEARCH": appsearch.LEGACY_SQL_SEARCH,
        "SQL_EQ_FILTER": appsearch.LEGACY_SQL_EQ_FILTER,
    }
    assert embeddings.distance_operator_of(app_sql["SQL_SEARCH"]) == "<=>"


def test_introspect_finds_the_langchain_shape(clean):
    with clean.connect() as conn:
        schema = embeddings.introspect(conn)
    assert (schema.metadata_column, schema.metadata_type) == ("cmetadata", "jsonb")
    assert schema.embedding_type == "vector" and schema.dimensionless and schema.stored_dims == DIMS
    assert schema.opclass == "vector_cosine_ops"
    assert schema.rows_estimate == pytest.approx(ROWS, rel=0.05) and schema.table_bytes > 1_000_000
    gin = schema.index("ix_cmetadata_gin")
    assert gin is not None and gin.valid and gin.method == "gin" and gin.opclasses == ("jsonb_path_ops",)
    assert gin.columns == ("cmetadata",)
    assert schema.pgvector_version >= "0.8" and schema.server_version_num >= 180000
    assert {i.name for i in schema.indexes} == clean.original_indexes


def test_introspect_names_what_it_found_when_the_shape_is_wrong(server):
    with server.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS not_langchain")
        conn.execute("CREATE TABLE not_langchain (id int, collection_id uuid, embedding vector, metadata text)")
        try:
            with pytest.raises(embeddings.SchemaError, match=r"not_langchain.metadata is text; expected json or jsonb"):
                embeddings.introspect(conn, "not_langchain")
            conn.execute("ALTER TABLE not_langchain DROP COLUMN metadata")
            with pytest.raises(
                embeddings.SchemaError, match=r"no metadata column .*found columns: id, collection_id, emb"
            ):
                embeddings.introspect(conn, "not_langchain")
            conn.execute("ALTER TABLE not_langchain ALTER COLUMN embedding TYPE real[] USING NULL")
            with pytest.raises(embeddings.SchemaError, match=r"embedding is real\[\]; expected vector or halfvec"):
                embeddings.introspect(conn, "not_langchain")
        finally:
            conn.execute("DROP TABLE not_langchain")
        with pytest.raises(embeddings.SchemaError, match=r"table no_such_table not found"):
            embeddings.introspect(conn, "no_such_table")
        with pytest.raises(ValueError, match=r"unknown distance operator '<~>': allowed are <=>, <->"):
            embeddings.introspect(conn, distance_operator="<~>")


def test_plan_fixes_the_column_first_then_builds_hnsw(clean):
    with clean.connect() as conn:
        schema = embeddings.introspect(conn)
    planned = indexes.plan(schema)
    assert [c.key for c in planned] == [
        "column:langchain_pg_embedding.embedding",
        "analyze:langchain_pg_embedding after the column rewrite",
        "index:ragperf_embedding_hnsw",
        "index:ragperf_hnsw_doc_type_luat",
        "analyze:langchain_pg_embedding after the builds",
        "index:ragperf_embedding_doc_type",  # B-trees leading with collection_id compete with HNSW: last, judged
        "index:ragperf_embedding_collection_id",
    ]
    column, analyze, hnsw, partial, _, doc_type, collection = planned
    assert analyze.details["sql"] == 'ANALYZE "public"."langchain_pg_embedding"'
    assert indexes.competitors(planned) == [doc_type, collection]
    assert (column.before, column.after) == ("vector", "vector(64)")
    assert column.details["sql"].endswith('ALTER COLUMN "embedding" TYPE vector(64)')
    assert column.details["undo_sql"].endswith('ALTER COLUMN "embedding" TYPE vector')
    assert (
        "ACCESS EXCLUSIVE" in column.details["warning"]
        and embeddings.pretty_bytes(schema.total_bytes) in (column.details["warning"])
    )
    assert hnsw.before is None
    assert hnsw.details["sql"] == (
        'CREATE INDEX CONCURRENTLY "ragperf_embedding_hnsw" ON "public"."langchain_pg_embedding" '
        'USING hnsw ("embedding" vector_cosine_ops) WITH (m = 16, ef_construction = 64)'
    )
    assert hnsw.details["undo_sql"] == 'DROP INDEX CONCURRENTLY IF EXISTS "public"."ragperf_embedding_hnsw"'
    assert "jsonb_path_match" in doc_type.reason and "cannot use this index" in doc_type.reason
    assert schema.filter_values["doc_type"]["luat"] < 0.05 * ROWS  # only the rare value gets a partial index
    assert partial.details["sql"].endswith(
        """WHERE jsonb_path_match("cmetadata", '$.doc_type == $value'::jsonpath, '{"value": "luat"}'::jsonb)"""
    )
    assert partial.details["rows_estimate"] == schema.filter_values["doc_type"]["luat"]
    assert any("ix_cmetadata_gin" in n and "jsonb_path_match" in n for n in planned.notes)
    assert all(c.to_json()["details"] == dict(c.details) for c in planned)  # journal-safe

    declared = dataclasses.replace(schema, embedding_type="vector(64)", declared_dims=64)
    assert [c.kind for c in indexes.plan(declared)][:1] == ["index"]

    with pytest.raises(changes.ChangeError, match=r"3000 dimensions.*up to 2000.*halfvec"):
        indexes.plan(dataclasses.replace(schema, stored_dims=3000))
    with pytest.raises(changes.ChangeError, match=r"ef_construction=16.*allowed"):
        indexes.plan(schema, m=16, ef_construction=16)


def test_plan_skips_a_gin_on_json_and_plans_one_when_missing(clean):
    with clean.connect() as conn:
        schema = embeddings.introspect(conn)
    no_gin = dataclasses.replace(schema, indexes=tuple(i for i in schema.indexes if i.method != "gin"))
    gin = [c for c in indexes.plan(no_gin) if c.name == indexes.GIN_INDEX]
    assert len(gin) == 1 and "jsonb_path_ops" in gin[0].details["sql"] and "jsonb_path_match" in gin[0].reason
    as_json = dataclasses.replace(no_gin, metadata_type="json")
    planned = indexes.plan(as_json)
    assert indexes.GIN_INDEX not in {c.name for c in planned}
    assert any("GIN needs jsonb" in n for n in planned.notes)


# --- applying and verifying -------------------------------------------------------------------


def test_hnsw_on_the_dimensionless_column_fails_as_pgvector_says(clean):
    with clean.connect() as conn, pytest.raises(psycopg.errors.InvalidParameterValue, match="does not have dimensions"):
        conn.execute("CREATE INDEX ON langchain_pg_embedding USING hnsw (embedding vector_cosine_ops)")


def test_the_applied_plan_is_used_by_the_legacy_query(applied, server):
    planned, index_applier, column_applier = applied
    with server.connect() as conn:
        schema = embeddings.introspect(conn)
        assert schema.embedding_type == "vector(64)"
        assert {i.name for i in schema.indexes if i.valid} >= {c.name for c in planned if c.kind == "index"}
        result = appsearch.explain_legacy_query(conn, _queries(server, 1)[0], collection_name=COLLECTION)
        assert result["uses_index"] == indexes.HNSW_INDEX, result["plan_text"]
        assert result["rows"] == 4 and result["execution_ms"] > 0
        assert "Index Scan using ragperf_embedding_hnsw" in result["plan_text"]
        filtered = appsearch.explain_legacy_query(
            conn, _queries(server, 1)[0], collection_name=COLLECTION, k=8, doc_type="thong_tu"
        )
        assert filtered["uses_index"] != "ragperf_embedding_doc_type", filtered["plan_text"]
        assert "jsonb_path_match" in filtered["plan_text"]
    with server.connect() as conn:  # the explaining session flushed its statistics when it closed
        usage = appsearch.index_usage(conn)
    assert usage.set_index("index").loc[indexes.HNSW_INDEX, "idx_scan"] >= 2
    assert list(usage.columns) == ["index", "idx_scan", "idx_tup_read", "idx_tup_fetch", "size_bytes", "size", "valid"]
    assert set(index_applier.timings) == {c.name for c in planned if c.kind == "index"}
    assert all(seconds > 0 for seconds in index_applier.timings.values())
    assert column_applier.timings["langchain_pg_embedding.embedding"] > 0
    build = index_applier.builds[indexes.HNSW_INDEX]
    assert build.phases and not build.graph_spilled and build.max_parallel_maintenance_workers == 2
    assert list(index_applier.report()["index"]) == list(index_applier.timings)


def test_recall_against_exact_search_and_the_filter_pitfall(applied, server):
    with server.connect() as conn:
        table = appsearch.recall_at_k(
            conn, _queries(server), collection_name=COLLECTION, k=10, ef_search_values=(10, 80)
        )
        rare = appsearch.recall_at_k(
            conn, _queries(server, 5), collection_name=COLLECTION, k=10, ef_search_values=(10,), doc_type="luat"
        )
    assert list(table.columns) == ["ef_search", "iterative_scan", "recall", "p50_ms", "p95_ms", "returned_mean"]
    assert len(table) == 4 and set(table["iterative_scan"]) == {"off", "relaxed_order"}
    at_80 = table[(table.ef_search == 80) & (table.iterative_scan == "off")].iloc[0]
    assert at_80.recall >= 0.9 and at_80.returned_mean == 10
    assert (table.p95_ms >= table.p50_ms).all()
    # 2 % of the rows are "luat": its partial index serves the filtered search, full results without iterative scans
    served = rare.set_index("iterative_scan").loc["off"]
    assert served.returned_mean == 10 and served.recall >= 0.9
    with server.connect() as conn:
        filtered = appsearch.explain_legacy_query(
            conn, _queries(server, 1)[0], collection_name=COLLECTION, k=8, doc_type="luat"
        )
        assert filtered["uses_index"] == "ragperf_hnsw_doc_type_luat", filtered["plan_text"]
        conn.execute("DROP INDEX ragperf_hnsw_doc_type_luat")  # the pitfall, without it:
        pitfall = appsearch.recall_at_k(
            conn, _queries(server, 5), collection_name=COLLECTION, k=10, ef_search_values=(10,), doc_type="luat"
        )
    # ef_search = 10 candidates, then the filter, leaves almost nothing ...
    off, relaxed = pitfall.set_index("iterative_scan").loc[["off", "relaxed_order"], "returned_mean"]
    assert off < 5
    # ... unless the scan goes on (pgvector >= 0.8's iterative scan).
    assert relaxed == 10
    with psycopg.connect(server.dsn) as conn:  # SET LOCAL would outlive each search inside a caller's transaction
        conn.execute("SELECT 1")
        with pytest.raises(ValueError, match="outside a transaction"):
            appsearch.recall_at_k(conn, _queries(server, 1), collection_name=COLLECTION)


def test_an_invalid_leftover_is_detected_and_rebuilt(clean):
    with clean.connect() as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY {} ON langchain_pg_embedding (collection_id)").format(
                    sql.Identifier(indexes.COLLECTION_INDEX)
                )
            )
        leftover = embeddings.introspect(conn).index(indexes.COLLECTION_INDEX)
        assert leftover is not None and not leftover.valid
        planned = indexes.plan(embeddings.introspect(conn))
    (change,) = [c for c in planned if c.name == indexes.COLLECTION_INDEX]
    assert change.before == "invalid" and "INVALID leftover" in change.reason
    indexbuild.IndexApplier(clean.connect, progress=False).apply([change])
    with clean.connect() as conn:
        rebuilt = embeddings.introspect(conn).index(indexes.COLLECTION_INDEX)
    assert rebuilt is not None and rebuilt.valid and "UNIQUE" not in rebuilt.definition


def test_apply_then_rollback_restores_the_table(clean, tmp_path):
    connect = clean.connect
    with connect() as conn:
        before = embeddings.introspect(conn)
    planned = indexes.plan(before, **BUILD)
    appliers = {"index": indexbuild.IndexApplier(connect, progress=False), "column": indexbuild.ColumnApplier(connect),
                "analyze": indexbuild.AnalyzeApplier(connect)}  # fmt: skip
    journal = changes.Journal(tmp_path)
    changes.apply(changes.groups(planned, appliers), journal)
    with connect() as conn:
        assert embeddings.introspect(conn).embedding_type == "vector(64)"
        assert _index_names(conn) > clean.original_indexes
    undone = changes.rollback(journal, appliers)
    assert sorted(undone) == sorted(c.key for c in planned) and undone[-1] == "column:langchain_pg_embedding.embedding"
    with connect() as conn:
        after = embeddings.introspect(conn)
    assert after.embedding_type == "vector" and after.dimensionless
    assert {i.name for i in after.indexes} == {i.name for i in before.indexes} == clean.original_indexes
    for applier, group in reversed(changes.groups(planned, appliers)):  # undo is idempotent
        applier.undo(list(reversed(group)))


def test_a_graph_that_outgrows_maintenance_work_mem_is_reported(server):
    with server.connect() as conn:
        conn.execute("DROP SCHEMA IF EXISTS probe CASCADE")
        conn.execute("CREATE SCHEMA probe")
        conn.execute("CREATE TABLE probe.langchain_pg_embedding (LIKE public.langchain_pg_embedding INCLUDING ALL)")
        conn.execute("INSERT INTO probe.langchain_pg_embedding SELECT * FROM public.langchain_pg_embedding LIMIT 2000")
        conn.execute("ALTER TABLE probe.langchain_pg_embedding ALTER COLUMN embedding TYPE vector(64)")
        schema = embeddings.introspect(conn, "probe.langchain_pg_embedding")
    assert schema.table_schema == "probe" and not schema.dimensionless
    (hnsw,) = [c for c in indexes.plan(schema, **BUILD) if c.name == indexes.HNSW_INDEX]
    assert '"probe"."langchain_pg_embedding"' in hnsw.details["sql"]
    applier = indexbuild.IndexApplier(server.connect, progress=False, maintenance_work_mem="1MB")
    started = time.perf_counter()
    applier.apply([hnsw])
    assert applier.builds[hnsw.name].graph_spilled, applier.builds[hnsw.name].notices
    assert applier.timings[hnsw.name] <= time.perf_counter() - started
    with server.connect() as conn:
        conn.execute("DROP SCHEMA probe CASCADE")


def test_maintenance_work_mem_fits_the_graph_within_the_ram_share():
    graph = indexes.hnsw_graph_bytes(1_000_000, 1536, 16)
    assert 6e9 < graph < 7e9  # ~6.4 GB for a million 1536-dim vectors
    fits = indexbuild.maintenance_work_mem_kb(1_000_000, 1536, 16, ram_bytes=64 * 1024**3)
    assert fits * 1024 >= graph
    capped = indexbuild.maintenance_work_mem_kb(1_000_000, 1536, 16, ram_bytes=8 * 1024**3, ram_share=0.25)
    assert capped == 2 * 1024**2
    assert indexbuild.maintenance_work_mem_kb(1000, 64, 16, ram_bytes=8 * 1024**3) == 65_536  # never below current
    with pytest.raises(ValueError, match="ram_share"):
        indexbuild.maintenance_work_mem_kb(1, 1, 16, ram_bytes=1, ram_share=1.5)


def test_ef_search_advice_names_the_role_and_new_connections():
    text = appsearch.ef_search_advice(80, role=labdb.APP_ROLE, database=labdb.DATABASE)
    assert 'ALTER ROLE "sakana" SET hnsw.ef_search = 80' in text
    assert 'ALTER DATABASE "rag_bidding_v2" SET hnsw.ef_search = 80' in text
    assert "new connection" in text
    with pytest.raises(ValueError, match="allowed is 1..1000"):
        appsearch.ef_search_advice(0, role=labdb.APP_ROLE, database=labdb.DATABASE)
