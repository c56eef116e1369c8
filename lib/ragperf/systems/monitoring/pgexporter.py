"""postgres_exporter 0.11.1 (Debian's) with our own queries, correct for PostgreSQL 13 to 18 (Phase 3).

What 0.11.1 gets wrong, and what this module does about it:

* Its ``bgwriter`` collector selects ``checkpoints_timed`` and friends from ``pg_stat_bgwriter``; PostgreSQL 17
  moved them to ``pg_stat_checkpointer`` and the collector fails on every scrape. It runs with
  ``--no-collector.bgwriter`` on every major (so the metric set does not depend on the version); our
  ``pg_checkpoints`` query reads the right view for the major.
* It has no pg_stat_statements query of its own (only its example queries.yaml has one, with the pre-13 column
  names ``total_time``/``mean_time``); ours (``pg_statements``) uses ``total_exec_time`` and, from 17 on,
  ``shared_blk_read_time``. The queries file is given with ``--extend.query-path`` (deprecated after 0.11,
  working in it); :func:`render_queries` writes it for one major version.
* The DSN: never a password on the command line, in ``DATA_SOURCE_NAME``, in the configuration or the process
  record. The exporter gets ``DATA_SOURCE_URI`` (``host:port/dbname?sslmode=...``), ``DATA_SOURCE_USER`` and
  ``DATA_SOURCE_PASS_FILE`` (the path of a 0600 file; 0.11.1 reads and trims it), and every variable it or
  libpq would read otherwise (``DATA_SOURCE_*``, ``PG_EXPORTER_*``, ``PG*``) is removed from its environment.

Its builtin metrics stay: ``pg_up``, ``pg_settings_*`` (``pg_settings_max_connections``), ``pg_stat_database_*``
(they work on 18 too), ``pg_stat_activity_*``, ``pg_locks_count``, ``pg_database_size_bytes``. Ours, whose names
other modules (rules, dashboards) rely on exactly, are listed in :data:`METRICS`.

``pg_statements`` needs the pg_stat_statements extension in the exporter's database. Without it that one query
fails on every scrape (the exporter logs an error, sets ``pg_exporter_last_scrape_error`` 1, and serves all else:
checked by the tests); ``statements=False`` leaves it out. A plain SQL query cannot skip a relation that is not
there, because names are resolved before it runs.

:class:`PgExporterServer` runs it from a state directory: ``queries.yaml``, ``pgexporter.json`` (the process
record), ``pgexporter.log``. :func:`plan` and :class:`PgExporterApplier` (kind ``pgexporter``) are the change model's.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError, Config, check_int, config_diff, diff_text
from ragperf.systems.monitoring.exporters import check_loopback, check_state_dir, samples, scrape

log = logging.getLogger(__name__)

KIND = "pgexporter"
CHANGE_NAME = "postgres"
BINARY = "/usr/bin/prometheus-postgres-exporter"
QUERIES = "queries.yaml"
RECORD = "pgexporter.json"
LOG = "pgexporter.log"
MIN_VERSION, MAX_VERSION = 130000, 189999
SSLMODES = ("disable", "require", "verify-ca", "verify-full")
TOP_STATEMENTS = 50
QUERY_LABEL_CHARS = 80
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9.-]*|\d{1,3}(?:\.\d{1,3}){3})$")
_NAME_RE = re.compile(r"^[^\0\n\r]{1,63}$")
_ENV_PREFIXES = ("DATA_SOURCE_", "PG_EXPORTER_", "PG")

# Our metrics: the queries file's key is the prefix, each column a metric (COUNTER/GAUGE) or a label.
METRICS = {
    "pg_connections": ("count",),
    "pg_backends": ("count",),
    "pg_statements": ("calls", "exec_seconds", "mean_exec_seconds", "rows", "shared_blks_hit", "shared_blks_read",
                      "blk_read_seconds"),
    "pg_checkpoints": ("timed", "requested", "write_seconds", "sync_seconds", "buffers_written"),
    "pg_io": ("reads", "writes", "hits", "evictions"),
    "pg_database_stats": ("xact_commit", "xact_rollback", "blks_hit", "blks_read", "tup_returned", "tup_fetched",
                          "deadlocks", "temp_bytes"),
    "pg_table_scans": ("seq_scan", "idx_scan", "n_live_tup"),
}  # fmt: skip


def major(server_version_num: int) -> int:
    """The major version of ``server_version_num`` (180006 -> 18); ValueError outside 13..18."""
    if isinstance(server_version_num, bool) or not isinstance(server_version_num, int):
        raise ValueError(f"server_version_num: must be a whole number such as 180006, not {server_version_num!r}")
    if not MIN_VERSION <= server_version_num <= MAX_VERSION:
        raise ValueError(
            f"server_version_num: {server_version_num} is not PostgreSQL 13 to 18; the queries are written and "
            "tested for those majors only (pg_stat_statements' columns and the checkpoint views differ by version)"
        )
    return server_version_num // 10000


# -- the queries file ------------------------------------------------------------------------------------------


def _label(description: str) -> dict[str, str]:
    return {"usage": "LABEL", "description": description}


def _connections() -> dict[str, Any]:
    return {
        "query": (
            "SELECT coalesce(datname, '') AS datname, coalesce(state, '') AS state,\n"
            "       coalesce(wait_event_type, '') AS wait_event_type, count(*) AS count\n"
            "FROM pg_stat_activity WHERE backend_type = 'client backend'\n"
            "GROUP BY 1, 2, 3\n"
        ),
        "metrics": [
            {"datname": _label("Database the client is connected to")},
            {"state": _label("active, idle, idle in transaction ... ('' when unknown)")},
            {"wait_event_type": _label("What the backend waits for ('' when it does not wait)")},
            {"count": {"usage": "GAUGE", "description": "Client connections in this state"}},
        ],
    }


def _backends() -> dict[str, Any]:
    return {
        "query": "SELECT coalesce(backend_type, '') AS backend_type, count(*) AS count\n"
        "FROM pg_stat_activity GROUP BY 1\n",
        "metrics": [
            {"backend_type": _label("client backend, autovacuum worker, checkpointer ...")},
            {"count": {"usage": "GAUGE", "description": "Server processes of this type"}},
        ],
    }


def _statements(version: int) -> dict[str, Any]:
    read_time = "shared_blk_read_time" if version >= 17 else "blk_read_time"
    query = f"""SELECT s.queryid::text AS queryid, d.datname, s.query, s.calls, s.exec_seconds, s.mean_exec_seconds,
       s.rows, s.shared_blks_hit, s.shared_blks_read, s.blk_read_seconds
FROM (
    SELECT queryid, dbid,
           left(btrim(regexp_replace(min(query), '\\s+', ' ', 'g')), {QUERY_LABEL_CHARS}) AS query,
           sum(calls)::bigint AS calls,
           sum(total_exec_time)::float8 / 1000 AS exec_seconds,
           coalesce(sum(total_exec_time)::float8 / nullif(sum(calls), 0) / 1000, 0) AS mean_exec_seconds,
           sum(rows)::bigint AS rows,
           sum(shared_blks_hit)::bigint AS shared_blks_hit,
           sum(shared_blks_read)::bigint AS shared_blks_read,
           sum({read_time})::float8 / 1000 AS blk_read_seconds
    FROM pg_stat_statements
    WHERE queryid IS NOT NULL
    GROUP BY queryid, dbid
    ORDER BY sum(total_exec_time) DESC
    LIMIT {TOP_STATEMENTS}
) s
JOIN pg_database d ON d.oid = s.dbid
"""
    counter = "COUNTER"
    return {
        "query": query,
        "metrics": [
            {"queryid": _label("pg_stat_statements' query id")},
            {"datname": _label("Database the statement ran in")},
            {"query": _label(f"The statement's first {QUERY_LABEL_CHARS} characters, whitespace collapsed")},
            {"calls": {"usage": counter, "description": "Times the statement was executed"}},
            {"exec_seconds": {"usage": counter, "description": "Total execution time (total_exec_time), seconds"}},
            {"mean_exec_seconds": {"usage": "GAUGE", "description": "Mean execution time, seconds"}},
            {"rows": {"usage": counter, "description": "Rows retrieved or affected"}},
            {"shared_blks_hit": {"usage": counter, "description": "Shared buffer hits"}},
            {"shared_blks_read": {"usage": counter, "description": "Shared blocks read (from the OS)"}},
            {"blk_read_seconds": {"usage": counter, "description": f"Time reading blocks ({read_time}), seconds"}},
        ],
    }


def _checkpoints(version: int) -> dict[str, Any]:
    if version >= 17:
        query = (
            "SELECT num_timed AS timed, num_requested AS requested, write_time / 1000 AS write_seconds,\n"
            "       sync_time / 1000 AS sync_seconds, buffers_written\n"
            "FROM pg_stat_checkpointer\n"
        )
    else:
        query = (
            "SELECT checkpoints_timed AS timed, checkpoints_req AS requested,\n"
            "       checkpoint_write_time / 1000 AS write_seconds, checkpoint_sync_time / 1000 AS sync_seconds,\n"
            "       buffers_checkpoint AS buffers_written\n"
            "FROM pg_stat_bgwriter\n"
        )
    view = "pg_stat_checkpointer" if version >= 17 else "pg_stat_bgwriter"
    return {
        "query": query,
        "metrics": [
            {"timed": {"usage": "COUNTER", "description": f"Scheduled checkpoints ({view})"}},
            {"requested": {"usage": "COUNTER", "description": "Requested checkpoints"}},
            {"write_seconds": {"usage": "COUNTER", "description": "Time writing checkpoint files, seconds"}},
            {"sync_seconds": {"usage": "COUNTER", "description": "Time syncing checkpoint files, seconds"}},
            {"buffers_written": {"usage": "COUNTER", "description": "Buffers written by checkpoints"}},
        ],
    }


def _io() -> dict[str, Any]:
    columns = ("reads", "writes", "hits", "evictions")
    sums = ", ".join(f"sum(coalesce({c}, 0))::bigint AS {c}" for c in columns)
    return {
        "query": f"SELECT backend_type, object, context, {sums}\nFROM pg_stat_io GROUP BY 1, 2, 3\n",
        "metrics": [
            {"backend_type": _label("Backend type")},
            {"object": _label("relation or temp relation")},
            {"context": _label("normal, vacuum, bulkread, bulkwrite")},
            *({c: {"usage": "COUNTER", "description": f"pg_stat_io {c}"}} for c in columns),
        ],
    }


def _database_stats() -> dict[str, Any]:
    columns = METRICS["pg_database_stats"]
    return {
        "query": f"SELECT datname, {', '.join(columns)}\nFROM pg_stat_database WHERE datname IS NOT NULL\n",
        "metrics": [
            {"datname": _label("Database")},
            *({c: {"usage": "COUNTER", "description": f"pg_stat_database {c}"}} for c in columns),
        ],
    }


def _table_scans() -> dict[str, Any]:
    return {
        "query": (
            "SELECT current_database() AS datname, schemaname, relname, coalesce(seq_scan, 0) AS seq_scan,\n"
            "       coalesce(idx_scan, 0) AS idx_scan, n_live_tup\n"
            "FROM pg_stat_user_tables\n"
        ),
        "metrics": [
            {"datname": _label("Database")},
            {"schemaname": _label("Schema")},
            {"relname": _label("Table")},
            {"seq_scan": {"usage": "COUNTER", "description": "Sequential scans of the table"}},
            {"idx_scan": {"usage": "COUNTER", "description": "Index scans of the table (0 when it has no index)"}},
            {"n_live_tup": {"usage": "GAUGE", "description": "Estimated live rows"}},
        ],
    }


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (the SQL) as YAML block scalars, so the file reads like SQL."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_BlockDumper.add_representer(str, _str)


def queries(server_version_num: int, *, statements: bool = True) -> dict[str, dict[str, Any]]:
    """The queries file's content for that server (see :func:`render_queries`) as a mapping."""
    version = major(server_version_num)
    result: dict[str, dict[str, Any]] = {"pg_connections": _connections(), "pg_backends": _backends()}
    if statements:
        result["pg_statements"] = _statements(version)
    result["pg_checkpoints"] = _checkpoints(version)
    if version >= 16:
        result["pg_io"] = _io()
    result["pg_database_stats"] = _database_stats()
    result["pg_table_scans"] = _table_scans()
    for entry in result.values():
        entry["master"] = True  # run once, on the database of the DSN
    return result


def render_queries(server_version_num: int, *, statements: bool = True) -> str:
    """The ``--extend.query-path`` YAML for a PostgreSQL 13..18 server (pure).

    Each key is a metric prefix (``pg_statements`` + column ``calls`` -> ``pg_statements_calls``); ``pg_io``
    only from 16 (pg_stat_io is new there); ``pg_statements`` only with ``statements``.

    Raises:
        ValueError: ``server_version_num`` is not PostgreSQL 13 to 18.
    """
    header = (
        f"# Written by ragperf (ragperf.systems.monitoring.pgexporter) for PostgreSQL {major(server_version_num)} "
        f"(server_version_num {server_version_num}). Do not edit.\n"
    )
    body = yaml.dump(
        queries(server_version_num, statements=statements), Dumper=_BlockDumper, sort_keys=False, width=1000
    )
    return header + body


# -- the configuration and the process -------------------------------------------------------------------------


class PgExporterError(procs.ProcessError, ChangeError):
    """postgres_exporter could not be started, asked or stopped."""


@dataclass(frozen=True)
class PgExporterConfig(Config):
    """How postgres_exporter runs: where it listens, its state directory, the database it reads, as whom, the
    *path* of the file holding that role's password (never the password), and the server's version (which
    selects the queries). ``statements`` adds the pg_stat_statements query (the extension must exist in
    ``dbname``); ``sslmode`` is libpq's.

    Raises ValueError (naming the field and what is allowed) when a value is not valid.
    """

    listen_port: int
    state_dir: Path
    db_host: str
    db_port: int
    dbname: str
    user: str
    password_file: Path
    server_version_num: int
    listen_host: str = "127.0.0.1"
    statements: bool = True
    sslmode: str = "disable"

    def __post_init__(self) -> None:
        check_int("listen_port", self.listen_port, 1, 65535)
        object.__setattr__(self, "state_dir", check_state_dir(self.state_dir))
        if not isinstance(self.db_host, str) or not _HOST_RE.match(self.db_host):
            raise ValueError(f"db_host: {self.db_host!r} is not a host name or IPv4 address")
        check_int("db_port", self.db_port, 1, 65535)
        for name in ("dbname", "user"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _NAME_RE.match(value):
                raise ValueError(f"{name}: must be 1 to 63 characters without line breaks, not {value!r}")
        password_file = Path(self.password_file)
        if not password_file.is_absolute():
            raise ValueError(f"password_file: must be an absolute path (of the file, never the password), not "
                             f"{str(password_file)!r}")  # fmt: skip
        object.__setattr__(self, "password_file", password_file)
        major(self.server_version_num)
        check_loopback("listen_host", self.listen_host)
        if not isinstance(self.statements, bool):
            raise ValueError(f"statements: must be True or False, not {self.statements!r}")
        if self.sslmode not in SSLMODES:
            raise ValueError(f"sslmode: must be one of {', '.join(SSLMODES)}; not {self.sslmode!r}")

    @property
    def url(self) -> str:
        """The exporter's base URL; its metrics are at ``url + "/metrics"``."""
        return f"http://{self.listen_host}:{self.listen_port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    @property
    def scrape_address(self) -> str:
        """``host:port``, as a Prometheus ``static_configs`` target."""
        return f"{self.listen_host}:{self.listen_port}"

    @property
    def data_source_uri(self) -> str:
        """``DATA_SOURCE_URI``: the DSN without user and password (the exporter adds both)."""
        dbname = urllib.parse.quote(self.dbname, safe="")
        return f"{self.db_host}:{self.db_port}/{dbname}?sslmode={self.sslmode}"


def check_password_file(path: Path) -> None:
    """Raise PgExporterError unless ``path`` is a regular, non-empty file only its owner may read (0600/0400)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise PgExporterError(f"password_file: {path} does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise PgExporterError(f"password_file: {path} is not a regular file")
    if info.st_mode & 0o077:
        raise PgExporterError(
            f"password_file: {path} has mode {info.st_mode & 0o777:o}; a file holding a password must be readable "
            f"by its owner only (chmod 600 {path})"
        )
    if info.st_size == 0:
        raise PgExporterError(f"password_file: {path} is empty")


def environment(cfg: PgExporterConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The exporter's environment: ``base`` (this process's by default) without anything the exporter or libpq
    would read (``DATA_SOURCE_*``, ``PG_EXPORTER_*``, ``PG*``), plus the URI, the user and the password file's path."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not k.startswith(_ENV_PREFIXES)}
    env |= {
        "DATA_SOURCE_URI": cfg.data_source_uri,
        "DATA_SOURCE_USER": cfg.user,
        "DATA_SOURCE_PASS_FILE": str(cfg.password_file),
    }
    return env


def argv(cfg: PgExporterConfig, queries_path: Path) -> list[str]:
    """The command line (pure): no DSN and no password on it."""
    return [
        BINARY,
        f"--web.listen-address={cfg.scrape_address}",
        f"--extend.query-path={queries_path}",
        "--no-collector.bgwriter",
        "--log.level=info",
    ]


class PgExporterServer(procs.Server):
    """One postgres_exporter whose files live in ``state_dir``; stopped by its recorded PID. It counts once
    ``/metrics`` answers 200 with ``pg_up 1`` (it reached the database as ``user``)."""

    NAME = "postgres_exporter"
    WHAT = "postgres_exporter"
    RECORD = RECORD
    LOG = LOG
    CONFIG = PgExporterConfig
    ERROR = PgExporterError
    STOP_TIMEOUT = 10.0

    @property
    def queries_path(self) -> Path:
        return self.state_dir / QUERIES

    def files(self, cfg: PgExporterConfig) -> dict[str, str | None]:
        check_password_file(cfg.password_file)
        return {QUERIES: render_queries(cfg.server_version_num, statements=cfg.statements)}

    def argv(self, cfg: PgExporterConfig) -> list[str]:
        return argv(cfg, self.queries_path)

    def env(self, cfg: PgExporterConfig) -> dict[str, str]:
        return environment(cfg)

    def awaited(self, cfg: PgExporterConfig) -> str:
        return (
            f"serve {cfg.metrics_url} with pg_up 1 (reading {cfg.dbname} on {cfg.db_host}:{cfg.db_port} as {cfg.user})"
        )

    def ready(self, cfg: PgExporterConfig) -> str | None:
        try:
            text = scrape(cfg.metrics_url, timeout=5.0)
        except procs.ProcessError as exc:
            return str(exc)
        up = [value for _, value in samples(text, "pg_up")]
        if not up:
            return "no pg_up in its metrics"
        return None if up[0] == 1 else "pg_up is 0 (it cannot connect to the database)"

    def metrics(self, timeout: float = 10.0) -> str:
        """The running exporter's metrics text.

        Raises:
            PgExporterError: none runs from this state directory, or it did not answer.
        """
        cfg = self.config
        if cfg is None:
            raise PgExporterError(f"no postgres_exporter runs from {self.state_dir}")
        try:
            return scrape(cfg.metrics_url, timeout=timeout)
        except procs.ProcessError as exc:
            raise PgExporterError(str(exc)) from None

    def log_errors(self) -> list[str]:
        """The error lines the exporter logged since its last start (queries that failed, connections refused).

        0.11.1 says only ``queryNamespaceMappings returned N errors`` for a failed query of ours, not which one.
        """
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        starts = [i for i, line in enumerate(lines) if line.startswith("--- ") and " ragperf starts: " in line]
        since = lines[starts[-1] + 1 :] if starts else lines
        return [line for line in since if "level=error" in line]


def plan(current: PgExporterConfig | None, desired: PgExporterConfig) -> list[Change]:
    """The change that takes postgres_exporter from ``current`` (None: not running) to ``desired``; none when equal."""
    if current == desired:
        return []
    what = f"{desired.dbname} on {desired.db_host}:{desired.db_port} as {desired.user}"
    if current is None:
        reason = (
            f"start postgres_exporter on {desired.metrics_url} reading {what}, with queries for PostgreSQL "
            f"{major(desired.server_version_num)} (its bgwriter collector off: it fails on 17+)"
        )
    else:
        reason = f"restart postgres_exporter: {diff_text(config_diff(current, desired))}"
    details = {"url": desired.metrics_url, "scrape_address": desired.scrape_address}
    return [Change.of_config(KIND, CHANGE_NAME, current, desired, reason, details)]


class PgExporterApplier(procs.ServerApplier):
    """Makes and undoes ``pgexporter`` changes: the exporter of ``after`` runs; undo brings back ``before`` (None:
    stopped). See :class:`ragperf.core.procs.ServerApplier`."""

    kind = KIND
    SERVER = PgExporterServer
    TIMEOUT = 20.0
