"""Fixtures of the library's tests: a throwaway cluster of each PostgreSQL this machine has."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from ragperf.core import procs
from ragperf.lab import labdb, pginstall

PASSWORD = "pgtune-test-only"
DEBIAN_15 = Path("/usr/lib/postgresql/15/bin")


class Server:
    """A throwaway cluster, restartable, that counts its restarts."""

    password = PASSWORD

    def __init__(self, base: Path, major: int) -> None:
        self.base, self.pgdata, self.port, self.major = base, base / "pgdata", procs.free_port(), major
        self.proc: procs.Proc | None = None
        self.restarts = 0

    def start(self) -> None:
        self.proc = labdb.start(self.pgdata, self.port, self.base / "sock", self.base / "postgres.log")

    def stop(self) -> None:
        if self.proc is not None:
            labdb.stop(self.proc)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
        self.restarts += 1

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(labdb.dsn(self.port, labdb.SUPERUSER, PASSWORD, dbname="postgres"), autocommit=True)


@pytest.fixture(scope="module", params=["embedded-18", "debian-15"])
def server(request) -> Server:
    """A fresh cluster of each PostgreSQL the machine has (the same tests run on both)."""
    with pytest.MonkeyPatch.context() as patch:
        if request.param == "debian-15":
            if not (DEBIAN_15 / "postgres").exists():
                pytest.skip(f"no Debian PostgreSQL 15 at {DEBIAN_15}")
            patch.setattr(pginstall, "bin_path", lambda tool, home=None: DEBIAN_15 / tool)
        elif pginstall.installed() is None:
            pytest.skip("the embedded PostgreSQL is not installed (make setup)")
        base = Path(tempfile.mkdtemp(prefix="ragperf-test-pgtune-", dir="/var/tmp"))
        base.chmod(0o755)  # the unprivileged server user must reach its data directory
        srv = Server(base, 15 if request.param == "debian-15" else 18)
        try:
            labdb.initdb(srv.pgdata, PASSWORD)
            srv.start()
            yield srv
        finally:
            srv.stop()
            shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class Cluster:
    """A fresh embedded PostgreSQL 18 cluster on a free port, its superuser's password, its directory."""

    port: int
    password: str
    base: Path


@pytest.fixture(scope="module")
def embedded_cluster() -> Iterator[Cluster]:
    """A fresh embedded PostgreSQL 18 cluster of the test module's own, stopped and removed at its end."""
    if pginstall.installed() is None:
        pytest.skip("the embedded PostgreSQL is not installed (make setup)")
    base = Path(tempfile.mkdtemp(prefix="ragperf-test-cluster-", dir="/var/tmp"))
    base.chmod(0o755)  # the unprivileged server user must reach its data directory
    password = secrets.token_urlsafe(16)
    labdb.initdb(base / "pgdata", password)
    port = procs.free_port()
    proc = labdb.start(base / "pgdata", port, base / "run", base / "postgres.log")
    try:
        yield Cluster(port, password, base)
    finally:
        labdb.stop(proc)
        shutil.rmtree(base, ignore_errors=True)
