"""One run at a time on a target: a second run, a rollback or a lab reset is refused while a run holds it.

Two runs on the same lab at once would break each other (one restarts PostgreSQL under the other's
cells), so ``ragperf run``, ``ragperf rollback`` and ``ragperf lab reset`` each hold their target for as
long as they work on it, and whoever comes second is refused at once with the holder's run id, PID,
command and start time. The hold is an ``fcntl.flock`` on an open lock file: the kernel releases it when
the holder dies, however it dies, so a lock file left behind by a dead holder never blocks; the JSON in
the file only describes the holder for the message.

The lock excludes runs on this machine only: two machines measuring the same deployment do not see each
other's locks.

A target is identified by what it is, not by how it is reached: the lab by its (resolved) lab directory,
with the lock file inside it; a deployment by its database's host, port and dbname (never its user or
password), else by its service URL, with the lock file under ``$XDG_STATE_HOME/ragperf/locks``.

A run's notebooks execute in a papermill kernel, a child process that calls :func:`held` or
:func:`hold_for_process` again: the holder passes its hold on through :data:`HOLD_ENV`, a token that
is also in the lock file, and a process whose token is the current holder's is let through.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shlex
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from ragperf.core import procs
from ragperf.core.params import Params
from ragperf.core.redact import redact

log = logging.getLogger(__name__)

HOLD_ENV = "RAGPERF_TARGET_HOLD"
LAB_LOCK = "target.lock"  # apart from lab.py's "lock": a run's kernel takes that one (lab.up) while the run holds this
LOCAL_HOST = "localhost"  # no host, or a Unix-socket directory: the server on this machine
_DETAIL_TRIES = 5  # a holder writes its details just after it locks: look again briefly, never wait for it
_DETAIL_PAUSE_S = 0.02
_HELD: dict[Path, Hold] = {}  # the holds this process took, by lock file


@dataclass(frozen=True)
class TargetId:
    """A target as the lock knows it: what to call it in a message, and its lock file."""

    label: str
    lock_path: Path


@dataclass(frozen=True)
class Holder:
    """Who holds a target: what the lock file says."""

    token: str
    pid: int
    command: str  # for people: "`ragperf run phase1`"
    since: str  # ISO 8601, UTC
    run_id: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Holder:
        return cls(str(data["token"]), int(data["pid"]), str(data["command"]), str(data["since"]), data.get("run_id"))

    def describe(self) -> str:
        """``run <id> (pid 1234, `ragperf run phase1`, since 2026-12-01 22:40:03 UTC)``."""
        try:
            since = datetime.fromisoformat(self.since).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        except ValueError:
            since = self.since
        who = f"run {self.run_id}" if self.run_id else "a run not yet named"
        return f"{who} (pid {self.pid}, {self.command}, since {since})"


class TargetBusyError(RuntimeError):
    """Another process holds the target."""

    def __init__(self, target: TargetId, holder: Holder | None) -> None:
        self.target, self.holder = target, holder
        who = holder.describe() if holder else f"another process (its details in {target.lock_path} are unreadable)"
        super().__init__(
            f"{target.label} is in use by {who}: wait for it to finish, or stop that process; "
            "a holder that dies releases it"
        )


class Hold:
    """A target held by this process until :meth:`release` (or until the process ends)."""

    def __init__(self, target: TargetId, fd: int, holder: Holder) -> None:
        self.target, self.holder, self._fd = target, holder, fd

    @property
    def token(self) -> str:
        return self.holder.token

    def name_run(self, run_id: str) -> None:
        """Say in the lock file which run holds the target (a new run has no id before it holds it)."""
        self.holder = replace(self.holder, run_id=run_id)
        _write_details(self._fd, self.holder)

    def release(self) -> None:
        """Empty the lock file, then unlock it by closing it."""
        if self._fd < 0:
            return
        _HELD.pop(self.target.lock_path, None)
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = -1


# --- what a target is --------------------------------------------------------------------------


def lab_target(lab_dir: Path) -> TargetId:
    """The lab in ``lab_dir``; its lock file is inside it."""
    lab_dir = Path(lab_dir).resolve()
    return TargetId(f"the lab in {lab_dir}", lab_dir / LAB_LOCK)


def deployment_identity(dsn: str | None, base_url: str | None = None) -> dict[str, str]:
    """What identifies a deployment: its database's host, port and dbname (defaults as libpq takes them),
    else its service URL without user information. Never a user name or a password."""
    if dsn:
        given = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v not in (None, "")}
        defaults = {o.keyword.decode(): o.val.decode() for o in pq.Conninfo.get_defaults() if o.val}
        host = given.get("host") or given.get("hostaddr") or defaults.get("host") or defaults.get("hostaddr") or ""
        hosts = ",".join(LOCAL_HOST if not h or h.startswith("/") else h.lower() for h in host.split(","))
        port = given.get("port") or defaults.get("port") or "5432"
        # libpq's dbname defaults to the user name: the user is used to find the database, not kept
        dbname = given.get("dbname") or defaults.get("dbname") or given.get("user") or defaults.get("user") or ""
        return {"host": hosts, "port": port, "dbname": dbname}
    if base_url:
        url = urlsplit(base_url.strip())
        netloc = (url.hostname or "") + (f":{url.port}" if url.port else "")
        return {"base_url": urlunsplit((url.scheme.lower(), netloc, url.path.rstrip("/"), "", ""))}
    raise ValueError("a deployment needs a DSN or a base_url to be identified")


def deployment_target(dsn: str | None, base_url: str | None = None) -> TargetId:
    """A deployment; its lock file is under :func:`locks_dir`, named by a hash of its identity."""
    identity = deployment_identity(dsn, base_url)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    if "base_url" in identity:
        label = f"the deployment at {identity['base_url']}"
    else:
        label = f"the database {identity['dbname']} on {identity['host']}:{identity['port']}"
    return TargetId(label, locks_dir() / f"deployment-{digest}.lock")


def locks_dir() -> Path:
    """``$XDG_STATE_HOME/ragperf/locks``, else ``~/.local/state/ragperf/locks``."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "ragperf" / "locks"


def params_target(params: Params, lab_dir: Path) -> TargetId:
    """The target of a run's parameters: its deployment, or the lab in ``lab_dir``."""
    if params.target.kind == "deployment":
        return deployment_target(params.target.dsn, params.target.base_url)
    return lab_target(lab_dir)


# --- holding it --------------------------------------------------------------------------------


def command_line(argv: list[str] | None = None) -> str:
    """This process's command line for people, secrets masked: "`ragperf run phase1`"."""
    args = list(sys.argv if argv is None else argv)
    if args:
        args[0] = Path(args[0]).name
    return f"`{shlex.join(redact(args))}`"


def kernel_command(phase: str) -> str:
    """What a notebook kernel holding the target is, for people: its phase and what started it."""
    kernel = f"a {phase} notebook's kernel"
    try:
        raw = Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return kernel
    parent = [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
    return f"{kernel}, started by {command_line(parent)}" if parent else kernel


def acquire(target: TargetId, *, command: str, run_id: str | None = None) -> Hold:
    """Hold ``target`` now, or raise :class:`TargetBusyError` naming its holder (never waits for it)."""
    target.lock_path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(_DETAIL_TRIES):
        fd = os.open(target.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_details(fd)
            os.close(fd)
            if holder is not None and procs.start_ticks(holder.pid) is not None:
                raise TargetBusyError(target, holder) from None
            if attempt < _DETAIL_TRIES - 1:  # locked, but its details are not written yet (or a dead holder's)
                time.sleep(_DETAIL_PAUSE_S)
            continue
        holder = Holder(secrets.token_hex(16), os.getpid(), command, _now(), run_id)
        _write_details(fd, holder)
        hold = Hold(target, fd, holder)
        _HELD[target.lock_path] = hold
        return hold
    raise TargetBusyError(target, None)


@contextlib.contextmanager
def held(target: TargetId, *, command: str) -> Iterator[Hold | None]:
    """Hold ``target`` for the block, passing the hold on to child processes through :data:`HOLD_ENV`.

    Yields None, holding nothing more, when this process holds the target already or its parent run
    passed its hold on (a kernel of ``ragperf run``).

    Raises:
        TargetBusyError: someone else holds it.
    """
    hold = _take(target, command)
    if hold is None:
        yield None
        return
    previous = os.environ.get(HOLD_ENV)
    os.environ[HOLD_ENV] = hold.token
    try:
        yield hold
    finally:
        hold.release()
        if previous is None:
            os.environ.pop(HOLD_ENV, None)
        else:
            os.environ[HOLD_ENV] = previous


def hold_for_process(target: TargetId, *, command: str) -> Hold | None:
    """Hold ``target`` until this process ends (a notebook run by plain papermill or in Jupyter), unless
    its parent run holds it; returns this process's hold, or None under the parent's.

    Raises:
        TargetBusyError: someone else holds it.
    """
    if (mine := _HELD.get(target.lock_path)) is not None:
        return mine
    hold = _take(target, command)
    if hold is not None:
        os.environ[HOLD_ENV] = hold.token  # what this kernel starts is let through, as under ``ragperf run``
    return hold


def _take(target: TargetId, command: str) -> Hold | None:
    """A new hold; None when this process or the parent whose token it has holds the target already."""
    if target.lock_path in _HELD:
        return None
    try:
        return acquire(target, command=command)
    except TargetBusyError as busy:
        token = os.environ.get(HOLD_ENV)
        if token and busy.holder is not None and secrets.compare_digest(busy.holder.token, token):
            log.info("%s is held by the parent run (pid %s): going on under its hold", target.label, busy.holder.pid)
            return None
        raise


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_details(fd: int, holder: Holder) -> None:
    data = (json.dumps(asdict(holder), indent=2) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_details(fd: int) -> Holder | None:
    try:
        return Holder.from_json(json.loads(os.pread(fd, 65536, 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None
