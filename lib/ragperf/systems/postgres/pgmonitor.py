"""PostgreSQL's monitoring side (Phase 3): a monitoring role, pg_stat_statements, the plan's two views, and the
DBA view's queries (PgHero-style), correct on PostgreSQL 13 to 18.

Three kinds of change, each with an applier that takes a ``connect`` callable (autocommit):

* ``monitor_role``: a LOGIN role (``ragperf_monitor``) IN ROLE ``pg_monitor`` (it reads every statistics view
  and every statement's text, and nothing of the data), CONNECT on the database, CONNECTION LIMIT 5. Its
  password is random and lives only in a 0600 file; the server receives a SCRAM-SHA-256 verifier computed here
  (libpq's ``PQencryptPasswordConn``), so no statement log, ``pg_stat_statements`` or ``pg_stat_activity`` ever
  shows the password. The change's ``after`` holds the role's name and the file's path, never the password. A
  role of that name that ragperf did not make (its comment says who made it) is refused at plan time.
* ``extension``: ``CREATE EXTENSION IF NOT EXISTS pg_stat_statements``. It only works when the library is in
  ``shared_preload_libraries`` (a restart; Phase 1's settings merge it in), so the plan refuses otherwise.
* ``monitor_views``: schema ``ragperf_monitor`` with ``connection_stats`` (client backends: total, active, idle,
  idle in transaction, waiting for a lock) and ``query_performance`` (top 20 statements by mean time, with the
  read-time column of that major: ``shared_blk_read_time`` from 17 on, ``blk_read_time`` before, shown as
  ``blk_read_time``), readable by the monitoring role.

Undo removes only what the change made (``before`` None): the role (and its password file), the extension, the
schema. pg_stat_statements' columns are ``total_exec_time``/``mean_exec_time`` since 13 (the plan's
``total_time``/``mean_time`` fail).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from ragperf.core.changes import Change, ChangeError, StateApplier

log = logging.getLogger(__name__)

MONITOR_ROLE = "ragperf_monitor"
SCHEMA = "ragperf_monitor"
EXTENSION = "pg_stat_statements"
ROLE_KIND = "monitor_role"
EXTENSION_KIND = "extension"
VIEWS_KIND = "monitor_views"
CONNECTION_LIMIT = 5
ROLE_COMMENT = "ragperf: monitoring role (pg_monitor), made by ragperf.systems.postgres.pgmonitor"
SCHEMA_COMMENT = "ragperf: monitoring views, made by ragperf.systems.postgres.pgmonitor"
NEEDS_PRELOAD = {"pg_stat_statements"}
TOP_BY_MEAN = 20
MIN_VERSION, MAX_VERSION = 130000, 189999
_ROLE_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _autocommit(connect: Callable[[], psycopg.Connection]) -> psycopg.Connection:
    conn = connect()
    if not conn.autocommit:
        conn.autocommit = True
    return conn


def server_version(conn: psycopg.Connection) -> int:
    """The server's version number (180006); ChangeError outside PostgreSQL 13 to 18."""
    version = conn.info.server_version
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise ChangeError(f"PostgreSQL {version // 10000} is not supported here: 13 to 18 are")
    return version


def _check_role_name(role: str) -> None:
    if not isinstance(role, str) or not _ROLE_RE.match(role):
        raise ValueError(f"role: {role!r} must be 1-63 lower-case letters, digits or '_', not starting with a digit")


def _role_state(conn: psycopg.Connection, role: str) -> tuple[bool, bool]:
    """(the role exists, ragperf made it)."""
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s", (role,)
    ).fetchone()
    return (row is not None, row is not None and row[0] == ROLE_COMMENT)


# -- the password file -----------------------------------------------------------------------------------------


def write_password_file(path: Path, password: str) -> None:
    """Write ``password`` to ``path``, mode 0600 from its creation on (never readable by others, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(password + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_password(path: Path) -> str:
    """The password in a file :func:`write_password_file` wrote (without the line break)."""
    return Path(path).read_text(encoding="utf-8").strip()


# -- monitor_role ----------------------------------------------------------------------------------------------


def plan_monitor_role(conn: psycopg.Connection, role: str, password_file: Path) -> list[Change]:
    """The change that creates the monitoring ``role`` with its password in ``password_file``; none when ragperf
    already made it and the file is there.

    Raises:
        ChangeError: a role of that name exists that ragperf did not make, or ragperf's role exists and its
            password file is gone (the password cannot be read back).
    """
    _check_role_name(role)
    password_file = Path(password_file)
    if not password_file.is_absolute():
        raise ValueError(f"password_file: must be an absolute path, not {str(password_file)!r}")
    exists, ours = _role_state(conn, role)
    if exists and not ours:
        raise ChangeError(
            f"role {role} already exists and ragperf did not make it (its comment is not ragperf's): refusing to "
            "take it over or drop it later; give another role name"
        )
    if exists:
        if password_file.exists():
            return []
        raise ChangeError(
            f"role {role} (made by ragperf) exists but its password file {password_file} is gone, and a password "
            f"cannot be read back: roll back the run that made it, or DROP ROLE {role}, then plan again"
        )
    dbname = conn.execute("SELECT current_database()").fetchone()[0]
    after = {"role": role, "password_file": str(password_file), "dbname": dbname,
             "connection_limit": CONNECTION_LIMIT}  # fmt: skip
    return [
        Change(
            kind=ROLE_KIND,
            name=role,
            before=None,
            after=after,
            reason=(
                f"a login role for the exporter and the notebook, member of pg_monitor (reads statistics and "
                f"statement texts, no data), CONNECT on {dbname}, at most {CONNECTION_LIMIT} connections; its random "
                f"password only in {password_file} (0600), sent to the server as a SCRAM verifier"
            ),
            details={
                "sql": f"CREATE ROLE {role} LOGIN CONNECTION LIMIT {CONNECTION_LIMIT} IN ROLE pg_monitor "
                f"PASSWORD '<SCRAM-SHA-256 verifier>'; GRANT CONNECT ON DATABASE {dbname} TO {role}",
            },
        )
    ]


class MonitorRoleApplier(StateApplier):
    """Makes and undoes ``monitor_role`` changes: creates the role and its password file; undo drops the role
    (only ragperf's) and removes the file. Idempotent both ways."""

    kind = ROLE_KIND

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self.connect = connect

    def become(self, state: Mapping[str, Any] | None, other: Mapping[str, Any] | None) -> None:
        with _autocommit(self.connect) as conn:
            if state is None:
                if other is not None:
                    self._drop(conn, other)
                return
            self._create(conn, state)

    def _create(self, conn: psycopg.Connection, state: Mapping[str, Any]) -> None:
        role, path = state["role"], Path(state["password_file"])
        _check_role_name(role)
        current = conn.execute("SELECT current_database()").fetchone()[0]
        if current != state["dbname"]:
            raise ChangeError(f"{ROLE_KIND}:{role}: planned for database {state['dbname']}, but connected to {current}")
        exists, ours = _role_state(conn, role)
        if exists and not ours:
            raise ChangeError(f"role {role} exists and ragperf did not make it: refusing to take it over")
        if exists and path.exists():
            log.info("role %s and its password file already exist", role)
            return
        password = secrets.token_urlsafe(32)
        write_password_file(path, password)
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
        del password
        ident = sql.Identifier(role)
        with conn.transaction():
            if exists:  # ours, its file lost: a new password
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(verifier)))
            else:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT {} IN ROLE pg_monitor PASSWORD {}").format(
                        ident, sql.Literal(int(state.get("connection_limit", CONNECTION_LIMIT))), sql.Literal(verifier)
                    )
                )
                conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(ident, sql.Literal(ROLE_COMMENT)))
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(state["dbname"]), ident))
        log.info("created role %s (pg_monitor), password in %s", role, path)

    def _drop(self, conn: psycopg.Connection, state: Mapping[str, Any]) -> None:
        role = state["role"]
        _check_role_name(role)
        exists, ours = _role_state(conn, role)
        if exists and not ours:
            raise ChangeError(f"role {role} is not ragperf's (its comment changed): not dropping it")
        if exists:
            ident = sql.Identifier(role)
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                        sql.Identifier(state["dbname"]), ident))  # fmt: skip
                    conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
                    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))
            except psycopg.Error as exc:
                raise ChangeError(
                    f"dropping role {role} failed ({exc}); it may hold privileges in another database: "
                    f"run DROP OWNED BY {role} there first"
                ) from exc
            log.info("dropped role %s", role)
        Path(state["password_file"]).unlink(missing_ok=True)


# -- extension -------------------------------------------------------------------------------------------------


def preloaded(conn: psycopg.Connection) -> list[str]:
    """The libraries in ``shared_preload_libraries`` (as the server runs now)."""
    value = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()[0]
    return [name.strip().strip('"') for name in value.split(",") if name.strip()]


def plan_extension(conn: psycopg.Connection, name: str = EXTENSION) -> list[Change]:
    """``CREATE EXTENSION IF NOT EXISTS name`` in the connection's database; none when it is there.

    Raises:
        ChangeError: the extension needs ``shared_preload_libraries`` and is not in it.
    """
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", (name,)).fetchone() is not None:
        return []
    if name in NEEDS_PRELOAD and name not in preloaded(conn):
        raise ChangeError(
            f"{name} must be in shared_preload_libraries before CREATE EXTENSION {name} can collect anything "
            f"(now: {', '.join(preloaded(conn)) or 'empty'}); add it (merged with what is there, a restart) "
            "and plan again"
        )
    available = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = %s", (name,)).fetchone()
    if available is None:
        raise ChangeError(f"extension {name} is not installed on the server (no control file; contrib is missing)")
    dbname = conn.execute("SELECT current_database()").fetchone()[0]
    return [
        Change(
            kind=EXTENSION_KIND,
            name=name,
            before=None,
            after={"extension": name, "dbname": dbname, "version": available[0]},
            reason=f"CREATE EXTENSION {name} in {dbname}: per-statement times, calls and buffer use for the exporter "
            "and the DBA view",
            details={"sql": f"CREATE EXTENSION IF NOT EXISTS {name}"},
        )
    ]


class ExtensionApplier(StateApplier):
    """Makes and undoes ``extension`` changes: CREATE EXTENSION IF NOT EXISTS; undo DROP EXTENSION IF EXISTS
    (without CASCADE: it fails while a view still uses it). Idempotent both ways."""

    kind = EXTENSION_KIND

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self.connect = connect

    def become(self, state: Mapping[str, Any] | None, other: Mapping[str, Any] | None) -> None:
        current = state if state is not None else other
        if current is None:
            return
        name = sql.Identifier(current["extension"])
        with _autocommit(self.connect) as conn:
            if state is not None:
                conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(name))
                return
            try:
                conn.execute(sql.SQL("DROP EXTENSION IF EXISTS {}").format(name))
            except psycopg.errors.DependentObjectsStillExist as exc:
                raise ChangeError(
                    f"DROP EXTENSION {current['extension']} refused: objects use it ({exc}); undo the views first"
                ) from exc


# -- monitor_views ---------------------------------------------------------------------------------------------


def read_time_column(server_version_num: int) -> str:
    """pg_stat_statements' column of time spent reading shared blocks: renamed in 17."""
    return "shared_blk_read_time" if server_version_num >= 170000 else "blk_read_time"


def render_views(server_version_num: int) -> list[str]:
    """The CREATE VIEW statements of ``ragperf_monitor`` for that server (pure)."""
    read_time = read_time_column(server_version_num)
    connection_stats = f"""CREATE VIEW {SCHEMA}.connection_stats AS
SELECT count(*) AS total,
       count(*) FILTER (WHERE state = 'active') AS active,
       count(*) FILTER (WHERE state = 'idle') AS idle,
       count(*) FILTER (WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')) AS idle_in_transaction,
       count(*) FILTER (WHERE wait_event_type = 'Lock') AS waiting
FROM pg_catalog.pg_stat_activity
WHERE backend_type = 'client backend'"""
    query_performance = f"""CREATE VIEW {SCHEMA}.query_performance AS
SELECT query, calls, total_exec_time, mean_exec_time, rows, shared_blks_hit, shared_blks_read,
       {read_time} AS blk_read_time
FROM pg_stat_statements
ORDER BY mean_exec_time DESC
LIMIT {TOP_BY_MEAN}"""
    return [connection_stats, query_performance]


def _schema_state(conn: psycopg.Connection) -> tuple[bool, bool]:
    row = conn.execute(
        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s", (SCHEMA,)
    ).fetchone()
    return (row is not None, row is not None and row[0] == SCHEMA_COMMENT)


def plan_monitor_views(conn: psycopg.Connection, role: str = MONITOR_ROLE) -> list[Change]:
    """The change that creates schema ``ragperf_monitor`` with the two views, readable by ``role``; none when
    ragperf's schema is there.

    Raises:
        ChangeError: a schema of that name exists that ragperf did not make.
    """
    _check_role_name(role)
    exists, ours = _schema_state(conn)
    if exists and not ours:
        raise ChangeError(f"schema {SCHEMA} already exists and ragperf did not make it: refusing to use or drop it")
    if exists:
        return []
    version = server_version(conn)
    dbname = conn.execute("SELECT current_database()").fetchone()[0]
    return [
        Change(
            kind=VIEWS_KIND,
            name=SCHEMA,
            before=None,
            after={"schema": SCHEMA, "role": role, "dbname": dbname, "server_version_num": version},
            reason=(
                f"the plan's views, with columns correct for PostgreSQL {version // 10000}: connection_stats (client "
                f"backends by state, lock waits) and query_performance (top {TOP_BY_MEAN} by mean_exec_time, "
                f"{read_time_column(version)}); SELECT for {role}"
            ),
            details={"sql": ";\n".join(render_views(version))},
        )
    ]


class MonitorViewsApplier(StateApplier):
    """Makes and undoes ``monitor_views`` changes: CREATE SCHEMA with the views and grants (one transaction);
    undo DROP SCHEMA ... CASCADE, only of ragperf's schema. Idempotent both ways."""

    kind = VIEWS_KIND

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self.connect = connect

    def become(self, state: Mapping[str, Any] | None, other: Mapping[str, Any] | None) -> None:
        with _autocommit(self.connect) as conn:
            exists, ours = _schema_state(conn)
            if exists and not ours:
                raise ChangeError(f"schema {SCHEMA} is not ragperf's: not touching it")
            if state is None:
                if exists:
                    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(SCHEMA)))
                    log.info("dropped schema %s", SCHEMA)
                return
            if exists:
                return
            self._create(conn, state)

    @staticmethod
    def _create(conn: psycopg.Connection, state: Mapping[str, Any]) -> None:
        role = state["role"]
        _check_role_name(role)
        if conn.execute("SELECT to_regclass('pg_stat_statements')").fetchone()[0] is None:
            raise ChangeError(f"{VIEWS_KIND}: pg_stat_statements is not in this database; apply the extension first")
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            raise ChangeError(f"{VIEWS_KIND}: role {role} does not exist; apply the monitor role first")
        schema, grantee = sql.Identifier(SCHEMA), sql.Identifier(role)
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
            conn.execute(sql.SQL("COMMENT ON SCHEMA {} IS {}").format(schema, sql.Literal(SCHEMA_COMMENT)))
            for statement in render_views(server_version(conn)):
                conn.execute(statement)
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, grantee))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, grantee))
        log.info("created schema %s with its views", SCHEMA)


# -- the DBA view ----------------------------------------------------------------------------------------------


def _frame(conn: psycopg.Connection, query: str, columns: Sequence[str], params: Sequence[Any] = ()) -> pd.DataFrame:
    rows = conn.execute(query, params).fetchall()
    return pd.DataFrame([tuple(r) for r in rows], columns=list(columns))


def _statements_available(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('pg_stat_statements')").fetchone()[0] is not None


TOP_COLUMNS = ("queryid", "query", "calls", "total_ms", "mean_ms", "rows", "shared_blks_hit", "shared_blks_read",
               "hit_pct", "time_pct")  # fmt: skip


def top_statements(conn: psycopg.Connection, limit: int = 20) -> pd.DataFrame:
    """The statements that took the most time in all (pg_stat_statements, summed over users and databases):
    calls, total and mean milliseconds, rows, shared-buffer hits and reads, the hit percentage and the share of
    all statements' time. Empty when the extension is not in this database."""
    if not _statements_available(conn):
        return pd.DataFrame(columns=list(TOP_COLUMNS))
    query = """
        WITH s AS (
            SELECT queryid, min(query) AS query, sum(calls)::bigint AS calls, sum(total_exec_time) AS total_ms,
                   sum(rows)::bigint AS rows, sum(shared_blks_hit)::bigint AS shared_blks_hit,
                   sum(shared_blks_read)::bigint AS shared_blks_read
            FROM pg_stat_statements GROUP BY queryid
        )
        SELECT queryid::text, query, calls, round(total_ms::numeric, 3)::float8,
               round((total_ms / nullif(calls, 0))::numeric, 3)::float8,
               rows, shared_blks_hit, shared_blks_read,
               round(100.0 * shared_blks_hit / nullif(shared_blks_hit + shared_blks_read, 0), 2)::float8,
               round((100.0 * total_ms / nullif(sum(total_ms) OVER (), 0))::numeric, 2)::float8
        FROM s ORDER BY total_ms DESC LIMIT %s"""
    return _frame(conn, query, TOP_COLUMNS, (int(limit),))


def statements_snapshot(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every statement's counters now, JSON-safe, keyed by queryid and query text (for :func:`statements_diff`).

    Each entry: queryid (text), query, calls, total_ms, rows, and stats_reset (when pg_stat_statements was last
    reset, ISO text; None before PostgreSQL 14), so that a diff across a reset is not taken for negative work.
    """
    if not _statements_available(conn):
        return []
    reset = None
    if conn.info.server_version >= 140000:
        row = conn.execute("SELECT stats_reset FROM pg_stat_statements_info").fetchone()
        reset = row[0].isoformat() if row and row[0] is not None else None
    rows = conn.execute(
        "SELECT queryid::text, query, sum(calls)::bigint, sum(total_exec_time)::float8, sum(rows)::bigint "
        "FROM pg_stat_statements WHERE queryid IS NOT NULL GROUP BY queryid, query"
    ).fetchall()
    return [
        {
            "queryid": q,
            "query": text,
            "calls": int(calls),
            "total_ms": float(total),
            "rows": int(n),
            "stats_reset": reset,
        }
        for q, text, calls, total, n in rows
    ]


def statements_delta(start: Sequence[Mapping[str, Any]], end: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What each statement did between two :func:`statements_snapshot` readings (a reset in between:
    the later reading alone)."""
    first = {(s["queryid"], s["query"]): s for s in start}
    reset = bool(start and end) and start[0].get("stats_reset") != end[0].get("stats_reset")
    result = []
    for entry in end:
        old = None if reset else first.get((entry["queryid"], entry["query"]))
        calls = entry["calls"] - (old["calls"] if old else 0)
        if calls <= 0:
            continue
        result.append({**entry, "calls": calls, "total_ms": entry["total_ms"] - (old["total_ms"] if old else 0.0),
                       "rows": entry["rows"] - (old["rows"] if old else 0)})  # fmt: skip
    return result


DIFF_COLUMNS = ("queryid", "query", "calls_before", "calls", "mean_ms_before", "mean_ms_after", "ratio")


def _mean(total: float, calls: float) -> float:
    return total / calls if calls else math.nan


def _diff_row(key: tuple[str, str], old: Mapping[str, Any] | None, new: Mapping[str, Any] | None,
              reset: bool) -> dict[str, Any]:  # fmt: skip
    old_calls, old_total = (old["calls"], old["total_ms"]) if old else (0, 0.0)
    new_calls, new_total = (new["calls"], new["total_ms"]) if new else (old_calls, old_total)
    if reset or new_calls < old_calls or new_total < old_total:  # counters restarted: 'after' is the new window
        calls, total = new_calls if new else 0, new_total if new else 0.0
    else:
        calls, total = new_calls - old_calls, new_total - old_total
    before_mean, after_mean = _mean(old_total, old_calls), _mean(total, calls)
    ratio = after_mean / before_mean if before_mean and not math.isnan(before_mean) else math.nan
    return {"queryid": key[0], "query": key[1], "calls_before": old_calls, "calls": calls,
            "mean_ms_before": before_mean, "mean_ms_after": after_mean, "ratio": ratio}  # fmt: skip


def statements_diff(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per statement, between two :func:`statements_snapshot`: its calls and mean ms in ``before``, the calls
    made between the two and their mean ms (``mean_ms_after``), and ``ratio`` = after / before (below 1: faster).

    When pg_stat_statements was reset in between (or a statement's counters went down), ``after``'s own counters
    are the new window. Sorted by calls between the snapshots, most first.
    """
    old = {(e["queryid"], e["query"]): e for e in before}
    new = {(e["queryid"], e["query"]): e for e in after}
    resets = {e.get("stats_reset") for e in before} ^ {e.get("stats_reset") for e in after}
    reset = bool(before) and bool(after) and bool(resets)
    rows = [_diff_row(key, old.get(key), new.get(key), reset) for key in sorted(set(old) | set(new))]
    frame = pd.DataFrame(rows, columns=list(DIFF_COLUMNS))
    return frame.sort_values("calls", ascending=False, kind="stable").reset_index(drop=True)


def buffer_hit_ratio(conn: psycopg.Connection) -> pd.DataFrame:
    """The share of block reads served from shared buffers: per database (pg_stat_database), and for this
    database's user tables and indexes (pg_statio_user_*). Columns: scope, name, blks_hit, blks_read, hit_pct."""
    query = """
        SELECT 'database' AS scope, datname AS name, blks_hit, blks_read FROM pg_stat_database WHERE datname IS NOT NULL
        UNION ALL
        SELECT 'tables', current_database(), coalesce(sum(heap_blks_hit), 0)::bigint,
               coalesce(sum(heap_blks_read), 0)::bigint FROM pg_statio_user_tables
        UNION ALL
        SELECT 'indexes', current_database(), coalesce(sum(idx_blks_hit), 0)::bigint,
               coalesce(sum(idx_blks_read), 0)::bigint FROM pg_statio_user_indexes"""
    frame = _frame(conn, query, ("scope", "name", "blks_hit", "blks_read"))
    total = frame["blks_hit"] + frame["blks_read"]
    frame["hit_pct"] = (100.0 * frame["blks_hit"] / total.where(total > 0)).round(2)
    return frame


def index_usage(conn: psycopg.Connection) -> pd.DataFrame:
    """This database's user indexes by size, largest first: scans, size, and ``unused`` (never scanned since the
    statistics were reset; a unique index still enforces its constraint, see ``unique``)."""
    query = """
        SELECT s.schemaname, s.relname, s.indexrelname, s.idx_scan, pg_relation_size(s.indexrelid),
               pg_size_pretty(pg_relation_size(s.indexrelid)), i.indisunique
        FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
        ORDER BY pg_relation_size(s.indexrelid) DESC, s.indexrelname"""
    frame = _frame(conn, query, ("schema", "table", "index", "idx_scan", "size_bytes", "size", "unique"))
    frame["unused"] = frame["idx_scan"] == 0
    return frame


def table_scans(conn: psycopg.Connection, table: str = "langchain_pg_embedding") -> pd.DataFrame:
    """Sequential against index scans of ``table`` (every schema's table of that name): seq_scan, seq_tup_read,
    idx_scan, idx_tup_fetch, n_live_tup and the index scans' share. Empty when there is no such table."""
    query = """
        SELECT schemaname, relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), coalesce(idx_tup_fetch, 0),
               n_live_tup,
               round(100.0 * coalesce(idx_scan, 0) / nullif(seq_scan + coalesce(idx_scan, 0), 0), 2)::float8
        FROM pg_stat_user_tables WHERE relname = %s ORDER BY schemaname"""
    columns = ("schema", "table", "seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch", "n_live_tup", "idx_scan_pct")
    return _frame(conn, query, columns, (table,))


def activity(conn: psycopg.Connection) -> pd.DataFrame:
    """Client connections by state, wait_event_type and wait_event: how many, and the oldest running query's
    age in seconds (of those active). NULLs are shown as ''."""
    query = """
        SELECT coalesce(state, ''), coalesce(wait_event_type, ''), coalesce(wait_event, ''), count(*),
               round(coalesce(max(extract(epoch FROM now() - query_start)) FILTER (WHERE state = 'active'), 0)::numeric,
                     3)::float8
        FROM pg_stat_activity WHERE backend_type = 'client backend'
        GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3"""
    return _frame(conn, query, ("state", "wait_event_type", "wait_event", "count", "oldest_active_s"))


def blocked_locks(conn: psycopg.Connection) -> pd.DataFrame:
    """Who blocks whom (pg_blocking_pids): one row per blocked process and blocker, with their users, states,
    how long the blocked one has waited, and both queries."""
    query = """
        SELECT w.pid, w.usename, round(extract(epoch FROM now() - w.state_change)::numeric, 3)::float8, w.query,
               b.pid, b.usename, b.state, b.query
        FROM pg_stat_activity w
        CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS blocker(pid)
        JOIN pg_stat_activity b ON b.pid = blocker.pid
        ORDER BY w.pid, b.pid"""
    columns = ("blocked_pid", "blocked_user", "waiting_s", "blocked_query", "blocking_pid", "blocking_user",
               "blocking_state", "blocking_query")  # fmt: skip
    return _frame(conn, query, columns)
