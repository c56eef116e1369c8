"""Phase 1.2's appliers on a real PostgreSQL with pgvector: the column's type, ANALYZE, concurrent builds.

The table is LangChain's, as the lab creates it (dimensionless ``vector``), with a few hundred
8-dimensional vectors and autovacuum off, so that only ANALYZE gives it statistics.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb

from ragperf.core.changes import Change, ChangeError
from ragperf.lab import labdb
from ragperf.systems.postgres import embeddings, indexbuild

ROWS = 300
DIMS = 8
TABLE = embeddings.TABLE
BTREE = "ragperf_test_collection_id"


@dataclasses.dataclass
class Database:
    dsn: str

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True)

    def connect_in_transaction(self) -> psycopg.Connection:
        """A connection as most callers open one: not autocommit (the appliers must make it so)."""
        return psycopg.connect(self.dsn)

    def column_type(self) -> str:
        with self.connect() as conn:
            return conn.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attname = 'embedding'",
                (TABLE,),
            ).fetchone()[0]

    def index(self, name: str) -> tuple[str, bool] | None:
        """The index's access method and validity, or None."""
        with self.connect() as conn:
            return conn.execute(
                "SELECT am.amname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_am am ON am.oid = c.relam WHERE i.indexrelid = to_regclass(%s)",
                (name,),
            ).fetchone()


@pytest.fixture(scope="module")
def database(embedded_cluster) -> Iterator[Database]:
    port, password = embedded_cluster.port, embedded_cluster.password
    labdb.bootstrap(port, labdb.Credentials(password, secrets.token_urlsafe(16)))
    db = Database(labdb.dsn(port, labdb.SUPERUSER, password))
    rng = np.random.default_rng(9)
    with db.connect() as conn:
        conn.execute(labdb.LANGCHAIN_DDL)
        conn.execute(f"ALTER TABLE {TABLE} SET (autovacuum_enabled = false)")
        collection_id = uuid.uuid4()
        conn.execute("INSERT INTO langchain_pg_collection (uuid, name) VALUES (%s, 'docs')", (collection_id,))
        copy_sql = f"COPY {TABLE} (id, collection_id, embedding, document, cmetadata) FROM STDIN"
        with conn.cursor().copy(copy_sql) as copy:
            for i in range(ROWS):
                text = "[" + ",".join(f"{x:.6g}" for x in rng.normal(size=DIMS)) + "]"
                copy.write_row((f"chunk-{i}", collection_id, text, f"document {i}", Jsonb({"doc_type": "luat"})))
    yield db


def _column_change(regclass: str = TABLE) -> Change:
    alter = f"ALTER TABLE {regclass} ALTER COLUMN embedding TYPE "
    return Change(
        kind="column",
        name=f"{regclass}.embedding",
        before="vector",
        after=f"vector({DIMS})",
        reason="HNSW needs the dimension",
        details={"sql": alter + f"vector({DIMS})", "undo_sql": alter + "vector", "regclass": regclass},
    )


def _index_change(name: str, create: str, **details: object) -> Change:
    return Change(
        kind="index",
        name=name,
        before=None,
        after="valid",
        reason="test",
        details={"sql": create, "undo_sql": f"DROP INDEX CONCURRENTLY IF EXISTS {name}", "regclass": name, **details},
    )


def _analyze_change() -> Change:
    return Change(
        kind="analyze",
        name=f"{TABLE} before",
        before="never analyzed",
        after="analyzed",
        reason="test",
        details={"sql": f"ANALYZE {TABLE}", "regclass": TABLE},
    )


def test_the_column_is_altered_and_back_and_each_is_idempotent(database: Database):
    applier = indexbuild.ColumnApplier(database.connect_in_transaction)
    change = _column_change()
    assert database.column_type() == "vector"
    applier.apply([change])
    assert database.column_type() == f"vector({DIMS})"
    assert applier.timings[change.name] >= 0
    applier.timings.clear()
    applier.apply([change])  # already vector(8): nothing done, nothing timed
    assert database.column_type() == f"vector({DIMS})" and applier.timings == {}
    applier.undo([change])
    assert database.column_type() == "vector" and change.name in applier.timings
    applier.timings.clear()
    applier.undo([change])
    assert database.column_type() == "vector" and applier.timings == {}


def test_a_missing_column_is_refused(database: Database):
    with pytest.raises(ChangeError, match="no_such_table.embedding: column not found"):
        indexbuild.ColumnApplier(database.connect).apply([_column_change("no_such_table")])


def test_a_failed_alter_is_a_change_error_naming_both_types(database: Database):
    wrong = dataclasses.replace(
        _column_change(),
        after="vector(4)",
        details={**_column_change().details, "sql": f"ALTER TABLE {TABLE} ALTER COLUMN embedding TYPE vector(4)"},
    )
    with pytest.raises(ChangeError, match=rf"{TABLE}.embedding: vector -> vector\(4\) failed: .*dimensions"):
        indexbuild.ColumnApplier(database.connect, lock_timeout="2s").apply([wrong])
    assert database.column_type() == "vector"  # the failed ALTER changed nothing


def test_analyze_refuses_another_kind(database: Database):
    other = _index_change(BTREE, "SELECT 1")
    with pytest.raises(ChangeError, match=f"AnalyzeApplier makes only 'analyze' changes, not index:{BTREE}"):
        indexbuild.AnalyzeApplier(database.connect).apply([_analyze_change(), other])
    with pytest.raises(ChangeError, match="makes only 'analyze' changes"):
        indexbuild.AnalyzeApplier(database.connect).undo([other])


def test_analyze_gives_the_table_statistics_and_undo_keeps_them(database: Database):
    applier = indexbuild.AnalyzeApplier(database.connect_in_transaction)
    change = _analyze_change()
    with database.connect() as conn:
        assert embeddings.has_statistics(conn, TABLE) is False
    applier.apply([change])
    assert change.name in applier.timings
    with database.connect() as conn:
        assert embeddings.has_statistics(conn, TABLE) is True
        assert conn.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (TABLE,)).fetchone()[0] == ROWS
    applier.undo([change])
    with database.connect() as conn:
        assert embeddings.has_statistics(conn, TABLE) is True


@pytest.mark.parametrize("progress", [False, True])
def test_a_btree_is_built_concurrently_and_undo_drops_it(database: Database, progress: bool):
    change = _index_change(BTREE, f"CREATE INDEX CONCURRENTLY {BTREE} ON {TABLE} (collection_id)", method="btree")
    applier = indexbuild.IndexApplier(database.connect_in_transaction, progress=progress, poll_s=0.01)
    with database.connect() as conn:
        current = conn.execute("SELECT setting FROM pg_settings WHERE name = 'maintenance_work_mem'").fetchone()[0]
    try:
        applier.apply([change])
        assert database.index(BTREE) == ("btree", True)
        build = applier.builds[BTREE]
        assert build.maintenance_work_mem == f"{current}kB"  # a B-tree gets the server's own setting
        assert build.max_parallel_maintenance_workers == 2 and not build.graph_spilled
        assert applier.timings[BTREE] == build.seconds
        report = applier.report()
        assert list(report.columns) == [
            "index",
            "seconds",
            "maintenance_work_mem",
            "workers",
            "graph_spilled",
            "phases",
        ]
        assert list(report["index"]) == [BTREE]
        applier.builds.clear()
        applier.apply([change])  # valid already: kept, not rebuilt
        assert applier.builds == {} and database.index(BTREE) == ("btree", True)
    finally:
        applier.undo([change])
    assert database.index(BTREE) is None
    applier.undo([change])  # nothing left to drop: no error


def test_a_fixed_maintenance_work_mem_is_used_for_the_build(database: Database):
    change = _index_change(BTREE, f"CREATE INDEX CONCURRENTLY {BTREE} ON {TABLE} (id)")
    applier = indexbuild.IndexApplier(
        database.connect, progress=False, maintenance_work_mem="4MB", max_parallel_maintenance_workers=0
    )
    try:
        applier.apply([change])
        assert applier.report().loc[0, ["maintenance_work_mem", "workers"]].tolist() == ["4MB", 0]
    finally:
        applier.undo([change])
    assert database.index(BTREE) is None


def test_an_hnsw_build_gets_the_graphs_maintenance_work_mem_capped_by_ram(database: Database):
    column = _column_change()
    hnsw = _index_change(
        "ragperf_test_hnsw",
        f"CREATE INDEX CONCURRENTLY ragperf_test_hnsw ON {TABLE} USING hnsw (embedding vector_l2_ops)",
        method="hnsw",
        rows_estimate=1_000_000,  # as the plan would say of a big table: the graph outgrows the cap
        dims=DIMS,
        m=16,
        graph_bytes=712_000_000,
    )
    columns = indexbuild.ColumnApplier(database.connect)
    builder = indexbuild.IndexApplier(database.connect, progress=False, ram_bytes=2**30)
    columns.apply([column])
    try:
        builder.apply([hnsw])
        assert database.index("ragperf_test_hnsw") == ("hnsw", True)
        assert builder.builds["ragperf_test_hnsw"].maintenance_work_mem == "262144kB"  # 1 GiB * 0.25
    finally:
        builder.undo([hnsw])
        columns.undo([column])
    assert database.index("ragperf_test_hnsw") is None and database.column_type() == "vector"


def test_negative_workers_are_refused(database: Database):
    with pytest.raises(ValueError, match="max_parallel_maintenance_workers -1"):
        indexbuild.IndexApplier(database.connect, max_parallel_maintenance_workers=-1)


def test_maintenance_work_mem_is_the_graph_plus_a_fifth_within_bounds():
    # 1,000 rows of 8 dimensions, m=16: 1000 * (8*4 + 8 + 16*2*16 + 160) = 712,000 bytes; * 1.2 / 1024 = 834.4 kB
    assert indexbuild.maintenance_work_mem_kb(1000, 8, 16, ram_bytes=2**40, current_kb=0) == 835
    assert indexbuild.maintenance_work_mem_kb(1000, 8, 16, ram_bytes=2**40) == 65_536  # never below the server's
    # a big graph is capped at the RAM share: 4 GiB * 0.25 = 1 GiB = 1,048,576 kB
    assert indexbuild.maintenance_work_mem_kb(10_000_000, 768, 16, ram_bytes=4 * 2**30) == 1_048_576
    assert indexbuild.maintenance_work_mem_kb(10_000_000, 768, 16, ram_bytes=4 * 2**30, ram_share=0.5) == 2_097_152


@pytest.mark.parametrize("share", [0, -0.1, 0.95])
def test_maintenance_work_mem_refuses_a_share_out_of_range(share: float):
    with pytest.raises(ValueError, match=f"ram_share {share}: allowed is 0 < ram_share <= 0.9"):
        indexbuild.maintenance_work_mem_kb(1000, 8, 16, ram_bytes=2**30, ram_share=share)
