"""postgres_exporter 0.11.1 with our queries: the queries file per major (pure), each query run on real servers
(embedded 18, Debian 15) as the monitoring role, and the real exporter: our metric names, no errors in its log,
the password in neither its command line nor its environment."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import psycopg
import pytest
import yaml

from ragperf.core import procs
from ragperf.core.changes import Change
from ragperf.lab import labdb
from ragperf.systems.monitoring import pgexporter
from ragperf.systems.monitoring.exporters import metric_names, samples
from ragperf.systems.monitoring.pgexporter import (
    PgExporterApplier,
    PgExporterConfig,
    PgExporterError,
    PgExporterServer,
    plan,
    render_queries,
)
from ragperf.systems.postgres import pgmonitor

pytestmark = pytest.mark.skipif(not Path(pgexporter.BINARY).exists(), reason="postgres_exporter is not installed")

ROLE = "ragperf_monitor"
BUILTIN = ("pg_up", "pg_settings_max_connections", "pg_stat_database_xact_commit", "pg_database_size_bytes")


def _cfg(tmp_path: Path, **kw) -> PgExporterConfig:
    fields = {
        "listen_port": 9187,
        "state_dir": tmp_path / "pgexp",
        "db_host": "127.0.0.1",
        "db_port": 5432,
        "dbname": "postgres",
        "user": ROLE,
        "password_file": tmp_path / "pw",
        "server_version_num": 180006,
    }
    return PgExporterConfig(**(fields | kw))  # fmt: skip


# -- pure ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [130000, 140010, 150018, 160004, 170002, 180006])
def test_the_queries_file_fits_each_major(version):
    text = render_queries(version)
    assert text.startswith("# Written by ragperf")
    parsed = yaml.safe_load(text)
    expected = ["pg_connections", "pg_backends", "pg_statements", "pg_checkpoints", "pg_database_stats",
                "pg_table_scans"] + (["pg_io"] if version >= 160000 else [])  # fmt: skip
    assert sorted(parsed) == sorted(expected)
    for prefix, entry in parsed.items():
        assert entry["master"] is True
        metrics = [name for m in entry["metrics"] for name, spec in m.items() if spec["usage"] != "LABEL"]
        assert metrics == list(pgexporter.METRICS[prefix]), prefix
    statements, checkpoints = parsed["pg_statements"]["query"], parsed["pg_checkpoints"]["query"]
    assert "total_exec_time" in statements and "total_time)" not in statements and "LIMIT 50" in statements
    if version >= 170000:
        assert "shared_blk_read_time" in statements and "pg_stat_checkpointer" in checkpoints
    else:
        assert "sum(blk_read_time)" in statements and "pg_stat_bgwriter" in checkpoints
    assert "backend_type = 'client backend'" in parsed["pg_connections"]["query"]
    assert "pg_statements" not in yaml.safe_load(render_queries(version, statements=False))


@pytest.mark.parametrize("version", [120000, 190000, 90624, True, "180006"])
def test_other_versions_are_refused_in_words(version):
    with pytest.raises(ValueError, match="server_version_num"):
        render_queries(version)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"password_file": "pw"}, "password_file: must be an absolute path"),
        ({"listen_host": "0.0.0.0"}, "listen_host: 0.0.0.0 is not a loopback address"),
        ({"db_host": "127.0.0.1/x"}, "db_host"),
        ({"db_port": 0}, "db_port"),
        ({"dbname": ""}, "dbname"),
        ({"user": "a\nb"}, "user"),
        ({"server_version_num": 110000}, "server_version_num: 110000 is not PostgreSQL 13 to 18"),
        ({"sslmode": "prefer"}, "sslmode"),
        ({"statements": "yes"}, "statements"),
    ],
)
def test_bad_values_name_the_field(tmp_path, changes, words):
    with pytest.raises(ValueError, match=words):
        _cfg(tmp_path, **changes)


def test_no_secret_on_the_command_line_nor_from_the_environment(tmp_path):
    cfg = _cfg(tmp_path, dbname="my db/x")
    assert cfg.data_source_uri == "127.0.0.1:5432/my%20db%2Fx?sslmode=disable"
    argv = pgexporter.argv(cfg, tmp_path / "q.yaml")
    assert "--no-collector.bgwriter" in argv and f"--extend.query-path={tmp_path / 'q.yaml'}" in argv
    assert not any("DATA_SOURCE" in a or "postgresql://" in a for a in argv)
    base = {"PATH": "/usr/bin", "DATA_SOURCE_NAME": "postgresql://u:leak@h/db", "DATA_SOURCE_PASS": "leak",
            "PGPASSWORD": "leak", "PGPASSFILE": "/x", "PG_EXPORTER_DISABLE_SETTINGS_METRICS": "true"}  # fmt: skip
    env = pgexporter.environment(cfg, base)
    assert env == {"PATH": "/usr/bin", "DATA_SOURCE_URI": cfg.data_source_uri, "DATA_SOURCE_USER": ROLE,
                   "DATA_SOURCE_PASS_FILE": str(tmp_path / "pw")}  # fmt: skip
    assert "password" not in json.dumps(cfg.to_dict()).lower().replace("password_file", "")


def test_a_password_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "pw"
    with pytest.raises(PgExporterError, match="does not exist"):
        pgexporter.check_password_file(path)
    path.write_text("secret\n")
    path.chmod(0o644)
    with pytest.raises(PgExporterError, match="mode 644.*chmod 600"):
        pgexporter.check_password_file(path)
    path.chmod(0o600)
    pgexporter.check_password_file(path)


def test_plan_starts_restarts_or_does_nothing(tmp_path):
    cfg = _cfg(tmp_path)
    [change] = plan(None, cfg)
    assert (change.kind, change.name, change.before) == ("pgexporter", "postgres", None)
    assert Change.from_json(json.loads(json.dumps(change.to_json()))) == change
    assert plan(cfg, cfg) == []
    [restart] = plan(cfg, dataclasses.replace(cfg, listen_port=9188))
    assert "listen_port 9187 -> 9188" in restart.reason


# -- real servers ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitored(server, tmp_path_factory):
    """The server with pg_stat_statements (preloaded: a restart), the monitoring role, a LangChain-named table."""
    with server.connect() as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    server.restart()
    password_file = tmp_path_factory.mktemp("secrets") / "monitor.pw"
    appliers = {
        pgmonitor.ROLE_KIND: pgmonitor.MonitorRoleApplier(server.connect),
        pgmonitor.EXTENSION_KIND: pgmonitor.ExtensionApplier(server.connect),
    }
    with server.connect() as conn:
        planned = pgmonitor.plan_monitor_role(conn, ROLE, password_file) + pgmonitor.plan_extension(conn)
        conn.execute("CREATE TABLE langchain_pg_embedding (id text PRIMARY KEY, n int)")
        conn.execute("INSERT INTO langchain_pg_embedding SELECT 'c' || i, i FROM generate_series(1, 100) i")
        conn.execute("CREATE DATABASE noext")
    for change in planned:
        appliers[change.kind].apply([change])
    try:
        yield server, password_file
    finally:
        for change in reversed(planned):
            appliers[change.kind].undo([change])
        with server.connect() as conn:
            conn.execute("DROP TABLE IF EXISTS langchain_pg_embedding")
            conn.execute("DROP DATABASE IF EXISTS noext")


def _version(server) -> int:
    with server.connect() as conn:
        return conn.info.server_version


def test_every_query_runs_as_the_monitoring_role(monitored):
    server, password_file = monitored
    dsn = labdb.dsn(server.port, ROLE, pgmonitor.read_password(password_file), dbname="postgres")
    with server.connect() as admin:
        admin.execute("SELECT count(*) FROM langchain_pg_embedding WHERE id = 'c1'")
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM langchain_pg_embedding")  # statistics, never the data
        for prefix, entry in pgexporter.queries(conn.info.server_version).items():
            cur = conn.execute(entry["query"])
            declared = [name for m in entry["metrics"] for name in m]
            assert [d.name for d in cur.description] == declared, prefix
            rows = cur.fetchall()
            if prefix not in ("pg_table_scans",):
                assert rows, prefix
            label_at = [i for i, m in enumerate(entry["metrics"]) if next(iter(m.values()))["usage"] == "LABEL"]
            labels = [tuple(row[i] for i in label_at) for row in rows]
            assert len(labels) == len(set(labels)), f"{prefix}: two rows with the same labels"
            assert all(v is not None for row in rows for v in row), f"{prefix}: a NULL"


def _start(server, password_file: Path, tmp_path: Path, **kw) -> tuple[PgExporterServer, PgExporterConfig]:
    cfg = PgExporterConfig(listen_port=procs.free_port(), state_dir=tmp_path / "pgexp", db_host="127.0.0.1",
                           db_port=server.port, dbname=kw.pop("dbname", "postgres"), user=ROLE,
                           password_file=password_file, server_version_num=_version(server), **kw)  # fmt: skip
    exporter = PgExporterServer(cfg.state_dir)
    exporter.start(cfg)
    return exporter, cfg


def _scrape_until(exporter: PgExporterServer, names: tuple[str, ...]) -> str:
    seen = [""]

    def present() -> str | None:
        seen[0] = exporter.metrics()
        missing = [n for n in names if not samples(seen[0], n)]
        return None if not missing else f"missing {', '.join(missing)}"

    procs.wait_until(present, timeout=30, what="postgres_exporter did not serve our metrics", interval=0.5)
    return seen[0]


def test_the_exporter_serves_our_metrics_without_errors(monitored, tmp_path, monkeypatch):
    server, password_file = monitored
    password = pgmonitor.read_password(password_file)
    # Inherited, these would win over our DSN or leak a secret into its environment: they must be dropped.
    monkeypatch.setenv("DATA_SOURCE_NAME", "postgresql://nobody:wrong@127.0.0.1:1/none")
    monkeypatch.setenv("PGPASSWORD", "wrong")
    exporter, cfg = _start(server, password_file, tmp_path)
    try:
        with server.connect() as conn:  # statements and scans to report
            conn.execute("SELECT count(*) FROM langchain_pg_embedding")
        wanted = [f"{prefix}_{column}" for prefix, columns in pgexporter.METRICS.items() for column in columns
                  if prefix != "pg_io" or cfg.server_version_num >= 160000]  # fmt: skip
        text = _scrape_until(exporter, (*BUILTIN, *wanted))
        assert samples(text, "pg_up")[0][1] == 1
        assert [v for _, v in samples(text, "pg_exporter_last_scrape_error")] == [0]
        assert not any(n.startswith("pg_stat_bgwriter_") for n in metric_names(text))
        scans = [labels for labels, _ in samples(text, "pg_table_scans_seq_scan")]
        assert {"datname": "postgres", "schemaname": "public", "relname": "langchain_pg_embedding"}.items() <= scans[
            0
        ].items()
        statements = samples(text, "pg_statements_calls")
        assert statements and all(
            len(labels["query"]) <= 80 and "\n" not in labels["query"] for labels, _ in statements
        )
        conns = samples(text, "pg_connections_count")
        assert all(set(labels) >= {"datname", "state", "wait_event_type"} for labels, _ in conns)
        assert exporter.log_errors() == []
        pid = exporter.proc.pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert password.encode() not in cmdline and password.encode() not in environ
        assert b"DATA_SOURCE_NAME" not in environ and b"PGPASSWORD" not in environ
        assert f"DATA_SOURCE_PASS_FILE={password_file}".encode() in environ.split(b"\0")
        assert password not in exporter.record_path.read_text() and password not in exporter.log_path.read_text()
    finally:
        exporter.stop(timeout=5)
    assert not exporter.running


def test_without_the_extension_the_statements_query_fails_alone(monitored, tmp_path):
    server, password_file = monitored
    exporter, _ = _start(server, password_file, tmp_path, dbname="noext")
    try:
        text = _scrape_until(exporter, ("pg_up", "pg_connections_count", "pg_database_stats_xact_commit"))
        assert samples(text, "pg_up")[0][1] == 1 and not samples(text, "pg_statements_calls")
        assert [v for _, v in samples(text, "pg_exporter_last_scrape_error")] == [1]
        assert exporter.running and exporter.log_errors()
    finally:
        exporter.stop(timeout=5)
    exporter, _ = _start(server, password_file, tmp_path, dbname="noext", statements=False)
    try:
        text = _scrape_until(exporter, ("pg_up", "pg_checkpoints_timed"))
        assert [v for _, v in samples(text, "pg_exporter_last_scrape_error")] == [0]
        assert exporter.log_errors() == []
    finally:
        exporter.stop(timeout=5)


def test_a_wrong_password_fails_the_start_with_pg_up_0(monitored, tmp_path):
    server, _ = monitored
    wrong = tmp_path / "wrong.pw"
    pgmonitor.write_password_file(wrong, "not-the-password")
    exporter = PgExporterServer(tmp_path / "pgexp", timeout=4)
    cfg = PgExporterConfig(listen_port=procs.free_port(), state_dir=tmp_path / "pgexp", db_host="127.0.0.1",
                           db_port=server.port, dbname="postgres", user=ROLE, password_file=wrong,
                           server_version_num=_version(server))  # fmt: skip
    with pytest.raises(PgExporterError, match="pg_up is 0"):
        exporter.start(cfg)
    assert not exporter.running and "not-the-password" not in exporter.log_path.read_text()


def test_the_applier_starts_and_undo_stops(monitored, tmp_path):
    server, password_file = monitored
    cfg = PgExporterConfig(listen_port=procs.free_port(), state_dir=tmp_path / "pgexp", db_host="127.0.0.1",
                           db_port=server.port, dbname="postgres", user=ROLE, password_file=password_file,
                           server_version_num=_version(server))  # fmt: skip
    changes = plan(None, cfg)
    applier = PgExporterApplier()
    try:
        applier.apply(changes)
        exporter = PgExporterServer(cfg.state_dir)
        assert exporter.running and exporter.queries_path.read_text() == render_queries(cfg.server_version_num)
        applier.apply(changes)  # idempotent
    finally:
        applier.undo(changes)
    assert not PgExporterServer(cfg.state_dir).running
    applier.undo(changes)
