"""Phase 1 on a database that the real langchain-postgres library created and filled, as a deployment target.

Not the lab's imitation: ``PGVector`` makes its own tables (a dimensionless ``vector``, its GIN on
cmetadata), the collection is not the lab's, the app connects as a role of its own, and the table has
never been analyzed when Phase 1 starts, which is how the users' database looks after a fresh load.
Autovacuum is off for the table so that "never analyzed" stays true until Phase 1 analyzes it (the
daemon would otherwise do so at a moment of its choosing, a race the users' database has too).
Vectors have the users' 768 dimensions: each is then stored out of line (TOAST), the heap looks tiny
to a planner without statistics, and a B-tree on collection_id plus a sort beats HNSW, as the users saw.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
import yaml
from langchain_core.embeddings import Embeddings
from langchain_postgres import PGVector
from sqlalchemy import event
from sqlalchemy.pool import NullPool

from ragperf import runs
from ragperf.core import changes, params
from ragperf.lab import labdb
from ragperf.phases import phase, phase1
from ragperf.runs import targets
from ragperf.systems import tuning
from ragperf.systems.postgres import access, appsearch, embeddings, indexbuild, indexes, roles, serving

DIMS = 768
ROWS = 20_000
COLLECTION = "luat_dau_thau"
OTHER = "bieu_mau"
APP_ROLE, APP_PASSWORD = "rag_app", "app-" + secrets.token_urlsafe(8)
DOC_TYPES = {"luat": 0.02, "nghi_dinh": 0.28, "thong_tu": 0.35, "quyet_dinh": 0.35}
CENTERS = np.random.default_rng(42).normal(size=(50, DIMS))


class HashedEmbeddings(Embeddings):
    """Deterministic clustered vectors from a text's hash: the same text, the same vector."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
        rng = np.random.default_rng(seed)
        v = CENTERS[seed % len(CENTERS)] + 0.5 * rng.normal(size=DIMS)
        return (v / np.linalg.norm(v)).tolist()


@dataclasses.dataclass
class Database:
    port: int
    password: str  # the superuser's, which ragperf uses as a deployment's admin would
    texts: list[str]

    @property
    def admin_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=rag_prod user={labdb.SUPERUSER}"

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_dsn, password=self.password, autocommit=True)

    def store(self) -> PGVector:
        """The app's own LangChain store, connecting as the app's role, one connection per session."""
        url = f"postgresql+psycopg://{APP_ROLE}:{APP_PASSWORD}@127.0.0.1:{self.port}/rag_prod"
        return PGVector(HashedEmbeddings(), collection_name=COLLECTION, connection=url, use_jsonb=True,
                        engine_args={"poolclass": NullPool})  # fmt: skip


@pytest.fixture(scope="module")
def database(embedded_cluster) -> Database:
    port, password = embedded_cluster.port, embedded_cluster.password
    with psycopg.connect(labdb.dsn(port, labdb.SUPERUSER, password, dbname="postgres"), autocommit=True) as c:
        c.execute(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{APP_PASSWORD}'")
        c.execute(f"CREATE DATABASE rag_prod OWNER {APP_ROLE}")
    db = Database(port, password, [f"Điều {i} của văn bản số {i % 97}/2024" for i in range(ROWS)])
    with db.connect() as c:
        c.execute("CREATE EXTENSION vector")  # the app's role may not create it; a DBA did
    rng = np.random.default_rng(3)
    doc_types = rng.choice(list(DOC_TYPES), size=ROWS, p=list(DOC_TYPES.values()))
    store = db.store()  # PGVector makes its tables here; autovacuum is off for the table before any row lands
    with db.connect() as c:
        c.execute("ALTER TABLE langchain_pg_embedding SET (autovacuum_enabled = false)")
    for start in range(0, ROWS, 2000):
        part = slice(start, start + 2000)
        store.add_texts(db.texts[part], [{"doc_type": str(d)} for d in doc_types[part]],
                        ids=[f"doc-{i}" for i in range(start, min(ROWS, start + 2000))])  # fmt: skip
    store._engine.dispose()
    return db


def _deployment(db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **target: object) -> params.Params:
    monkeypatch.setenv("RAGPERF_PGPASSWORD", db.password)
    monkeypatch.setenv("RAGPERF_OUTPUTS", str(tmp_path / "outputs"))
    data = {"target": {"kind": "deployment", "base_url": "http://127.0.0.1:9", "dsn": db.admin_dsn, **target},
            "changes": {"mode": "apply", "app_role": APP_ROLE}}  # fmt: skip
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(data))
    return params.load("smoke", "example-deployment", [path])


def _hnsw_scans(db: Database) -> dict[str, int]:
    with db.connect() as c:
        rows = c.execute(
            "SELECT s.indexrelname, s.idx_scan FROM pg_stat_user_indexes s JOIN pg_class c ON c.oid = s.indexrelid "
            "JOIN pg_am am ON am.oid = c.relam WHERE am.amname = 'hnsw'"
        ).fetchall()
    return dict(rows)


def _scanned_since(db: Database, before: dict[str, int], name: str, timeout_s: float = 10.0) -> bool:
    """True once ``name``'s idx_scan grew (a backend's counters reach pg_stat when it exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _hnsw_scans(db).get(name, 0) > before.get(name, 0):
            return True
        time.sleep(0.2)
    return False


def test_without_statistics_the_btree_wins_and_the_check_says_why(database: Database):
    """The failure the users would meet: HNSW built, the table never analyzed, a B-tree on collection_id there."""
    with database.connect() as conn:
        schema = embeddings.introspect(conn)
    assert not schema.analyzed and schema.dimensionless
    planned = indexes.plan(schema)
    no_analyze = [c for c in planned if c.kind != indexes.ANALYZE_KIND and not c.details.get("serves", "").startswith(
        "LangChain's $in")]  # fmt: skip
    kinds = {"column": indexbuild.ColumnApplier(database.connect),
             "index": indexbuild.IndexApplier(database.connect, progress=False)}  # fmt: skip
    groups = changes.groups(no_analyze, kinds)
    for applier, group in groups:
        applier.apply(group)
    try:
        vector = HashedEmbeddings().embed_query(database.texts[7])
        with database.connect() as conn:
            assert not embeddings.has_statistics(conn, embeddings.TABLE)
            table = serving.check(conn, COLLECTION, vector, "luat", phase1.LEGACY_TOP_K)
            st, pp = appsearch.legacy_search(appsearch.collection_uuid(conn, COLLECTION), vector, 4, None)
        fast = table.iloc[0]
        assert fast["served by"] == indexes.COLLECTION_INDEX and not fast["HNSW serves it"], table.to_string()
        assert "no statistics" in fast["why not"] and "ANALYZE" in fast["what would"]
    finally:
        for applier, group in reversed(groups):
            applier.undo(list(reversed(group)))


def test_phase1_as_a_deployment_makes_hnsw_serve_langchains_own_searches(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    p = _deployment(database, tmp_path, monkeypatch, collection=COLLECTION)
    target = targets.resolve_target(p)
    assert (target.kind, target.collection, target.app_role) == ("deployment", COLLECTION, APP_ROLE)
    kinds, connect = tuning.appliers(target, p, progress=False), access.connector(target)
    run = runs.new_run("smoke")
    ctx = phase.PhaseContext("phase1", p, run, run.path / "phase1", target)
    journal = changes.Journal(ctx.dir())
    with connect() as conn:
        schema = embeddings.introspect(conn)
        probe = phase1.probe(ctx, conn, 10)
    assert probe.collection == COLLECTION and probe.filter_doc_type == "luat"
    planned = indexes.plan(schema)
    order = [c.key for c in planned]
    assert order.index("analyze:langchain_pg_embedding after the column rewrite") == 1
    assert order.index("analyze:langchain_pg_embedding after the builds") > order.index("index:ragperf_embedding_hnsw")
    assert {c.name for c in indexes.competitors(planned)} == {indexes.COLLECTION_INDEX, "ragperf_embedding_doc_type"}

    outcome = phase1.build_indexes(planned, schema, probe, kinds, journal, connect)
    assert outcome.hnsw_serves, outcome.serving.to_string()
    verdicts = outcome.competitors.set_index("index")
    # The app's collection is 99 % of the table: its own query scans the table, so the B-tree is dropped again.
    assert verdicts.loc[indexes.COLLECTION_INDEX, "verdict"] == "dropped", verdicts.to_string()
    assert not verdicts.loc[indexes.COLLECTION_INDEX, "its query uses it"]
    assert [e["event"] for e in journal.entries() if e["key"] == f"index:{indexes.COLLECTION_INDEX}"] == [
        "applying", "applied", "undone"]  # fmt: skip
    with connect() as conn:
        names = {i.name for i in embeddings.introspect(conn).indexes}
    assert indexes.COLLECTION_INDEX not in names and indexes.HNSW_INDEX in names

    # LangChain's own searches, as the app's role: k rows, through HNSW (plain) and the partial index (filtered).
    store, seen = database.store(), []
    event.listen(store._engine, "before_cursor_execute", lambda *a: seen.append((a[2], a[3])))
    before = _hnsw_scans(database)
    docs = store.similarity_search(database.texts[11], k=4)
    assert len(docs) == 4 and docs[0].page_content == database.texts[11]
    assert _scanned_since(database, before, indexes.HNSW_INDEX)
    before = _hnsw_scans(database)
    docs = store.similarity_search(database.texts[11], k=8, filter={"doc_type": {"$eq": "luat"}})
    assert len(docs) == 8 and {d.metadata["doc_type"] for d in docs} == {"luat"}
    assert _scanned_since(database, before, "ragperf_hnsw_doc_type_luat")
    store._engine.dispose()
    # EXPLAIN of the exact statements LangChain sent shows the same.
    searches = [(s, params_) for s, params_ in seen if "ORDER BY distance" in s]
    assert len(searches) == 2
    with database.connect() as conn:
        plans = [str(conn.execute("EXPLAIN " + s, params_).fetchall()) for s, params_ in searches]
    assert "ragperf_embedding_hnsw" in plans[0] and "ragperf_hnsw_doc_type_luat" in plans[1], plans

    # hnsw.ef_search for the app's own role, which LangChain's next connection gets without a code change
    # (10 or 100 are measured, never the server's 40, so a role setting is always planned).
    with connect() as conn:
        recall = appsearch.recall_at_k(
            conn,
            probe.vectors,
            k=phase1.RECALL_K,
            ef_search_values=(10, 100),
            iterative=("off", "strict_order"),
            collection_name=COLLECTION,
        )
        recall_filtered = appsearch.recall_at_k(conn, probe.vectors, k=phase1.RECALL_K, ef_search_values=(10, 100),
                                              iterative=("off", "strict_order"), collection_name=COLLECTION,
                                              doc_type="luat")  # fmt: skip
        role = phase1.role_settings(ctx, recall, recall_filtered, conn)
    assert role.plan and {c.details["role"] for c in role.plan} == {APP_ROLE} and f'"{APP_ROLE}"' in role.advice
    changes.apply([(kinds[roles.ROLE_KIND], role.plan)], journal)
    app = psycopg.connect(f"host=127.0.0.1 port={database.port} dbname=rag_prod user={APP_ROLE}", password=APP_PASSWORD)
    with app:
        app.execute("SELECT '[1]'::vector")  # pgvector's settings exist once it is loaded
        assert app.execute("SHOW hnsw.ef_search").fetchone()[0] == role.desired["hnsw.ef_search"]

    undone = changes.rollback(journal, kinds)
    assert "index:ragperf_embedding_hnsw" in undone and "column:langchain_pg_embedding.embedding" in undone
    with connect() as conn:
        after = embeddings.introspect(conn)
    assert after.dimensionless and {i.name for i in after.indexes} == {i.name for i in schema.indexes}


def test_the_collection_is_introspected_and_several_need_a_name(database: Database):
    """Last in the module: a second collection (added, then deleted) changes how the planner sees the table."""
    with database.connect() as conn:
        assert appsearch.find_collection(conn, None).name == COLLECTION  # the only one: no name needed
        with pytest.raises(appsearch.CollectionError, match=r"'vn_procurement_law' \(target.collection\) not found"):
            appsearch.find_collection(conn, "vn_procurement_law")
    store = database.store()
    other = PGVector(HashedEmbeddings(), collection_name=OTHER, connection=store._engine, use_jsonb=True)
    try:
        other.add_texts([f"Mẫu hồ sơ mời thầu {i}" for i in range(200)], [{"doc_type": "mau"}] * 200)
        with database.connect() as conn:
            assert appsearch.find_collection(conn, COLLECTION).rows == ROWS
            with pytest.raises(appsearch.CollectionError, match="holds 2 collections and target.collection names none"):
                appsearch.find_collection(conn, None)
            message = str(pytest.raises(appsearch.CollectionError, appsearch.find_collection, conn, None).value)
        assert f"'{COLLECTION}' (20,000 rows)" in message and f"'{OTHER}' (200 rows)" in message
    finally:
        other.delete_collection()
        store._engine.dispose()
