"""PgBouncer in front of a real PostgreSQL 18: SCRAM pass-through, pooling, secrets kept out of sight, the admin
console, bad input, stop by PID and the plan (real pgbouncer, real cluster; nothing mocked)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from ragperf.core import procs
from ragperf.lab import labdb
from ragperf.systems import pgbouncer
from ragperf.systems.pgbouncer import (
    AUTH_FILE,
    PgBouncer,
    PgBouncerApplier,
    PgBouncerConfig,
    PgBouncerError,
    auth_line,
    connect_times,
    plan,
    render,
    scram_verifier,
    write_auth_file,
    write_passfile,
)

pytestmark = pytest.mark.skipif(not Path(pgbouncer.PGBOUNCER_BIN).exists(), reason="pgbouncer is not installed")

ROLE = "pool_app"
DBNAME = "pool_db"
POOL_SIZE = 3
APP_NAME = "ragperf-test-via-pgbouncer"


@dataclass(frozen=True)
class Env:
    """The cluster, the role's password and verifier, the passfiles and a base directory for state dirs."""

    port: int
    superuser_password: str
    password: str
    verifier: str
    base: Path
    passfile: Path  # the right password, for any host
    wrong_passfile: Path

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(labdb.dsn(self.port, labdb.SUPERUSER, self.superuser_password, dbname="postgres"),
                               autocommit=True)  # fmt: skip

    def direct_dsn(self) -> str:
        return f"{labdb.dsn(self.port, ROLE, dbname=DBNAME)} passfile={self.passfile}"

    def cfg(self, name: str, **kw) -> PgBouncerConfig:
        return PgBouncerConfig(**{"listen_port": procs.free_port(), "server_host": "127.0.0.1",
                                  "server_port": self.port, "dbname": DBNAME, "role": ROLE,
                                  "state_dir": self.base / name, "default_pool_size": POOL_SIZE,
                                  "run_as": labdb.run_as_user(), **kw})  # fmt: skip


@pytest.fixture(scope="module")
def env(embedded_cluster) -> Iterator[Env]:
    """A SCRAM role owning a database on the module's cluster; passfiles with its right and a wrong password."""
    base = Path(tempfile.mkdtemp(prefix="ragperf-test-pgbouncer-", dir="/var/tmp"))
    base.chmod(0o755)  # PgBouncer runs as the unprivileged service user when we are root
    password = "pw:" + os.urandom(9).hex() + "\\end"  # ':' and '\' must be escaped in a passfile
    try:
        with psycopg.connect(labdb.dsn(embedded_cluster.port, labdb.SUPERUSER, embedded_cluster.password,
                                       dbname="postgres"), autocommit=True) as conn:  # fmt: skip
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(ROLE), sql.Literal(password))
            )
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(DBNAME), sql.Identifier(ROLE)))
            verifier = scram_verifier(conn, ROLE)
        secrets_dir = base / "secrets"
        yield Env(
            port=embedded_cluster.port,
            superuser_password=embedded_cluster.password,
            password=password,
            verifier=verifier,
            base=base,
            passfile=write_passfile(secrets_dir / "right", [("*", "*", "*", ROLE, password)]),
            wrong_passfile=write_passfile(secrets_dir / "wrong", [("*", "*", "*", ROLE, password + "x")]),
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def bouncer(env: Env) -> Iterator[tuple[PgBouncer, PgBouncerConfig]]:
    """One PgBouncer in front of the cluster for the module's tests, stopped and cleared at the end."""
    cfg = env.cfg("main")
    write_auth_file(cfg.state_dir, ROLE, env.verifier)
    server = PgBouncer(cfg.state_dir)
    try:
        server.start(cfg)
        yield server, cfg
    finally:
        server.stop(timeout=5)
        server.clear_state()


def _backend(dsn: str) -> tuple[str, int, str, int]:
    """One connection's (current_user, backend PID, backend start, client port as the server sees it)."""
    with psycopg.connect(dsn, application_name=APP_NAME) as conn:
        row = conn.execute("SELECT current_user, pg_backend_pid(), backend_start::text, inet_client_port() "
                           "FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()  # fmt: skip
    assert row is not None
    return row


# -- 1. through PgBouncer, reusing server connections ----------------------------------------------------------


def test_connects_through_pgbouncer_with_scram_pass_through(env: Env, bouncer):
    server, cfg = bouncer
    dsn = cfg.dsn(user=ROLE, passfile=env.passfile)
    assert "password" not in dsn and str(env.passfile) in dsn
    with psycopg.connect(dsn, application_name=APP_NAME) as conn:
        user, pid, port = conn.execute("SELECT current_user, pg_backend_pid(), inet_client_port()").fetchone()
        with env.admin() as admin:  # while the client is connected: the server's view of its backend
            activity = admin.execute(
                "SELECT usename, application_name, client_port FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
        servers = server.show("SERVERS", user=ROLE, passfile=env.passfile)
    assert user == ROLE
    assert activity == (ROLE, APP_NAME, port)
    # The backend's client is one of PgBouncer's server connections: its local port and the backend's PID.
    ours = servers[(servers["remote_pid"] == pid)]
    assert len(ours) == 1 and int(ours["local_port"].iloc[0]) == port and ours["database"].iloc[0] == DBNAME


def test_sequential_connections_reuse_server_connections(env: Env, bouncer):
    _, cfg = bouncer
    via = {_backend(cfg.dsn(user=ROLE, passfile=env.passfile))[1:3] for _ in range(50)}
    direct = {_backend(env.direct_dsn())[1:3] for _ in range(50)}
    assert 1 <= len(via) <= POOL_SIZE  # (PID, start) of the backends: PgBouncer reused them
    assert len(direct) == 50  # every direct connection forked a backend of its own
    servers = PgBouncer(cfg.state_dir).show("SERVERS", user=ROLE, passfile=env.passfile)
    assert 1 <= (servers["database"] == DBNAME).sum() <= POOL_SIZE  # the server connections it keeps open


def test_connect_times_measures_each_connection(env: Env, bouncer):
    _, cfg = bouncer
    times = connect_times(cfg.dsn(user=ROLE, passfile=env.passfile), 5)
    assert len(times) == 5 and all(t > 0 for t in times)
    with pytest.raises(ValueError, match="n: must be a whole number"):
        connect_times(cfg.dsn(user=ROLE, passfile=env.passfile), 0)


def _startup_answer(cfg: PgBouncerConfig, **params: str) -> bytes:
    """The first message type PgBouncer answers a startup packet with (b"R": authentication asked, b"E": error)."""
    body = struct.pack("!i", 196608) + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in params.items())
    packet = struct.pack("!i", len(body) + 5) + body + b"\0"
    with socket.create_connection((cfg.connect_host, cfg.listen_port), timeout=5) as sock:
        sock.sendall(packet)
        return sock.recv(1)


def test_ignored_startup_parameter_is_ignored_and_others_refused(bouncer):
    _, cfg = bouncer
    base = {"user": ROLE, "database": DBNAME}
    assert _startup_answer(cfg, **base, extra_float_digits="3") == b"R"
    assert _startup_answer(cfg, **base, some_unknown_parameter="1") == b"E"


# -- 2. a wrong password -----------------------------------------------------------------------------------------


def test_wrong_password_is_refused_and_right_one_still_works(env: Env, bouncer):
    _, cfg = bouncer
    with pytest.raises(psycopg.OperationalError, match="password authentication failed|SASL authentication failed"):
        psycopg.connect(cfg.dsn(user=ROLE, passfile=env.wrong_passfile), connect_timeout=5).close()
    assert _backend(cfg.dsn(user=ROLE, passfile=env.passfile))[0] == ROLE


# -- 3. secrets --------------------------------------------------------------------------------------------------


def test_auth_file_holds_the_verifier_and_no_password_is_anywhere(env: Env, bouncer):
    server, cfg = bouncer
    _backend(cfg.dsn(user=ROLE, passfile=env.passfile))  # a login has been logged (if anything were)
    auth = cfg.state_dir / AUTH_FILE
    st = auth.stat()
    user = labdb.run_as_user()
    assert st.st_mode & 0o777 == 0o600
    assert st.st_uid == (pwd.getpwnam(user).pw_uid if user else os.geteuid())
    text = auth.read_text()
    assert text == f'"{ROLE}" "{env.verifier}"\n' and env.verifier.startswith("SCRAM-SHA-256$4096:")
    proc = server.proc
    assert proc is not None
    if user is not None:  # PgBouncer refuses root: it runs as the service user
        uids = next(
            line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if line.startswith("Uid")
        )
        assert uids.split()[1:] == [str(pwd.getpwnam(user).pw_uid)] * 4
    secret = env.password.encode()
    for path in cfg.state_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    record = server.record_path.read_text()
    assert env.verifier not in record and env.password not in record and "SCRAM" not in record
    assert env.verifier not in server.log_path.read_text()
    assert json.loads(record)["proc"]["argv"] == [pgbouncer.PGBOUNCER_BIN, str(cfg.state_dir / "pgbouncer.ini")]
    assert secret not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    assert secret not in Path(f"/proc/{proc.pid}/environ").read_bytes()
    assert oct(env.passfile.stat().st_mode & 0o777) == oct(0o600)


def test_passfile_escapes_colon_and_backslash(env: Env):
    path = write_passfile(
        env.base / "secrets" / "escaped", [("h:1", 5432, "d\\b", "u", "p:w\\x"), ("*", "*", "*", "u", "q")]
    )
    assert path.read_text() == "h\\:1:5432:d\\\\b:u:p\\:w\\\\x\n*:*:*:u:q\n"
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ValueError, match=r"password: .*\(hidden\)") as err:
        write_passfile(env.base / "secrets" / "bad", [("*", "*", "*", "u", "two\nlines")])
    assert "two" not in str(err.value)


# -- 4. the admin console ----------------------------------------------------------------------------------------


def test_show_pools_and_stats(env: Env, bouncer):
    server, cfg = bouncer
    _backend(cfg.dsn(user=ROLE, passfile=env.passfile))
    pools = server.pools(user=ROLE, passfile=env.passfile)
    row = pools[(pools["database"] == DBNAME) & (pools["user"] == ROLE)]
    assert len(row) == 1 and row["pool_mode"].iloc[0] == "session"
    assert {"cl_active", "cl_waiting", "sv_active", "sv_idle", "maxwait"} <= set(pools.columns)
    stats = server.stats(user=ROLE, passfile=env.passfile)
    assert DBNAME in set(stats["database"]) and "total_xact_count" in stats.columns
    with pytest.raises(PgBouncerError, match="SHOW POOLS .* failed"):
        server.pools(user=ROLE, passfile=env.wrong_passfile)
    with pytest.raises(ValueError, match="what: must be one of"):
        server.show("POOLS; SHUTDOWN", user=ROLE, passfile=env.passfile)


# -- 5. bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("pool_mode", "statement", "pool_mode: 'statement' is refused .* 'session' .* 'transaction'"),
        ("pool_mode", "sessions", "pool_mode: must be one of session, transaction, not 'sessions'"),
        ("listen_port", 0, "listen_port: must be a whole number from 1 to 65535, not 0"),
        ("listen_port", 70000, "listen_port: must be a whole number from 1 to 65535, not 70000"),
        ("server_port", "5432", "server_port: must be a whole number from 1 to 65535, not '5432'"),
        ("server_port", True, "server_port: must be a whole number from 1 to 65535, not True"),
        ("role", "bad role", "role: must be 1-63 letters, digits or '_' .*, not 'bad role'"),
        ("role", "a,b", "role: must be"),
        ("role", "", "role: must be"),
        ("dbname", "pgbouncer", "dbname: 'pgbouncer' is PgBouncer's admin console"),
        ("dbname", "x" * 64, "dbname: must be"),
        ("server_host", "no host", "server_host: 'no host' is neither an IPv4 address nor a host name"),
        ("server_host", "999.1.1.1", "server_host: .* neither"),
        ("listen_host", "localhost", "listen_host: 'localhost' is not an IPv4 address"),
        ("default_pool_size", 0, "default_pool_size: must be a whole number from 1 to 10000, not 0"),
        ("max_db_connections", -1, "max_db_connections: must be a whole number from 0"),
        ("state_dir", "/var/tmp/with space", "state_dir: '/var/tmp/with space' may hold only"),
    ],
)
def test_bad_config_is_refused_naming_the_field(field, value, message):
    good = {"listen_port": 6432, "server_host": "db.example.com", "server_port": 5432, "dbname": DBNAME,
            "role": ROLE, "state_dir": Path("/var/tmp/pgb")}  # fmt: skip
    PgBouncerConfig(**good)
    with pytest.raises(ValueError, match=message):
        PgBouncerConfig(**{**good, field: value})


def test_own_address_as_server_is_refused():
    with pytest.raises(ValueError, match="server_port: 127.0.0.1:6432 is PgBouncer's own address"):
        PgBouncerConfig(listen_port=6432, server_host="127.0.0.1", server_port=6432, dbname=DBNAME, role=ROLE,
                        state_dir=Path("/var/tmp/pgb"), listen_host="0.0.0.0")  # fmt: skip


def test_render_and_dsn():
    cfg = PgBouncerConfig(listen_port=6432, server_host="10.0.0.5", server_port=5433, dbname=DBNAME, role=ROLE,
                          state_dir=Path("/var/tmp/pgb"), pool_mode="transaction", max_db_connections=50)  # fmt: skip
    lines = render(cfg).splitlines()
    for line in (
        f"{DBNAME} = host=10.0.0.5 port=5433 dbname={DBNAME}",
        "listen_addr = 127.0.0.1",
        "listen_port = 6432",
        "unix_socket_dir =",
        "auth_type = scram-sha-256",
        "auth_file = /var/tmp/pgb/userlist.txt",
        "pool_mode = transaction",
        "default_pool_size = 40",
        "max_client_conn = 1000",
        "max_db_connections = 50",
        "server_idle_timeout = 600",
        "ignore_startup_parameters = extra_float_digits",
        f"admin_users = {ROLE}",
        f"stats_users = {ROLE}",
        "pidfile =",
        "logfile =",
        "log_connections = 0",
        "log_disconnections = 0",
    ):
        assert line in lines
    assert cfg.url == f"postgresql://127.0.0.1:6432/{DBNAME}"
    assert cfg.dsn(user=ROLE, passfile=Path("/a b/pass")) == (
        f"host=127.0.0.1 port=6432 dbname={DBNAME} user={ROLE} passfile='/a b/pass'"
    )
    assert cfg.dsn(user=ROLE) == f"host=127.0.0.1 port=6432 dbname={DBNAME} user={ROLE}"


def test_auth_line_refuses_what_is_not_a_scram_verifier(env: Env):
    assert auth_line('we"ird', env.verifier) == f'"we""ird" "{env.verifier}"'
    for bad in ("md5" + "0" * 32, "plain-password", "SCRAM-SHA-256$4096:salt", ""):
        with pytest.raises(ValueError, match="verifier: the auth file takes a SCRAM-SHA-256 verifier") as err:
            auth_line(ROLE, bad)
        assert not bad or bad not in str(err.value)
    with pytest.raises(ValueError, match="role: must be 1-63 bytes"):
        auth_line("", env.verifier)


def test_scram_verifier_errors(env: Env):
    with env.admin() as admin:
        admin.execute("CREATE ROLE pool_nopw LOGIN")
        admin.execute("SET password_encryption = 'md5'")
        admin.execute("CREATE ROLE pool_md5 LOGIN PASSWORD 'md5-only'")
        try:
            with pytest.raises(PgBouncerError, match="role 'pool_nopw' has no password"):
                scram_verifier(admin, "pool_nopw")
            with pytest.raises(PgBouncerError, match="role 'pool_md5'.s password is stored as an MD5 hash") as err:
                scram_verifier(admin, "pool_md5")
            assert "md5-only" not in str(err.value)
            with pytest.raises(PgBouncerError, match="role 'pool_none' does not exist"):
                scram_verifier(admin, "pool_none")
        finally:
            admin.execute("DROP ROLE IF EXISTS pool_nopw")
            admin.execute("DROP ROLE IF EXISTS pool_md5")
    with psycopg.connect(env.direct_dsn(), autocommit=True) as conn, pytest.raises(PgBouncerError, match="superuser"):
        scram_verifier(conn, ROLE)


def _assert_nothing_runs(server: PgBouncer, cfg: PgBouncerConfig) -> None:
    assert not server.running and server.proc is None and not server.record_path.exists()
    assert procs.port_is_free(cfg.listen_port, cfg.listen_host)


def test_start_without_a_good_auth_file_is_refused(env: Env):
    cfg = env.cfg("noauth")
    server = PgBouncer(cfg.state_dir)
    try:
        with pytest.raises(PgBouncerError, match=r"no auth file .*userlist.txt: write it first with write_auth_file"):
            server.start(cfg)
        _assert_nothing_runs(server, cfg)
        write_auth_file(cfg.state_dir, "someone_else", env.verifier)
        with pytest.raises(PgBouncerError, match=f"holds no SCRAM verifier for role '{ROLE}'"):
            server.start(cfg)
        write_auth_file(cfg.state_dir, ROLE, env.verifier).chmod(0o644)
        with pytest.raises(PgBouncerError, match="is mode 0644; it holds a SCRAM verifier and must be 0600"):
            server.start(cfg)
        _assert_nothing_runs(server, cfg)
    finally:
        server.stop(timeout=5)
        server.clear_state()


@pytest.mark.skipif(labdb.run_as_user() is None, reason="PgBouncer runs as ourselves when we are not root")
def test_unreachable_state_dir_is_refused(env: Env):
    locked = env.base / "locked"
    locked.mkdir(mode=0o700)
    cfg = env.cfg("locked/pgb")
    write_auth_file(cfg.state_dir, ROLE, env.verifier)
    server = PgBouncer(cfg.state_dir)
    try:
        with pytest.raises(PgBouncerError, match=f"state_dir: PgBouncer runs as 'ragperf' .* cannot enter {locked} "
                                                 r"\(mode 0700\)"):  # fmt: skip
            server.start(cfg)
        _assert_nothing_runs(server, cfg)
    finally:
        server.stop(timeout=5)
        server.clear_state()


# -- 6. stop, plan and the applier --------------------------------------------------------------------------------


def test_stop_by_pid_and_applier_start_restart_undo(env: Env):
    cfg = env.cfg("applied")
    write_auth_file(cfg.state_dir, ROLE, env.verifier)
    server = PgBouncer(cfg.state_dir)
    applier = PgBouncerApplier(timeout=10)
    try:
        [start] = plan(None, cfg)
        assert (start.kind, start.name, start.before, start.details["action"]) == ("pgbouncer", "pooler", None, "start")
        applier.apply([start])
        first = server.proc
        assert first is not None and procs.is_alive(first) and server.config == cfg
        applier.apply([start])  # idempotent: the same process keeps running
        assert server.proc == first

        bigger = replace(cfg, default_pool_size=POOL_SIZE + 2)
        [restart] = plan(cfg, bigger)
        assert restart.details == {"action": "restart", "url": cfg.url, "diff": {"default_pool_size": [3, 5]}}
        applier.apply([restart])
        second = server.proc
        assert second is not None and second.pid != first.pid and not procs.is_alive(first)
        assert server.config == bigger
        assert _backend(bigger.dsn(user=ROLE, passfile=env.passfile))[0] == ROLE

        applier.undo([restart])
        assert server.config == cfg and not procs.is_alive(second)
        assert plan(cfg, cfg) == [] and plan(None, None) == []
        [stop] = plan(cfg, None)
        assert (stop.before, stop.after, stop.details["action"]) == (cfg.to_dict(), None, "stop")

        third = server.proc
        assert third is not None
        assert server.stop() is True
        assert not procs.is_alive(third)
        assert server.stop() is False and server.status()["running"] is False
        assert procs.port_is_free(cfg.listen_port, cfg.listen_host)

        applier.apply([start])
        applier.undo([start])  # undoing a start stops it and clears its files
        assert not server.running and not cfg.state_dir.exists()
    finally:
        server.stop(timeout=5)
        server.clear_state()
