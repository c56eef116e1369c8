"""PgBouncer between the app instances and PostgreSQL (Phase 4), started and stopped by ragperf.

The legacy app opens a new PostgreSQL connection for every request. Each one costs PostgreSQL a backend
fork and a SCRAM exchange; through PgBouncer the client still connects for every request, but PgBouncer
hands it a server connection it keeps open, so the fork and the server's authentication happen once per
pooled connection, not once per request.

``session`` pooling (the default) is enough for such an app: a client keeps its server connection from
connect to close, so everything a session may do still works. ``transaction`` pooling hands the server
connection back after every transaction; PgBouncer 1.18 does not track prepared statements there (1.21
does), so it is unsafe for clients that prepare them (psycopg 3 does after 5 runs of the same query,
unless ``prepare_threshold=None``). ``statement`` pooling forbids multi-statement transactions and is
refused.

Authentication is SCRAM-SHA-256 end to end, and no file PgBouncer reads holds a password: the auth file
(``userlist.txt``, 0600, owned by the user PgBouncer runs as) holds the role's SCRAM *verifier* as
PostgreSQL stores it in ``pg_authid`` (:func:`scram_verifier`, :func:`write_auth_file`). PgBouncer
checks the client's SCRAM proof with it and, because the client used SCRAM, logs into PostgreSQL with
the client's own keys (SCRAM pass-through; it works because the verifier is the server's, same salt and
iteration count). The verifier is still secret enough to be kept out of the configuration, the process
record and every message. Clients give their password in a libpq passfile (:func:`write_passfile`),
never on a command line or in the environment.

PgBouncer refuses to run as root: when ragperf is root, ``run_as`` names an unprivileged user (the phase gives
the lab's service user), who is given the state directory and must be able to reach it.

:class:`PgBouncer` runs one ``pgbouncer`` whose files all live in a state directory: ``pgbouncer.ini``
(:func:`render`), ``userlist.txt``, ``pgbouncer.json`` (the process record) and ``pgbouncer.log`` (its
output). :class:`PgBouncerApplier` makes and undoes ``pgbouncer`` changes; :func:`plan` plans them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import pwd
import re
import socket
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import conninfo

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError, Config, check_int, check_ipv4, config_diff, diff_text

if TYPE_CHECKING:  # pandas is imported where a table is made
    import pandas as pd

log = logging.getLogger(__name__)

KIND = "pgbouncer"
CHANGE_NAME = "pooler"
AUTH_FILE = "userlist.txt"
PGBOUNCER_BIN = "/usr/sbin/pgbouncer"
CONF = "pgbouncer.ini"
RECORD = "pgbouncer.json"
LOG = "pgbouncer.log"
# What this module and PgBouncer make in a state directory (the record is the Server's, removed by stop()).
OWN_FILES = (CONF, AUTH_FILE, LOG)
ADMIN_DB = "pgbouncer"  # PgBouncer's admin console: a database of this name is PgBouncer's own
POOL_MODES = ("session", "transaction")
SCRAM_PREFIX = "SCRAM-SHA-256$"
# Startup parameters PgBouncer 1.18 drops instead of refusing the client. It handles client_encoding, DateStyle,
# TimeZone, standard_conforming_strings and application_name itself; libpq (and so psycopg 3, which adds nothing to
# libpq's startup packet) sends only user, database, application_name, client_encoding and options, each only when
# given. Nothing else is needed for the app; extra_float_digits is what pgjdbc (and some drivers built on it) send.
IGNORE_STARTUP_PARAMETERS = ("extra_float_digits",)
SHOW_COMMANDS = ("POOLS", "STATS", "SERVERS", "CLIENTS", "DATABASES", "LISTS", "CONFIG")

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9_./@+,=~-]*$")
_B64 = r"[A-Za-z0-9+/]+={0,2}"
_VERIFIER_RE = re.compile(rf"^SCRAM-SHA-256\$[1-9][0-9]*:{_B64}\${_B64}:{_B64}$")


class PgBouncerError(ChangeError):
    """PgBouncer could not be configured, started, asked or stopped."""


# -- the configuration -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PgBouncerConfig(Config):
    """How PgBouncer runs: where it listens, the PostgreSQL it pools, the database and role it serves, and its pool.

    Clients connect to ``listen_host:listen_port`` asking for ``dbname`` as ``role``; PgBouncer connects to the
    database of the same name on ``server_host:server_port``. ``default_pool_size`` is the number of server
    connections per (database, user), ``max_client_conn`` the client connections it accepts in all,
    ``max_db_connections`` the server connections per database (0: no limit), ``server_idle_timeout_s`` the
    seconds an unused server connection stays open (0: for ever). ``state_dir`` holds its files. The role's
    verifier is not part of the configuration: it is in the auth file (:func:`write_auth_file`).

    Raises ValueError (naming the field, what was given and what is allowed) when a value is not valid.
    """

    listen_port: int
    server_host: str
    server_port: int
    dbname: str
    role: str
    state_dir: Path
    pool_mode: str = "session"
    default_pool_size: int = 40
    max_client_conn: int = 1000
    max_db_connections: int = 0
    server_idle_timeout_s: int = 600
    listen_host: str = "127.0.0.1"
    run_as: str | None = None  # the user PgBouncer runs as (it refuses root); None: this process's own

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir).absolute())
        check_int("listen_port", self.listen_port, 1, 65535)
        check_ipv4("listen_host", self.listen_host)
        _check_host("server_host", self.server_host)
        check_int("server_port", self.server_port, 1, 65535)
        _check_name("dbname", self.dbname)
        if self.dbname == ADMIN_DB:
            raise ValueError(f"dbname: {ADMIN_DB!r} is PgBouncer's admin console; give the application's database")
        _check_name("role", self.role)
        if not _PATH_RE.match(str(self.state_dir)):
            raise ValueError(
                f"state_dir: {str(self.state_dir)!r} may hold only letters, digits and _ . / @ + , = ~ - "
                "(it is written unquoted into pgbouncer.ini)"
            )
        if self.pool_mode == "statement":
            raise ValueError(
                "pool_mode: 'statement' is refused (it forbids transactions of more than one statement); allowed: "
                "'session' (the default) or 'transaction' (unsafe for clients that use prepared statements: "
                "PgBouncer 1.18 does not keep them across transactions)"
            )
        if self.pool_mode not in POOL_MODES:
            raise ValueError(f"pool_mode: must be one of {', '.join(POOL_MODES)}, not {self.pool_mode!r}")
        check_int("default_pool_size", self.default_pool_size, 1, 10_000)
        check_int("max_client_conn", self.max_client_conn, 1, 100_000)
        check_int("max_db_connections", self.max_db_connections, 0, 100_000)
        check_int("server_idle_timeout_s", self.server_idle_timeout_s, 0, 7 * 86400)
        if self.run_as is not None and not _NAME_RE.match(str(self.run_as)):
            raise ValueError(f"run_as: {self.run_as!r} is not a user name (letters, digits, '_')")
        same = self.server_host == self.listen_host or (
            _is_loopback(self.server_host) and (self.listen_host == "0.0.0.0" or _is_loopback(self.listen_host))
        )
        if same and self.server_port == self.listen_port:
            raise ValueError(
                f"server_port: {self.server_host}:{self.server_port} is PgBouncer's own address; give PostgreSQL's"
            )

    @property
    def connect_host(self) -> str:
        """The address clients connect to (the loopback address when PgBouncer listens on every interface)."""
        return "127.0.0.1" if self.listen_host == "0.0.0.0" else self.listen_host

    @property
    def url(self) -> str:
        """``postgresql://host:port/dbname`` without user or password: where clients connect, for messages."""
        return f"postgresql://{self.connect_host}:{self.listen_port}/{self.dbname}"

    def dsn(self, *, user: str, passfile: Path | None = None) -> str:
        """A libpq key=value connection string to ``dbname`` through PgBouncer as ``user``; the password comes
        from ``passfile`` (see :func:`write_passfile`; None: libpq's default, ``~/.pgpass``), never from the string.
        """
        if not isinstance(user, str) or not user:
            raise ValueError(f"user: must be a role name, not {user!r}")
        params: dict[str, Any] = {"host": self.connect_host, "port": self.listen_port, "dbname": self.dbname,
                                  "user": user}  # fmt: skip
        if passfile is not None:
            params["passfile"] = str(Path(passfile).absolute())
        return conninfo.make_conninfo("", **params)


def _check_name(name: str, value: object) -> None:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ValueError(f"{name}: must be 1-63 letters, digits or '_' not starting with a digit, not {value!r}")


def _check_host(name: str, value: object) -> None:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            ipaddress.IPv4Address(value)
            return
        if _HOSTNAME_RE.match(value) and not re.fullmatch(r"[0-9.]+", value):
            return
    raise ValueError(f"{name}: {value!r} is neither an IPv4 address nor a host name")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        return False


def render(cfg: PgBouncerConfig) -> str:
    """The pgbouncer.ini text for ``cfg`` (pure: reads and writes nothing)."""
    lines = [
        ";; Written by ragperf (ragperf.systems.pgbouncer). Do not edit: ragperf rewrites it on every start.",
        "[databases]",
        f"{cfg.dbname} = host={cfg.server_host} port={cfg.server_port} dbname={cfg.dbname}",
        "",
        "[pgbouncer]",
        f"listen_addr = {cfg.listen_host}",
        f"listen_port = {cfg.listen_port}",
        ";; TCP only: no Unix socket.",
        "unix_socket_dir =",
        ";; The auth file holds the role's SCRAM verifier, not its password; PgBouncer logs into PostgreSQL with",
        ";; the keys of the client's SCRAM exchange (pass-through).",
        "auth_type = scram-sha-256",
        f"auth_file = {cfg.state_dir / AUTH_FILE}",
        f"pool_mode = {cfg.pool_mode}",
        f"default_pool_size = {cfg.default_pool_size}",
        f"max_client_conn = {cfg.max_client_conn}",
        f"max_db_connections = {cfg.max_db_connections}",
        f"server_idle_timeout = {cfg.server_idle_timeout_s}",
        f"ignore_startup_parameters = {','.join(IGNORE_STARTUP_PARAMETERS)}",
        ";; The role may read SHOW POOLS / SHOW STATS on the admin console (database 'pgbouncer').",
        f"admin_users = {cfg.role}",
        f"stats_users = {cfg.role}",
        ";; In the foreground under ragperf: no pidfile, and the log goes to stderr, which ragperf appends to",
        f";; {LOG}. An app that connects for every request would flood it with connection lines.",
        "pidfile =",
        "logfile =",
        "syslog = 0",
        "log_connections = 0",
        "log_disconnections = 0",
    ]
    return "\n".join(lines) + "\n"


# -- credentials ---------------------------------------------------------------------------------------


def auth_line(role: str, verifier: str) -> str:
    """One userlist.txt line, ``"role" "SCRAM-SHA-256$..."`` with double quotes inside doubled.

    Raises:
        ValueError: ``role`` is empty, longer than 63 bytes or holds a control character, or ``verifier`` is not a
            SCRAM-SHA-256 verifier (an MD5 hash or a plain password is refused; the message never shows it).
    """
    if not isinstance(role, str) or not role or len(role.encode()) > 63 or any(ord(ch) < 32 for ch in role):
        raise ValueError(f"role: must be 1-63 bytes without control characters, not {role!r}")
    if not isinstance(verifier, str) or not verifier.startswith(SCRAM_PREFIX) or not _VERIFIER_RE.match(verifier):
        kind = "an MD5 hash" if isinstance(verifier, str) and verifier.startswith("md5") else "something else"
        raise ValueError(
            f"verifier: the auth file takes a SCRAM-SHA-256 verifier (SCRAM-SHA-256$<iterations>:<salt>$<stored "
            f"key>:<server key>, as pg_authid.rolpassword holds it), not {kind}; the role's password must be set "
            "with password_encryption = 'scram-sha-256'"
        )

    def quoted(text: str) -> str:
        return '"' + text.replace('"', '""') + '"'

    return f"{quoted(role)} {quoted(verifier)}"


def scram_verifier(conn: psycopg.Connection, role: str) -> str:
    """The SCRAM-SHA-256 verifier of ``role`` as PostgreSQL stores it (``pg_authid.rolpassword``).

    ``conn`` must be a superuser's: pg_authid is readable by superusers only.

    Raises:
        PgBouncerError: ``conn`` may not read pg_authid, the role does not exist, has no password, or its password
            is not stored as SCRAM-SHA-256 (the message never shows what is stored).
    """
    try:
        row = conn.execute("SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = %s", (role,)).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        raise PgBouncerError(
            f"reading {role!r}'s verifier from pg_authid needs a superuser connection; this one is {conn.info.user!r}'s"
        ) from None
    if row is None:
        raise PgBouncerError(f"role {role!r} does not exist on the server")
    stored = row[0]
    if stored is None:
        raise PgBouncerError(f"role {role!r} has no password: set one (with password_encryption = 'scram-sha-256')")
    if not stored.startswith(SCRAM_PREFIX):
        kind = "an MD5 hash" if stored.startswith("md5") else "not a SCRAM-SHA-256 verifier"
        raise PgBouncerError(
            f"role {role!r}'s password is stored as {kind}: set it again with password_encryption = "
            "'scram-sha-256' (SCRAM pass-through through PgBouncer needs the server's SCRAM verifier)"
        )
    return str(stored)


def write_auth_file(state_dir: Path, role: str, verifier: str) -> Path:
    """Write ``state_dir``/userlist.txt with ``role``'s verifier (:func:`auth_line`), 0600 from the start and
    atomically; given to the user PgBouncer runs as when it starts. Creates ``state_dir`` when missing. Returns
    the file.

    A running PgBouncer reads the new file only when it is restarted or reloaded.
    """
    line = auth_line(role, verifier)
    state_dir = Path(state_dir).absolute()
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / AUTH_FILE
    procs.write_atomic(path, line + "\n", 0o600)  # a start gives the state directory to the user PgBouncer runs as
    return path


def _passfile_field(name: str, value: object) -> str:
    text = str(value)
    if isinstance(value, bool) or not text or any(ch in text for ch in "\n\r\0"):
        shown = "(hidden)" if name == "password" else repr(value)
        raise ValueError(f"{name}: a passfile field must be non-empty and on one line, not {shown}")
    return text.replace("\\", "\\\\").replace(":", "\\:")


def write_passfile(path: Path, entries: Iterable[tuple[str, int | str, str, str, str]]) -> Path:
    """Write a libpq passfile (``host:port:dbname:user:password`` lines; ``*`` matches anything) at ``path``, 0600
    from the start and atomically, ':' and '\\' escaped as libpq wants. Returns the file.

    Raises:
        ValueError: an entry does not have five fields, or a field is empty or holds a line break.
    """
    lines = []
    for entry in entries:
        if len(entry) != 5:
            raise ValueError(f"entries: each is (host, port, dbname, user, password), not {len(entry)} field(s)")
        names = ("host", "port", "dbname", "user", "password")
        lines.append(":".join(_passfile_field(name, value) for name, value in zip(names, entry, strict=True)))
    path = Path(path).absolute()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    procs.write_atomic(path, "".join(f"{line}\n" for line in lines), 0o600)
    return path


# -- the server ----------------------------------------------------------------------------------------


class PgBouncer(procs.Server):
    """One ``pgbouncer`` whose files all live in ``state_dir``; stopped by its recorded PID (SIGTERM: at once,
    its clients lose their connections).

    A start needs the auth file (:func:`write_auth_file`) with the configured role's verifier. A start with the
    configuration it already runs with does nothing; another configuration restarts it. It counts once its port
    accepts TCP connections and its log says it listens there (it opens the port only after its configuration
    and auth file loaded).
    """

    NAME = "pgbouncer"
    WHAT = "PgBouncer"
    RECORD = RECORD
    LOG = LOG
    CONFIG = PgBouncerConfig
    ERROR = PgBouncerError
    TIMEOUT = 15.0
    STOP_TIMEOUT = 10.0

    @property
    def conf_path(self) -> Path:
        return self.state_dir / CONF

    @property
    def auth_path(self) -> Path:
        return self.state_dir / AUTH_FILE

    def start(self, cfg: PgBouncerConfig) -> procs.Proc:
        """Start PgBouncer with ``cfg`` and return once it listens (see :meth:`ragperf.core.procs.Server.start`).

        Raises:
            PgBouncerError: the auth file is missing, not 0600, or holds no verifier for ``cfg.role``; the user it
                runs as cannot reach the state directory; or what :meth:`ragperf.core.procs.Server.start` raises.
        """
        self._check_state_dir(cfg)
        self._check_auth_file(cfg.role)
        user = self.user(cfg)
        if user is not None:
            _check_reachable(self.state_dir, user)
        return super().start(cfg)

    def _check_auth_file(self, role: str) -> None:
        path = self.auth_path
        hint = f"write it first with write_auth_file({str(self.state_dir)!r}, {role!r}, scram_verifier(conn, {role!r}))"
        try:
            st = path.stat()
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PgBouncerError(f"no auth file {path}: {hint}") from None
        if stat.S_IMODE(st.st_mode) != 0o600:
            raise PgBouncerError(
                f"the auth file {path} is mode {stat.S_IMODE(st.st_mode):04o}; it holds a SCRAM verifier and must be "
                f"0600 ({hint})"
            )
        prefix = '"' + role.replace('"', '""') + '" "' + SCRAM_PREFIX  # as auth_line() writes it
        if not any(line.startswith(prefix) for line in text.splitlines()):
            raise PgBouncerError(f"the auth file {path} holds no SCRAM verifier for role {role!r}: {hint}")

    def files(self, cfg: PgBouncerConfig) -> dict[str, str | None]:
        return {CONF: render(cfg)}

    def argv(self, cfg: PgBouncerConfig) -> list[str]:
        return [PGBOUNCER_BIN, str(self.conf_path)]

    def env(self, cfg: PgBouncerConfig) -> dict[str, str]:
        # Not ours: whatever secrets this process's environment holds stay out of PgBouncer's.
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

    def user(self, cfg: PgBouncerConfig) -> str | None:
        return cfg.run_as

    def awaited(self, cfg: PgBouncerConfig) -> str:
        return f"listen on {cfg.listen_host}:{cfg.listen_port}"

    def ready(self, cfg: PgBouncerConfig) -> str | None:
        try:
            with socket.create_connection((cfg.connect_host, cfg.listen_port), timeout=0.5):
                pass
        except OSError as exc:
            return f"TCP connect: {exc.strerror or exc}"
        if f"listening on {cfg.listen_host}:{cfg.listen_port}" not in self._log_since_start():
            return "its log does not say it listens there yet"
        return None

    def _log_since_start(self) -> str:
        """The log from this start's marker line on (its last 64 KiB)."""
        try:
            with self.log_path.open("rb") as log_file:
                log_file.seek(max(0, log_file.seek(0, os.SEEK_END) - 65536))
                text = log_file.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        marker = text.rfind("ragperf starts: ")
        return text[marker:] if marker >= 0 else text

    def clear_state(self) -> None:
        """Remove the files ragperf and PgBouncer made in the state directory (the configuration, the auth file,
        the log), and the directory when that leaves it empty; nothing else."""
        for name in OWN_FILES:
            (self.state_dir / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()  # only if now empty

    # -- the admin console -------------------------------------------------------------------------

    def show(self, what: str, *, user: str, passfile: Path) -> pd.DataFrame:
        """``SHOW <what>`` on the running PgBouncer's admin console, as ``user`` (an admin or stats user) with the
        password from ``passfile``: one row per row it answers, its columns as named.

        The console speaks only the simple query protocol: psycopg 3 sends a query without parameters, in text
        format, with preparing off, as a simple query (``PQsendQuery``), and autocommit keeps it from sending BEGIN.

        Raises:
            ValueError: ``what`` is not one of :data:`SHOW_COMMANDS`.
            PgBouncerError: none runs, or the console refused the connection or the command.
        """
        command = str(what).upper()
        if command not in SHOW_COMMANDS:
            raise ValueError(f"what: must be one of {', '.join(SHOW_COMMANDS)}, not {what!r}")
        cfg = self.config
        if cfg is None:
            raise PgBouncerError(f"no PgBouncer runs from {self.state_dir}")
        dsn = conninfo.make_conninfo(cfg.dsn(user=user, passfile=passfile), dbname=ADMIN_DB)
        try:
            with psycopg.connect(dsn, autocommit=True, prepare_threshold=None, connect_timeout=5) as conn:
                cur = conn.execute(f"SHOW {command}", prepare=False)
                columns = [col.name for col in cur.description or ()]
                rows = cur.fetchall()
        except psycopg.Error as exc:
            raise PgBouncerError(
                f"SHOW {command} on PgBouncer's admin console ({cfg.connect_host}:{cfg.listen_port}, user {user!r}) "
                f"failed: {str(exc).strip()}"
            ) from None
        import pandas as pd

        return pd.DataFrame(rows, columns=columns)

    def pools(self, *, user: str, passfile: Path) -> pd.DataFrame:
        """``SHOW POOLS``: one row per (database, user) pool, its client and server connections by state."""
        return self.show("POOLS", user=user, passfile=passfile)

    def stats(self, *, user: str, passfile: Path) -> pd.DataFrame:
        """``SHOW STATS``: one row per database, its transaction, query and traffic totals and averages."""
        return self.show("STATS", user=user, passfile=passfile)


def _check_reachable(state_dir: Path, user: str) -> None:
    """``user`` must be able to traverse every directory above ``state_dir`` (which it is given)."""
    entry = pwd.getpwnam(user)
    directory = procs.unreachable(state_dir.parent, entry.pw_uid, os.getgrouplist(user, entry.pw_gid))
    if directory is not None:
        raise PgBouncerError(
            f"state_dir: PgBouncer runs as {user!r} (uid {entry.pw_uid}), who cannot enter {directory} (mode "
            f"{stat.S_IMODE(directory.stat().st_mode):04o}); put the state directory elsewhere or chmod o+x {directory}"
        )


def connect_times(dsn: str, n: int) -> list[float]:
    """The seconds each of ``n`` sequential connections to ``dsn`` took: connect, ``SELECT 1``, close (what an
    app that connects for every request pays, with or without PgBouncer)."""
    check_int("n", n, 1, 1_000_000)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT 1").fetchone()
        times.append(time.perf_counter() - started)
    return times


# -- the change ----------------------------------------------------------------------------------------


def plan(current: PgBouncerConfig | None, desired: PgBouncerConfig | None) -> list[Change]:
    """The change that takes PgBouncer from ``current`` to ``desired`` (None: not running); none when equal."""
    if current == desired:
        return []
    if desired is None:
        assert current is not None
        reason = f"stop PgBouncer on {current.url} and remove its files (its clients lose their connections)"
        details: dict[str, Any] = {"action": "stop", "url": current.url}
    elif current is None:
        reason = (
            f"start PgBouncer on {desired.url} in front of PostgreSQL {desired.server_host}:{desired.server_port} "
            f"({desired.pool_mode} pooling, {desired.default_pool_size} server connections per database and user, "
            f"up to {desired.max_client_conn} clients): a client's connect no longer starts a PostgreSQL backend"
        )
        details = {"action": "start", "url": desired.url}
    else:
        diff = config_diff(current, desired)
        reason = f"restart PgBouncer: {diff_text(diff)} (its clients lose their connections and reconnect)"
        details = {"action": "restart", "url": desired.url, "diff": diff}
    return [Change.of_config(KIND, CHANGE_NAME, current, desired, reason, details)]


class PgBouncerApplier(procs.ServerApplier):
    """Makes and undoes ``pgbouncer`` changes: starts (or restarts) PgBouncer with ``after``; undo brings back
    ``before``, or stops PgBouncer and clears its files when ``before`` is None (see
    :class:`ragperf.core.procs.ServerApplier`). The auth file must be written before (:func:`write_auth_file`)."""

    kind = KIND
    SERVER = PgBouncer
    TIMEOUT = 20.0
