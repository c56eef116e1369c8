"""Processes ragperf starts itself: started detached, recorded by PID, stopped by that PID only.

A PID alone can be reused by the kernel after a crash, so every record also keeps the
process's start time (from /proc/<pid>/stat); a record whose PID now belongs to another
process counts as dead and is never signalled.

:class:`Server` is the one life cycle of every server ragperf runs from a state directory (nginx,
Redis, the cache add-on, and whatever comes next): a new server fills in its hooks, it does not copy a
neighbour's start and stop. :func:`wait_until` is the one loop that waits for something with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypedDict

from ragperf.core.changes import StateApplier

log = logging.getLogger(__name__)


class ProcessError(RuntimeError):
    """A process ragperf started did not come up, or could not be stopped."""


@dataclass(frozen=True)
class Proc:
    """A process started by ragperf."""

    name: str
    pid: int
    start_ticks: int
    argv: list[str]
    log: str
    port: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Proc:
        return cls(**data)  # type: ignore[arg-type]


def start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z" and not _threads_left(pid):  # a zombie is dead for our purposes
        return None
    return int(fields[19])


def _threads_left(pid: int) -> bool:
    """True while other threads of a zombie thread-group leader still run (a Go server's do, for a moment, after
    its main thread exited): they still hold its files and listening sockets, so the process is not gone yet."""
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def is_alive(proc: Proc) -> bool:
    """True if the recorded process still runs (same PID and same start time)."""
    return start_ticks(proc.pid) == proc.start_ticks


def start(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    port: int | None = None,
    extra: Mapping[str, object] | None = None,
) -> Proc:
    """Start ``argv`` detached in its own session, its output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            group=user,
            extra_groups=[] if user else None,
            start_new_session=True,
        )
    ticks = start_ticks(popen.pid)
    if ticks is None:
        raise ProcessError(f"{name} exited at once; see {log_path}")
    log.info("started %s (pid %d)", name, popen.pid)
    # The child is ours to reap only while this process lives; detach from the Popen object.
    popen.returncode = 0
    return Proc(name, popen.pid, ticks, list(argv), str(log_path), port, dict(extra or {}))


def stop(proc: Proc, *, sig: int = signal.SIGTERM, timeout: float = 30.0) -> bool:
    """Stop the recorded process by its PID; SIGKILL after ``timeout``. False if it was not running."""
    if not is_alive(proc):
        return False
    os.kill(proc.pid, sig)
    if _wait_gone(proc, timeout):
        return True
    log.warning("%s (pid %d) ignored signal %d for %.0f s; killing it", proc.name, proc.pid, sig, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    if not _wait_gone(proc, 10.0):
        raise ProcessError(f"{proc.name} (pid {proc.pid}) survived SIGKILL")
    return True


def _wait_gone(proc: Proc, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(proc.pid, os.WNOHANG)
        if not is_alive(proc):
            return True
        time.sleep(0.05)
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if ``port`` can be bound on ``host`` by a server (which, like PostgreSQL, sets SO_REUSEADDR, so
    connections of a stopped server still in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def wait_until(
    probe: Callable[[], str | None],
    *,
    timeout: float,
    what: str,
    proc: Proc | None = None,
    interval: float = 0.05,
    error: type[Exception] = ProcessError,
    tail: Callable[[], str] | None = None,
) -> None:
    """Call ``probe`` every ``interval`` seconds until it returns None (ready); until then it returns a
    short text of what is still missing. It runs at least once, whatever ``timeout``.

    ``what`` says what did not happen ("redis did not answer PING on port 6380") and starts the error.

    Raises:
        error: ``proc`` died (at once, not at the deadline), or ``timeout`` passed (with the probe's last
            text). When there is a ``proc``, the message ends with ``tail()`` (by default its log's tail).
    """

    def ends() -> str:
        if tail is not None:
            return f"; {tail()}"
        return f"; its log {proc.log} ends:\n{log_tail(proc)}" if proc is not None else ""

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and not is_alive(proc):
            raise error(f"{what}: {proc.name} (pid {proc.pid}) exited{ends()}")
        missing = probe()
        if missing is None:
            return
        if time.monotonic() >= deadline:
            raise error(f"{what} within {timeout:g} s ({missing}){ends()}")
        time.sleep(interval)


def http_ok(url: str, timeout: float = 2.0) -> str | None:
    """None when ``url`` answers 200, else what it answered (a probe for :func:`wait_until`).

    The request never goes through a proxy from the environment: the servers ragperf runs are local.
    """
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(url, timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return str(exc.reason)
    except OSError as exc:
        return str(exc) or type(exc).__name__


def wait_http(url: str, proc: Proc, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers 200, failing early with the log's tail if ``proc`` dies."""
    wait_until(lambda: http_ok(url), timeout=timeout, what=f"{proc.name} did not answer {url}", proc=proc, interval=0.1)


def log_tail(proc: Proc, lines: int = 20) -> str:
    """The last lines of a process's log, for error messages."""
    try:
        text = Path(proc.log).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` at once (a reader sees the old file or the new, never half of one), with
    permissions ``mode`` (0600 for a file that holds a secret: it is never readable by others, not even briefly)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ServerStatus(TypedDict):
    """What :meth:`Server.status` says of a server (subclasses add their own fields)."""

    state_dir: str
    running: bool
    pid: int | None
    port: int | None
    config: dict[str, Any] | None


class Recorded:
    """A server ragperf runs from a state directory, with a process record there (``RECORD``: the process,
    its configuration and anything else the subclass keeps), so that any Python process can see it or
    stop it by its PID.

    Subclasses set ``RECORD`` (the file name) and ``CONFIG`` (a class with ``from_dict`` and ``to_dict``).
    """

    RECORD: ClassVar[str]
    CONFIG: ClassVar[Any]

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir).absolute()

    @property
    def record_path(self) -> Path:
        return self.state_dir / self.RECORD

    def _record(self) -> dict[str, Any] | None:
        try:
            text = self.record_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
        except ValueError:
            log.warning("ignoring an unreadable process record %s", self.record_path)
            return None
        return record if isinstance(record, dict) and "proc" in record else None

    def _save_record(self, proc: Proc, config: Any, **extra: Any) -> None:
        data = {"proc": proc.to_json(), "config": config.to_dict(), **extra}
        write_atomic(self.record_path, json.dumps(data, indent=2) + "\n")

    @property
    def proc(self) -> Proc | None:
        """The recorded process, alive or not; None when nothing was recorded."""
        record = self._record()
        return Proc.from_json(record["proc"]) if record else None

    @property
    def running(self) -> bool:
        """True if the recorded process still runs (same PID and start time)."""
        proc = self.proc
        return proc is not None and is_alive(proc)

    @property
    def config(self) -> Any:
        """The configuration the running server was started with; None when none runs."""
        record = self._record()
        return self.CONFIG.from_dict(record["config"]) if record and self.running else None


class Server(Recorded):
    """A server ragperf runs from a state directory: the life cycle they all share, run here once, with
    hooks that each server fills in (papermill's engine shape).

    :meth:`start` checks that the configuration names this state directory; asks :meth:`on_running`
    what to do if the server already runs (by default: keep it when the configuration is the same,
    restart it otherwise); refuses a taken port; writes :meth:`files` atomically once
    :meth:`check_files` has accepted them; spawns :meth:`argv` with its output appended to ``LOG``;
    records the process before it waits (so that it can always be stopped by its PID); and waits with
    :func:`wait_until` until :meth:`ready` says it serves. If that fails, the process is stopped, its
    record dropped, and the error (``ERROR``) ends with the log's tail. :meth:`stop` stops it by its
    recorded PID and clears the record.

    A new server sets ``NAME``, ``WHAT``, ``RECORD``, ``LOG`` and ``CONFIG`` (a :class:`ragperf.core.changes.Config`
    with ``state_dir``, ``url``, and ``listen_host`` and ``listen_port`` unless :meth:`address` says
    otherwise), usually ``ERROR``, and writes :meth:`argv` and :meth:`ready`; where it needs them
    :meth:`files`, :meth:`check_files`, :meth:`env`, :meth:`awaited`, :meth:`record_extra`, :meth:`on_running`,
    :meth:`after_stop` and :meth:`tail`.
    """

    NAME: ClassVar[str]  # the process's name in its record and in log lines ("redis")
    WHAT: ClassVar[str]  # what messages call it ("Redis", "cache add-on")
    LOG: ClassVar[str]  # its output, in the state directory
    ERROR: ClassVar[type[Exception]] = ProcessError
    PORT_FIELD: ClassVar[str] = "listen_port"  # the configuration's field a taken-port error names
    TIMEOUT: ClassVar[float] = 15.0  # seconds a start waits for ready()
    STOP_TIMEOUT: ClassVar[float] = 30.0  # seconds stop() waits before SIGKILL
    STOP_SIGNAL: ClassVar[int] = signal.SIGTERM
    FILE_MODES: ClassVar[Mapping[str, int]] = {}  # files() that are not 0644 (0600: it holds a secret), by name

    def __init__(self, state_dir: Path, *, timeout: float | None = None) -> None:
        super().__init__(state_dir)
        self.timeout = self.TIMEOUT if timeout is None else timeout

    @property
    def log_path(self) -> Path:
        return self.state_dir / self.LOG

    @property
    def url(self) -> str:
        """Where clients reach the running server (its configuration's ``url``).

        Raises:
            ERROR: none runs from this state directory.
        """
        cfg = self.config
        if cfg is None:
            raise self.ERROR(f"no {self.WHAT} runs from {self.state_dir}")
        return str(cfg.url)

    def status(self) -> ServerStatus:
        """What runs (JSON values): the state directory, PID, port and configuration (None when it does not run)."""
        record = self._record() or {}
        running = self.running
        proc = record.get("proc") or {}
        return ServerStatus(
            state_dir=str(self.state_dir),
            running=running,
            pid=proc.get("pid") if running else None,
            port=proc.get("port") if running else None,
            config=record.get("config") if running else None,
        )

    # -- the life cycle ----------------------------------------------------------------------------

    def start(self, cfg: Any) -> Proc:
        """Start the server with ``cfg`` and return once it is ready (see the class's docstring).

        Raises:
            ERROR: ``cfg`` names another state directory, the port is taken, or the server did not get
                ready within ``timeout`` (it is stopped again; the message ends with its log's tail);
                or whatever :meth:`on_running` and :meth:`check_files` raise.
        """
        self._check_state_dir(cfg)
        current = self.proc
        if current is not None and is_alive(current):
            kept = self.on_running(current, cfg)
            if kept is not None:
                return kept
        self.record_path.unlink(missing_ok=True)  # a dead process's record
        self._check_port(cfg)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        files = self.files(cfg)
        texts = {name: text for name, text in files.items() if text is not None}
        self.check_files(texts)
        for name, text in files.items():
            if text is None:
                (self.state_dir / name).unlink(missing_ok=True)
            else:
                write_atomic(self.state_dir / name, text, self.FILE_MODES.get(name, 0o644))
        user = self.user(cfg)
        if user is not None:
            _give(self.state_dir, user)
        argv = self.argv(cfg)
        with self.log_path.open("a", encoding="utf-8") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} ragperf starts: {' '.join(argv)}\n")
        host, port = self.address(cfg)
        proc = start(self.NAME, argv, self.log_path, env=self.env(cfg), port=port, user=user)  # the module's start()
        self._save_record(proc, cfg, **self.record_extra(cfg, texts))
        try:
            wait_until(
                lambda: self.ready(cfg),
                timeout=self.timeout,
                what=f"{self.NAME} did not {self.awaited(cfg)}",
                proc=proc,
                error=self.ERROR,
                tail=lambda: self.tail(proc),
            )
        except BaseException:
            self.stop(timeout=5.0)
            raise
        log.info("%s started from %s on %s:%d (pid %d)", self.NAME, self.state_dir, host, port, proc.pid)
        return proc

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the recorded process by its PID (SIGKILL after ``timeout``) and clear the record.

        False if it was not running; safe to call any number of times.
        """
        proc = self.proc
        stopped = False
        if proc is not None:
            wait = self.STOP_TIMEOUT if timeout is None else timeout
            stopped = stop(proc, sig=self.STOP_SIGNAL, timeout=wait)  # the module's stop(), by PID
            self.after_stop(proc)
            if stopped:
                log.info("%s on port %s stopped (pid %d)", self.NAME, proc.port, proc.pid)
        self.record_path.unlink(missing_ok=True)
        return stopped

    def _check_state_dir(self, cfg: Any) -> None:
        if Path(cfg.state_dir).absolute() != self.state_dir:
            raise self.ERROR(
                f"state_dir: the configuration names {cfg.state_dir}, this {self.WHAT} lives in {self.state_dir}"
            )

    def _check_port(self, cfg: Any) -> None:
        host, port = self.address(cfg)
        if not port_is_free(port, host):
            raise self.ERROR(f"{self.PORT_FIELD}: port {port} on {host} is taken (in use by another process)")

    # -- hooks -------------------------------------------------------------------------------------

    def argv(self, cfg: Any) -> list[str]:
        """The command line that runs the server with ``cfg`` in the foreground."""
        raise NotImplementedError

    def env(self, cfg: Any) -> dict[str, str] | None:
        """The environment the server runs with (None: this process's own). Never put a secret here that a
        file can hold instead: a process's environment is readable by its user in /proc."""
        return None

    def user(self, cfg: Any) -> str | None:
        """The user the server runs as (None: this process's own). A server that refuses root (PgBouncer) names an
        unprivileged one when ragperf runs as root; its state directory and files are then given to that user."""
        return None

    def ready(self, cfg: Any) -> str | None:
        """None once the server serves ``cfg``; else a short text of what is still missing (polled)."""
        raise NotImplementedError

    def awaited(self, cfg: Any) -> str:
        """What :meth:`ready` waits for, completing "<NAME> did not ..." in the error."""
        host, port = self.address(cfg)
        return f"get ready on {host}:{port}"

    def files(self, cfg: Any) -> dict[str, str | None]:
        """The files to write in the state directory before a start, by name (None: one that must not be there)."""
        return {}

    def check_files(self, files: Mapping[str, str]) -> None:
        """Raise when the server would reject ``files`` (``nginx -t``); called before they are written."""

    def address(self, cfg: Any) -> tuple[str, int]:
        """Where the server listens: its port must be free before a start, and is kept in the record."""
        return str(cfg.listen_host), int(cfg.listen_port)

    def record_extra(self, cfg: Any, files: Mapping[str, str]) -> dict[str, Any]:
        """Fields the process record keeps besides the process and its configuration."""
        return {}

    def on_running(self, proc: Proc, cfg: Any) -> Proc | None:
        """What :meth:`start` does when ``proc`` already runs: keep it (returned) when it runs with ``cfg``,
        else stop it for a restart (None). A server that must not be restarted raises instead."""
        if self.config == cfg:
            log.info("%s already runs from %s with this configuration (pid %d)", self.NAME, self.state_dir, proc.pid)
            return proc
        log.info("%s: the configuration changed, restarting it", self.NAME)
        self.stop()
        return None

    def clear_state(self) -> None:
        """Remove the files the server made in its state directory (and nothing else), once it is stopped for good;
        by default it keeps them."""

    def after_stop(self, proc: Proc) -> None:
        """Clean up after the recorded process is gone (nginx: workers a killed master left behind)."""

    def tail(self, proc: Proc) -> str:
        """The end of the server's log, for the error of a start that failed."""
        return f"its log {proc.log} ends:\n{log_tail(proc)}"


def unreachable(directory: Path, uid: int, gids: Iterable[int]) -> Path | None:
    """The first of ``directory`` and its parents that user ``uid`` (in groups ``gids``) may not enter, or None: a
    server that runs as another user must reach its state directory."""
    groups = set(gids)
    for each in [directory, *directory.parents]:
        st = each.stat()
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid in groups else 0o001
        if not st.st_mode & bit:
            return each
    return None


def _give(directory: Path, user: str) -> None:
    """Make ``user`` the owner of ``directory`` and everything in it (a server that runs as ``user`` writes there)."""
    import pwd

    entry = pwd.getpwnam(user)
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


class ServerApplier(StateApplier):
    """The applier of a server's changes (each takes its configuration from ``before`` to ``after``, None: not
    running): apply starts (or restarts) ``after``'s server, undo brings back ``before``'s. The server of the other
    state is stopped first when it lives in another state directory; when nothing is to run any more, it is stopped
    and its files cleared (:meth:`Server.clear_state`). Idempotent both ways: a server already running with the
    wanted configuration is left alone (:meth:`Server.on_running`), stopping a stopped one does nothing.

    A subclass sets ``kind`` and ``SERVER`` (and ``TIMEOUT``, the seconds a start waits for ready).
    """

    SERVER: ClassVar[type[Server]]
    TIMEOUT: ClassVar[float] = 20.0

    def __init__(self, *, timeout: float | None = None) -> None:
        self.timeout = self.TIMEOUT if timeout is None else timeout

    def become(self, state: Mapping[str, Any] | None, other: Mapping[str, Any] | None) -> None:
        wanted = self.SERVER.CONFIG.from_dict(state) if state is not None else None
        if other is not None:
            old = self.SERVER(Path(other["state_dir"]), timeout=self.timeout)
            if wanted is None or old.state_dir != Path(wanted.state_dir).absolute():
                old.stop()
                if wanted is None:
                    old.clear_state()
        if wanted is not None:
            self.SERVER(wanted.state_dir, timeout=self.timeout).start(wanted)
