"""Processes ragperf starts itself: started detached, recorded by PID, stopped by that PID only.

A PID alone can be reused by the kernel after a crash, so every record also keeps the
process's start time (from /proc/<pid>/stat); a record whose PID now belongs to another
process counts as dead and is never signalled.
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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

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
    if fields[0] == "Z":  # a zombie is dead for our purposes
        return None
    return int(fields[19])


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


def wait_http(url: str, proc: Proc, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers 200, failing early with the log's tail if ``proc`` dies."""
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if not is_alive(proc):
            raise ProcessError(f"{proc.name} died while starting:\n{log_tail(proc)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last_error = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.1)
    raise ProcessError(f"{proc.name} did not answer {url} within {timeout:.0f} s ({last_error})")


def log_tail(proc: Proc, lines: int = 20) -> str:
    """The last lines of a process's log, for error messages."""
    try:
        text = Path(proc.log).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once (a reader sees the old file or the new, never half of one)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
