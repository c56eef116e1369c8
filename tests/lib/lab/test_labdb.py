"""The lab's PostgreSQL: connection strings, the app's role and database, readiness and shutdown.

Bootstrap runs against the module's own embedded cluster; readiness and shutdown against a second
cluster this module starts and stops itself.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from ragperf.core import procs
from ragperf.lab import labdb, pginstall


def test_dsn_shows_no_password_unless_given():
    shown = labdb.dsn(5433, "sakana")
    assert shown == f"host=127.0.0.1 port=5433 dbname={labdb.DATABASE} user=sakana"
    assert "password" not in shown
    assert labdb.dsn(5433, "sakana", "s3cret", dbname="postgres") == (
        "host=127.0.0.1 port=5433 dbname=postgres user=sakana password=s3cret"
    )


def test_bootstrap_creates_the_app_role_its_database_and_pgvector_idempotently(embedded_cluster):
    creds = labdb.Credentials(embedded_cluster.password, secrets.token_urlsafe(16))
    labdb.bootstrap(embedded_cluster.port, creds)
    labdb.bootstrap(embedded_cluster.port, creds)  # a second run changes nothing and does not fail
    admin = labdb.dsn(embedded_cluster.port, labdb.SUPERUSER, creds.superuser_password, dbname="postgres")
    with psycopg.connect(admin) as conn:
        role = conn.execute(
            "SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = %s", (labdb.APP_ROLE,)
        ).fetchone()
        owner = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (labdb.DATABASE,)
        ).fetchone()
        databases = conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (labdb.DATABASE,)).fetchone()
    assert role == (True, False)
    assert owner == (labdb.APP_ROLE,)
    assert databases == (1,)
    with psycopg.connect(labdb.dsn(embedded_cluster.port, labdb.APP_ROLE, creds.app_password)) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (labdb.APP_ROLE, labdb.DATABASE)
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone() == (1,)
    assert labdb.loaded_chunks(embedded_cluster.port, creds) == 0  # no LangChain schema yet


def test_the_app_role_needs_its_password(embedded_cluster):
    creds = labdb.Credentials(embedded_cluster.password, secrets.token_urlsafe(16))
    labdb.bootstrap(embedded_cluster.port, creds)  # the role exists already: its password is not changed
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(labdb.dsn(embedded_cluster.port, labdb.APP_ROLE, "not-the-password")).close()


@pytest.fixture(scope="module")
def own_cluster():
    """A second cluster, initialised but not started: the tests start and stop it."""
    if pginstall.installed() is None:
        pytest.skip("the embedded PostgreSQL is not installed (make setup)")
    base = Path(tempfile.mkdtemp(prefix="ragperf-test-labdb-", dir="/var/tmp"))
    base.chmod(0o755)  # the unprivileged server user must reach its data directory
    password = secrets.token_urlsafe(16)
    labdb.initdb(base / "pgdata", password)
    try:
        yield base, password
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_start_waits_until_ready_and_stop_shuts_the_server_down(own_cluster):
    base, password = own_cluster
    port = procs.free_port()
    proc = labdb.start(base / "pgdata", port, base / "run", base / "postgres.log")
    try:
        labdb.wait_ready(proc, port, timeout=5)  # already accepting: returns at once
        with psycopg.connect(labdb.dsn(port, labdb.SUPERUSER, password, dbname="postgres")) as conn:
            assert conn.execute("SELECT current_setting('port')").fetchone() == (str(port),)
    finally:
        stopped = labdb.stop(proc)
    assert stopped is True
    assert "received fast shutdown request" in (base / "postgres.log").read_text()  # not killed: a clean stop
    assert not procs.is_alive(proc)
    assert procs.port_is_free(port)
    assert labdb.stop(proc) is False  # not running any more
    with pytest.raises(procs.ProcessError, match="exited"):  # a dead server fails at once, not at the deadline
        labdb.wait_ready(proc, port, timeout=30)


def test_wait_ready_times_out_when_nothing_listens():
    with pytest.raises(procs.ProcessError, match="did not accept connections within"):
        labdb.wait_ready(None, procs.free_port(), timeout=0.3)
