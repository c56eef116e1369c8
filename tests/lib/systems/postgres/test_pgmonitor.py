"""PostgreSQL's monitoring side on real servers of two majors (embedded 18, Debian 15): the monitoring role with
its password only in a 0600 file (never in pg_authid, the statement log or the journal), pg_stat_statements, the
plan's views, rollback, and the DBA view's frames."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import psycopg
import pytest

from ragperf.core import changes, procs
from ragperf.core.changes import ChangeError, Journal, RolledBack
from ragperf.lab import labdb
from ragperf.systems.postgres import pgmonitor
from ragperf.systems.postgres.pgmonitor import (
    EXTENSION_KIND,
    ROLE_KIND,
    VIEWS_KIND,
    ExtensionApplier,
    MonitorRoleApplier,
    MonitorViewsApplier,
    plan_extension,
    plan_monitor_role,
    plan_monitor_views,
)


def _appliers(server) -> dict[str, changes.Applier]:
    return {
        ROLE_KIND: MonitorRoleApplier(server.connect),
        EXTENSION_KIND: ExtensionApplier(server.connect),
        VIEWS_KIND: MonitorViewsApplier(server.connect),
    }


def _plan(server, password_file: Path, role: str = pgmonitor.MONITOR_ROLE) -> list[changes.Change]:
    with server.connect() as conn:
        return plan_monitor_role(conn, role, password_file) + plan_extension(conn) + plan_monitor_views(conn, role)


def _nothing_left(server, role: str = pgmonitor.MONITOR_ROLE) -> None:
    with server.connect() as conn:
        assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None
        assert conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (pgmonitor.SCHEMA,)).fetchone() is None
        assert conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone() is None


def test_the_extension_is_refused_until_it_is_preloaded(server):
    with server.connect() as conn:
        assert "pg_stat_statements" not in pgmonitor.preloaded(conn)  # a fresh cluster
        with pytest.raises(ChangeError, match="shared_preload_libraries"):
            plan_extension(conn)


@pytest.fixture(scope="module")
def ready(server):
    """The server with pg_stat_statements preloaded (a restart), once per major."""
    with server.connect() as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    server.restart()
    return server


@pytest.fixture
def statement_log(ready):
    """log_statement = 'all' for the test; the server log's path."""
    with ready.connect() as conn:
        conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield ready.base / "postgres.log"
    finally:
        with ready.connect() as conn:
            conn.execute("ALTER SYSTEM RESET log_statement")
            conn.execute("SELECT pg_reload_conf()")


def test_apply_then_rollback_with_the_password_only_in_its_file(ready, statement_log, tmp_path):
    password_file = tmp_path / "secrets" / "monitor.pw"
    planned = _plan(ready, password_file)
    assert [c.key for c in planned] == ["monitor_role:ragperf_monitor", "extension:pg_stat_statements",
                                        "monitor_views:ragperf_monitor"]  # fmt: skip
    journal = Journal(tmp_path / "phase")
    appliers = _appliers(ready)
    try:
        changes.apply(changes.groups(planned, appliers), journal)
        password = pgmonitor.read_password(password_file)
        assert len(password) >= 32
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        with ready.connect() as conn:
            stored, limit, members = conn.execute(
                "SELECT a.rolpassword, a.rolconnlimit, array(SELECT b.rolname FROM pg_auth_members m "
                "JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = a.oid) "
                "FROM pg_authid a WHERE a.rolname = 'ragperf_monitor'"
            ).fetchone()
        assert stored.startswith("SCRAM-SHA-256$") and password not in stored
        assert limit == 5 and "pg_monitor" in members
        # The role logs in with the file's password and reads statistics and the views.
        dsn = labdb.dsn(ready.port, pgmonitor.MONITOR_ROLE, password, dbname="postgres")
        with psycopg.connect(dsn, autocommit=True) as mon:
            for _ in range(3):
                mon.execute("SELECT count(*) FROM pg_class")
            assert mon.execute("SELECT count(*) FROM pg_stat_statements").fetchone()[0] > 0
            texts = [r[0] for r in mon.execute("SELECT query FROM pg_stat_statements").fetchall()]
            assert "<insufficient privilege>" not in texts  # pg_read_all_stats: every statement's text
            cur = mon.execute("SELECT * FROM ragperf_monitor.connection_stats")
            assert [d.name for d in cur.description] == ["total", "active", "idle", "idle_in_transaction", "waiting"]
            total, active, *_ = cur.fetchone()
            assert total >= 1 and active >= 1
            cur = mon.execute("SELECT * FROM ragperf_monitor.query_performance")
            assert [d.name for d in cur.description] == ["query", "calls", "total_exec_time", "mean_exec_time",
                                                         "rows", "shared_blks_hit", "shared_blks_read",
                                                         "blk_read_time"]  # fmt: skip
            assert 1 <= len(cur.fetchall()) <= 20
        # Planned again: nothing to do; applied again: nothing changes (same password).
        assert _plan(ready, password_file) == []
        for applier, group in changes.groups(planned, appliers):
            applier.apply(group)
        assert pgmonitor.read_password(password_file) == password
        # The password is nowhere but its file.
        log_text = statement_log.read_text(errors="replace")
        assert "CREATE ROLE" in log_text and "SCRAM-SHA-256$" in log_text  # the statement log is on
        assert password not in log_text
        assert password not in journal.path.read_text()
        assert password not in json.dumps([c.to_json() for c in planned])
    finally:
        undone = changes.rollback(journal, appliers)
    assert len(undone) == 3
    _nothing_left(ready)
    assert not password_file.exists()
    changes.rollback(journal, appliers)  # nothing outstanding
    for applier, group in reversed(changes.groups(planned, appliers)):
        applier.undo(list(reversed(group)))  # undo twice: idempotent


def test_a_failing_group_rolls_back_the_role_and_the_extension(ready, tmp_path):
    with ready.connect() as conn:
        planned = plan_monitor_role(conn, "ragperf_mon2", tmp_path / "pw") + plan_extension(conn)
        planned += plan_monitor_views(conn, "no_such_role")
    with pytest.raises(RolledBack, match="role no_such_role does not exist"):
        changes.apply(changes.groups(planned, _appliers(ready)), Journal(tmp_path))
    _nothing_left(ready, "ragperf_mon2")
    assert not (tmp_path / "pw").exists()


def test_what_ragperf_did_not_make_is_refused(ready, tmp_path):
    with ready.connect() as conn:
        conn.execute("CREATE ROLE someone_else LOGIN")
        conn.execute("CREATE SCHEMA ragperf_monitor")
        try:
            with pytest.raises(ChangeError, match="someone_else already exists and ragperf did not make it"):
                plan_monitor_role(conn, "someone_else", tmp_path / "pw")
            with pytest.raises(ChangeError, match="schema ragperf_monitor already exists"):
                plan_monitor_views(conn)
            with pytest.raises(ValueError, match="role"):
                plan_monitor_role(conn, "Bad-Name", tmp_path / "pw")
            fake = changes.Change(ROLE_KIND, "someone_else", None, {"role": "someone_else", "password_file":
                                  str(tmp_path / "pw"), "dbname": "postgres"}, "x")  # fmt: skip
            with pytest.raises(ChangeError, match="not ragperf's"):
                MonitorRoleApplier(ready.connect).undo([fake])
            assert conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'someone_else'").fetchone()
        finally:
            conn.execute("DROP SCHEMA ragperf_monitor")
            conn.execute("DROP ROLE someone_else")


def test_a_lost_password_file_is_said_in_words(ready, tmp_path):
    pw = tmp_path / "pw"
    applier = MonitorRoleApplier(ready.connect)
    with ready.connect() as conn:
        planned = plan_monitor_role(conn, "ragperf_mon3", pw)
    applier.apply(planned)
    try:
        pw.unlink()
        with ready.connect() as conn, pytest.raises(ChangeError, match="password file .* is gone"):
            plan_monitor_role(conn, "ragperf_mon3", pw)
        applier.apply(planned)  # apply again re-creates the file with a new password
        dsn = labdb.dsn(ready.port, "ragperf_mon3", pgmonitor.read_password(pw), dbname="postgres")
        with psycopg.connect(dsn) as mon:
            assert mon.execute("SELECT current_user").fetchone()[0] == "ragperf_mon3"
    finally:
        applier.undo(planned)
    assert not pw.exists()


@pytest.fixture
def workload(ready):
    """pg_stat_statements and a LangChain-named table with an index, some scans of both kinds; dropped afterwards."""
    with ready.connect() as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.execute("CREATE TABLE langchain_pg_embedding (id text PRIMARY KEY, document text, n int)")
        conn.execute("CREATE INDEX ragperf_test_unused ON langchain_pg_embedding (n)")
        conn.execute(
            "INSERT INTO langchain_pg_embedding SELECT 'c' || i, repeat('x', 50), i FROM generate_series(1, 2000) i"
        )
        conn.execute("ANALYZE langchain_pg_embedding")
    try:
        yield ready
    finally:
        with ready.connect() as conn:
            conn.execute("DROP TABLE IF EXISTS langchain_pg_embedding")
            conn.execute("DROP EXTENSION IF EXISTS pg_stat_statements")


def _run(conn: psycopg.Connection, times: int) -> None:
    for i in range(times):
        conn.execute("SELECT document FROM langchain_pg_embedding WHERE id = %s", (f"c{i + 1}",))
        conn.execute("SELECT count(*) FROM langchain_pg_embedding WHERE document LIKE %s", ("x%",))


def test_the_dba_view_returns_frames_with_their_columns(workload):
    with workload.connect() as conn:
        _run(conn, 5)
        before = pgmonitor.statements_snapshot(conn)
        json.dumps(before)  # JSON-safe
        _run(conn, 10)
        after = pgmonitor.statements_snapshot(conn)
        top = pgmonitor.top_statements(conn, limit=5)
        assert list(top.columns) == list(pgmonitor.TOP_COLUMNS) and 1 <= len(top) <= 5
        assert top["total_ms"].is_monotonic_decreasing and (top["time_pct"] <= 100).all()
        diff = pgmonitor.statements_diff(before, after)
        assert list(diff.columns) == list(pgmonitor.DIFF_COLUMNS)
        lookup = diff[diff["query"].str.contains("WHERE id = ")].iloc[0]
        assert (lookup["calls_before"], lookup["calls"]) == (5, 10) and lookup["ratio"] > 0
        hits = pgmonitor.buffer_hit_ratio(conn)
        assert list(hits.columns) == ["scope", "name", "blks_hit", "blks_read", "hit_pct"]
        assert {"database", "tables", "indexes"} <= set(hits["scope"]) and "postgres" in set(hits["name"])
        usage = pgmonitor.index_usage(conn)
        assert list(usage.columns) == ["schema", "table", "index", "idx_scan", "size_bytes", "size", "unique", "unused"]
        unused = usage.set_index("index").loc["ragperf_test_unused"]
        assert bool(unused["unused"]) and not bool(unused["unique"])
        assert usage["size_bytes"].is_monotonic_decreasing
        # A backend flushes its table statistics at most once a second, when idle: poll until they show.
        seen: list = []

        def scanned() -> str | None:
            seen[:] = [pgmonitor.table_scans(conn)]
            row = seen[0].iloc[0]
            return None if row["idx_scan"] >= 15 and row["seq_scan"] >= 15 else f"{row['idx_scan']}, {row['seq_scan']}"

        procs.wait_until(scanned, timeout=30, what="the scans did not show in pg_stat_user_tables", interval=0.2)
        scans = seen[0]
        assert len(scans) == 1 and list(scans.columns) == ["schema", "table", "seq_scan", "seq_tup_read", "idx_scan",
                                                           "idx_tup_fetch", "n_live_tup", "idx_scan_pct"]  # fmt: skip
        assert 0 < scans.iloc[0]["idx_scan_pct"] < 100
        assert pgmonitor.table_scans(conn, "no_such_table").empty
        act = pgmonitor.activity(conn)
        assert list(act.columns) == ["state", "wait_event_type", "wait_event", "count", "oldest_active_s"]
        assert "active" in set(act["state"])


def test_blocked_locks_says_who_blocks_whom(workload):
    holder = workload.connect()
    waiter = workload.connect()
    errors: list[BaseException] = []

    def wait_for_lock() -> None:
        try:
            waiter.execute("SET lock_timeout = '60s'")
            with waiter.transaction():
                waiter.execute("LOCK TABLE langchain_pg_embedding IN ACCESS EXCLUSIVE MODE")
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    try:
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE langchain_pg_embedding IN SHARE MODE")
        thread = threading.Thread(target=wait_for_lock, daemon=True)
        thread.start()
        with workload.connect() as conn:
            found: list = []

            def blocked() -> str | None:
                assert not errors, errors
                frame = pgmonitor.blocked_locks(conn)
                found[:] = [frame]
                return None if len(frame) else "nobody blocked yet"

            procs.wait_until(blocked, timeout=30, what="the LOCK did not wait", interval=0.1)
            frame = found[0]
            row = frame.iloc[0]
            assert row["blocked_pid"] == waiter.info.backend_pid and row["blocking_pid"] == holder.info.backend_pid
            assert "ACCESS EXCLUSIVE" in row["blocked_query"] and row["blocking_state"] == "idle in transaction"
        holder.execute("ROLLBACK")
        thread.join(timeout=30)
        assert not errors
    finally:
        holder.close()
        waiter.close()
    with workload.connect() as conn:
        assert pgmonitor.blocked_locks(conn).empty


def test_statements_diff_across_a_reset_takes_the_new_counters():
    before = [{"queryid": "1", "query": "q", "calls": 100, "total_ms": 1000.0, "rows": 1, "stats_reset": "a"}]
    after = [{"queryid": "1", "query": "q", "calls": 150, "total_ms": 300.0, "rows": 1, "stats_reset": "b"}]
    row = pgmonitor.statements_diff(before, after).iloc[0]
    assert (row["calls"], row["mean_ms_before"], row["mean_ms_after"]) == (150, 10.0, 2.0)
    assert row["ratio"] == pytest.approx(0.2)
    same = [dict(after[0], stats_reset="a", calls=150, total_ms=1500.0)]
    row = pgmonitor.statements_diff(before, same).iloc[0]
    assert (row["calls"], row["mean_ms_after"], row["ratio"]) == (50, 10.0, 1.0)


def test_views_follow_the_major_version():
    assert "shared_blk_read_time AS blk_read_time" in pgmonitor.render_views(170000)[1]
    assert "blk_read_time AS blk_read_time" in pgmonitor.render_views(150004)[1]
    assert "backend_type = 'client backend'" in pgmonitor.render_views(130000)[0]
