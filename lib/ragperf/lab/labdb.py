"""The lab's PostgreSQL server: initdb, start, the LangChain schema and the corpus bulk load.

The server keeps PostgreSQL's stock settings (shared_buffers 128MB, max_connections 100 ...):
the untuned state the users have. Only where it listens is set, in an included file, so that
ALTER SYSTEM (Phase 1) still overrides everything else.

PostgreSQL refuses to run as root; when ragperf runs as root the server runs as the
unprivileged system user ``ragperf`` (created by setup), which owns the data directory.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ragperf.core import procs
from ragperf.core.progress import bar as progress_bar
from ragperf.lab import pginstall
from ragperf.systems.llm import Provider, embed
from ragperf.systems.postgres import pgmonitor

log = logging.getLogger(__name__)

SERVICE_USER = "ragperf"
DATABASE = "rag_bidding_v2"
APP_ROLE = "sakana"
SUPERUSER = "postgres"
COLLECTION = "vn_procurement_law"
LISTEN_FILE = "ragperf_listen.conf"

# As langchain-postgres creates them (EmbeddingStore / CollectionStore), embedding_length unset.
LANGCHAIN_DDL = """
CREATE TABLE IF NOT EXISTS langchain_pg_collection (
    uuid UUID NOT NULL PRIMARY KEY,
    name VARCHAR NOT NULL UNIQUE,
    cmetadata JSON
);
CREATE TABLE IF NOT EXISTS langchain_pg_embedding (
    id VARCHAR NOT NULL PRIMARY KEY,
    collection_id UUID REFERENCES langchain_pg_collection (uuid) ON DELETE CASCADE,
    embedding VECTOR,
    document VARCHAR,
    cmetadata JSONB
);
CREATE UNIQUE INDEX IF NOT EXISTS ix_langchain_pg_embedding_id ON langchain_pg_embedding (id);
CREATE INDEX IF NOT EXISTS ix_cmetadata_gin ON langchain_pg_embedding USING gin (cmetadata jsonb_path_ops);
"""


@dataclass(frozen=True)
class Credentials:
    """The lab's two roles. Passwords live only in the lab's 0600 secrets file."""

    superuser_password: str
    app_password: str


def run_as_user() -> str | None:
    """The user the server must run as: ``ragperf`` when we are root, else ourselves (None)."""
    return SERVICE_USER if os.geteuid() == 0 else None


def ensure_service_user() -> None:
    """Create the unprivileged system user that runs PostgreSQL when ragperf runs as root."""
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
        )


def _chown(path: Path) -> None:
    if (user := run_as_user()) is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def initdb(pgdata: Path, superuser_password: str) -> None:
    """Create a fresh cluster in ``pgdata`` with password authentication everywhere."""
    ensure_service_user()
    pgdata.mkdir(mode=0o700, parents=True)
    _chown(pgdata)
    pwfile = pgdata.parent / ".pwfile"
    pwfile.write_text(superuser_password + "\n")
    pwfile.chmod(0o600)
    _chown(pwfile)
    try:
        result = subprocess.run(
            [str(pginstall.bin_path("initdb")), "-D", str(pgdata), "-U", SUPERUSER, f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8"],
            capture_output=True, text=True, user=run_as_user(),
        )  # fmt: skip
    finally:
        pwfile.unlink()
    if result.returncode != 0:
        shutil.rmtree(pgdata, ignore_errors=True)
        raise RuntimeError(f"initdb failed:\n{result.stderr[-2000:]}")
    with open(pgdata / "postgresql.conf", "a") as conf:
        conf.write(f"\n# ragperf lab: where this server listens; all else is stock.\ninclude '{LISTEN_FILE}'\n")


def start(pgdata: Path, port: int, socket_dir: Path, log_path: Path) -> procs.Proc:
    """Start the postmaster on 127.0.0.1:``port`` and wait until it accepts connections."""
    socket_dir.mkdir(mode=0o700, exist_ok=True)
    _chown(socket_dir)
    listen = pgdata / LISTEN_FILE
    listen.write_text(f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{socket_dir}'\n")
    _chown(listen)
    log_path.touch()
    _chown(log_path)
    proc = procs.start(
        "postgres", [str(pginstall.bin_path("postgres")), "-D", str(pgdata)], log_path,
        user=run_as_user(), port=port,
    )  # fmt: skip
    wait_ready(proc, port)
    return proc


def wait_ready(proc: procs.Proc, port: int, timeout: float = 60.0) -> None:
    """Wait until the server accepts connections (pg_isready), failing early if it dies."""
    isready = [str(pginstall.bin_path("pg_isready")), "-h", "127.0.0.1", "-p", str(port), "-q"]
    answers = {1: "it rejects connections (starting up)", 2: "no response", 3: "pg_isready made no attempt"}

    def accepting() -> str | None:
        code = subprocess.run(isready).returncode
        return None if code == 0 else answers.get(code, f"pg_isready exited with {code}")

    procs.wait_until(accepting, timeout=timeout, what="postgres did not accept connections", proc=proc, interval=0.1)


def stop(proc: procs.Proc) -> bool:
    """Fast shutdown (SIGINT): active transactions roll back, the cluster stays consistent."""
    import signal

    return procs.stop(proc, sig=signal.SIGINT, timeout=60.0)


def dsn(port: int, user: str, password: str | None = None, dbname: str = DATABASE) -> str:
    """A libpq connection string; without ``password`` it is safe to show."""
    parts = [f"host=127.0.0.1 port={port} dbname={dbname} user={user}"]
    if password is not None:
        parts.append(f"password={password}")
    return " ".join(parts)


def bootstrap(port: int, creds: Credentials) -> None:
    """Create the app's role, its database and the pgvector extension (idempotent)."""
    admin = dsn(port, SUPERUSER, creds.superuser_password, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(APP_ROLE), sql.Literal(creds.app_password)))  # fmt: skip
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(DATABASE), sql.Identifier(APP_ROLE)))  # fmt: skip
    with psycopg.connect(dsn(port, SUPERUSER, creds.superuser_password), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def untune(port: int, creds: Credentials) -> tuple[list[str], bool]:
    """Undo any tuning a phase left behind: ALTER SYSTEM entries, ragperf's indexes, the column's
    dimension, the app role's settings. Returns what was undone and whether a restart is pending."""
    done: list[str] = []
    with psycopg.connect(dsn(port, SUPERUSER, creds.superuser_password), autocommit=True) as conn:
        rows = conn.execute(  # pg_file_settings: also entries written but not reloaded yet
            "SELECT s.name, s.context = 'postmaster' FROM pg_settings s WHERE s.pending_restart OR s.name IN "
            "(SELECT name FROM pg_file_settings WHERE sourcefile LIKE '%%postgresql.auto.conf') ORDER BY s.name"
        ).fetchall()
        auto = [name for name, _ in rows]
        pending = any(restart for _, restart in rows)
        if auto:
            conn.execute("ALTER SYSTEM RESET ALL")
            conn.execute("SELECT pg_reload_conf()")
            done.append(f"ALTER SYSTEM RESET ALL ({', '.join(auto)})")
        if conn.execute("SELECT to_regclass('langchain_pg_embedding')").fetchone()[0] is not None:
            names = [r[0] for r in conn.execute(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "WHERE i.indrelid = 'langchain_pg_embedding'::regclass AND c.relname LIKE 'ragperf%%'")]  # fmt: skip
            for name in names:
                conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(name)))
                done.append(f"DROP INDEX {name}")
            kind = conn.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'langchain_pg_embedding'::regclass AND attname = 'embedding'"
            ).fetchone()[0]
            if kind != "vector":
                conn.execute("ALTER TABLE langchain_pg_embedding ALTER COLUMN embedding TYPE vector")
                done.append(f"embedding {kind} -> vector")
        if conn.execute("SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                        "WHERE r.rolname = %s", (APP_ROLE,)).fetchone():  # fmt: skip
            conn.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(sql.Identifier(APP_ROLE)))
            done.append(f"ALTER ROLE {APP_ROLE} RESET ALL")
        done += _drop_monitoring(conn)
    return done, pending


def _drop_monitoring(conn: psycopg.Connection) -> list[str]:
    """Phase 3's database side, when no journal undid it: ragperf's monitoring schema and role (each only when its
    comment says ragperf made it) and pg_stat_statements (the untuned server has none)."""
    done = []
    schema = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s AND obj_description(oid, 'pg_namespace') "
                          "LIKE 'ragperf:%%'", (pgmonitor.SCHEMA,)).fetchone()  # fmt: skip
    if schema:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(pgmonitor.SCHEMA)))
        done.append(f"DROP SCHEMA {pgmonitor.SCHEMA}")
    role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s AND shobj_description(oid, 'pg_authid') LIKE "
                        "'ragperf:%%'", (pgmonitor.MONITOR_ROLE,)).fetchone()  # fmt: skip
    if role:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(pgmonitor.MONITOR_ROLE)))
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(
            sql.Identifier(conn.info.dbname), sql.Identifier(pgmonitor.MONITOR_ROLE)))  # fmt: skip
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(pgmonitor.MONITOR_ROLE)))
        done.append(f"DROP ROLE {pgmonitor.MONITOR_ROLE}")
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", (pgmonitor.EXTENSION,)).fetchone():
        conn.execute(sql.SQL("DROP EXTENSION {}").format(sql.Identifier(pgmonitor.EXTENSION)))
        done.append(f"DROP EXTENSION {pgmonitor.EXTENSION}")
    return done


def loaded_chunks(port: int, creds: Credentials) -> int:
    """How many chunks the lab's collection holds (0 when there is no schema yet)."""
    with psycopg.connect(dsn(port, APP_ROLE, creds.app_password)) as conn:
        if conn.execute("SELECT to_regclass('langchain_pg_embedding')").fetchone()[0] is None:
            return 0
        return conn.execute("SELECT count(*) FROM langchain_pg_embedding").fetchone()[0]


def load_corpus(port: int, creds: Credentials, profile: str, provider: Provider, batch: int = 256) -> dict:
    """(Re)create the LangChain tables and bulk-load the profile's corpus with COPY.

    Embeddings come from the provider, as the users' ingestion gets them. Returns the
    number of chunks and the seconds the load took.
    """
    from ragperf_lab import corpus

    started = time.perf_counter()
    total = corpus.PROFILES[profile]
    with psycopg.connect(dsn(port, APP_ROLE, creds.app_password)) as conn, httpx.Client(timeout=120) as http:
        conn.execute("DROP TABLE IF EXISTS langchain_pg_embedding, langchain_pg_collection")
        conn.execute(LANGCHAIN_DDL)
        collection_id = uuid.uuid5(uuid.NAMESPACE_URL, f"ragperf:{COLLECTION}")
        conn.execute(
            "INSERT INTO langchain_pg_collection (uuid, name, cmetadata) VALUES (%s, %s, %s)",
            (collection_id, COLLECTION, Jsonb({"profile": profile})),
        )
        copy_sql = "COPY langchain_pg_embedding (id, collection_id, embedding, document, cmetadata) FROM STDIN"
        count = 0
        with conn.cursor().copy(copy_sql) as copy, progress_bar(total=total, unit="chunk", desc="load corpus") as bar:
            for chunks in _batches(corpus.iter_chunks(profile), batch):
                vectors = embed(http, provider, [c.text for c in chunks])
                for chunk, vector in zip(chunks, vectors, strict=True):
                    text_vector = "[" + ",".join(f"{x:.6g}" for x in vector.tolist()) + "]"
                    copy.write_row((chunk.id, collection_id, text_vector, chunk.text, Jsonb(chunk.metadata)))
                count += len(chunks)
                bar.update(len(chunks))
        conn.commit()
    with psycopg.connect(dsn(port, APP_ROLE, creds.app_password), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) langchain_pg_embedding")
    return {"chunks": count, "load_seconds": round(time.perf_counter() - started, 1)}


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
