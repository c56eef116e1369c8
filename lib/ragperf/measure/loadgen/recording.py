"""What one load-test request was: its outcome class and its record. Pure logic, no Locust.

The locustfile is a thin shell over this module, so that error classification, the workload
cursor and the record schema are unit-tested without starting Locust (importing Locust
monkey-patches the process with gevent).
"""

from __future__ import annotations

import errno
import json
import ssl
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ragperf.core import procs
from ragperf.measure.workload import WorkItem

# The record schema; metrics elsewhere are computed from these columns.
RECORD_DTYPES: dict[str, type] = {
    "scenario": str,
    "step": str,
    "users_target": int,
    "worker": str,
    "start": float,  # epoch seconds
    "latency_s": float,  # time.perf_counter around the request, body included
    "status": int,  # 0 when there was no HTTP response
    "ok": bool,
    "error": str,  # one of ERRORS
    "response_bytes": int,
    "cache_status": str,  # X-Cache-Status, else X-Cache, else "" (nginx's per-host cache)
    "shared_cache_status": str,  # X-Shared-Cache-Status, else "" (the Redis cache add-on behind nginx)
    "active_users": int,  # users running in this Locust process when the request started
    "question_id": int,
    "mode": str,
}
RECORD_COLUMNS: tuple[str, ...] = tuple(RECORD_DTYPES)

ERRORS = (
    "",
    "timeout",
    "connection_refused",
    "connection_reset",
    "connection_error",
    "http_5xx",
    "http_4xx",
    "bad_body",
)

ENV_WORKLOAD = "RAGPERF_WORKLOAD"
ENV_RECORDS_DIR = "RAGPERF_RECORDS_DIR"
ENV_TIMEOUT = "RAGPERF_TIMEOUT"
ENV_CYCLE = "RAGPERF_CYCLE"
ENV_SCENARIO = "RAGPERF_SCENARIO"
ENV_STEP = "RAGPERF_STEP"
ENV_USERS = "RAGPERF_USERS"
ENV_DURATION = "RAGPERF_DURATION"

_TIMEOUT_NAMES = {"Timeout", "TimeoutError", "ConnectTimeout", "ReadTimeout"}
_RESET_NAMES = {"HTTPConnectionClosed", "EmptyResponse", "RemoteDisconnected", "IncompleteRead"}
_RESET_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}


@dataclass(frozen=True)
class Settings:
    """What the Locust processes are told through the environment."""

    workload: Path
    records_dir: Path
    timeout_s: float = 30.0
    cycle: bool = True
    scenario: str = ""
    step: str = ""
    users_target: int = 0
    duration_s: float = 0.0

    def to_env(self) -> dict[str, str]:
        """The environment variables that carry these settings."""
        return {
            ENV_WORKLOAD: str(self.workload),
            ENV_RECORDS_DIR: str(self.records_dir),
            ENV_TIMEOUT: repr(float(self.timeout_s)),
            ENV_CYCLE: "1" if self.cycle else "0",
            ENV_SCENARIO: self.scenario,
            ENV_STEP: self.step,
            ENV_USERS: str(int(self.users_target)),
            ENV_DURATION: repr(float(self.duration_s)),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read the settings back; a missing workload path is an error that names the variable."""
        if not environ.get(ENV_WORKLOAD):
            raise ValueError(f"{ENV_WORKLOAD} is not set: it must name the workload JSONL file")
        return cls(
            workload=Path(environ[ENV_WORKLOAD]),
            records_dir=Path(environ.get(ENV_RECORDS_DIR) or "."),
            timeout_s=float(environ.get(ENV_TIMEOUT) or 30.0),
            cycle=environ.get(ENV_CYCLE, "1").strip().lower() not in ("0", "false", "no", ""),
            scenario=environ.get(ENV_SCENARIO, ""),
            step=environ.get(ENV_STEP, ""),
            users_target=int(environ.get(ENV_USERS) or 0),
            duration_s=float(environ.get(ENV_DURATION) or 0.0),
        )


class WorkloadCursor:
    """The next work item for whichever user asks, shared by the users of one process.

    With ``cycle`` the items repeat forever; without it each item is handed out once and
    :meth:`next` then returns None.
    """

    def __init__(self, items: Sequence[WorkItem], *, cycle: bool) -> None:
        self.items = list(items)
        self.cycle = cycle
        self.taken = 0
        self._lock = threading.Lock()

    @classmethod
    def for_process(cls, items: Sequence[WorkItem], *, cycle: bool, index: int, processes: int) -> WorkloadCursor:
        """The cursor of load-generator process ``index`` of ``processes``.

        Without cycling the items are dealt out (item i goes to process i mod processes), so that
        together the processes ask each item exactly once. With cycling every process loops over
        all items, starting at its own offset.
        """
        processes = max(1, processes)
        index = max(0, index)
        if not cycle:
            return cls(list(items)[index % processes :: processes] if index < processes else [], cycle=False)
        offset = (len(items) * index // processes) % len(items) if items else 0
        return cls(list(items[offset:]) + list(items[:offset]), cycle=True)

    @property
    def exhausted(self) -> bool:
        """True when a non-cycling cursor has handed out every item."""
        return not self.items or (not self.cycle and self.taken >= len(self.items))

    def next(self) -> WorkItem | None:
        """The next item, or None when there is none left."""
        with self._lock:
            if self.exhausted:
                return None
            item = self.items[self.taken % len(self.items)]
            self.taken += 1
            return item


def exception_chain(exc: BaseException | None) -> list[BaseException]:
    """The exception, what it wraps (``original``, as geventhttpclient's RetriesExceeded), its causes."""
    chain: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in chain):
        chain.append(exc)
        nxt = getattr(exc, "original", None)
        exc = nxt if isinstance(nxt, BaseException) else (exc.__cause__ or exc.__context__)
    return chain


def classify_exception(exc: BaseException) -> str:
    """The error class of a request that raised: timeout, connection_refused, connection_reset or connection_error."""
    chain = exception_chain(exc)
    for e in chain:
        names = {c.__name__ for c in type(e).__mro__}
        if isinstance(e, TimeoutError) or names & _TIMEOUT_NAMES:
            return "timeout"
        if isinstance(e, ssl.SSLError) and "timed out" in str(e):
            return "timeout"
    for e in chain:
        names = {c.__name__ for c in type(e).__mro__}
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return "connection_refused"
        if isinstance(e, ConnectionResetError | BrokenPipeError | ConnectionAbortedError) or names & _RESET_NAMES:
            return "connection_reset"
        if isinstance(e, OSError) and e.errno in _RESET_ERRNOS:
            return "connection_reset"
    return "connection_error"


def is_valid_answer(body: bytes | str | None) -> bool:
    """True if the body is JSON with a non-empty string ``answer`` and a list ``sources``."""
    if not body:
        return False
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return (
        isinstance(data, dict)
        and isinstance(data.get("answer"), str)
        and bool(data["answer"].strip())
        and isinstance(data.get("sources"), list)
    )


def classify(
    status: int, exception: BaseException | None, body: bytes | str | None, latency_s: float, timeout_s: float
) -> str:
    """The error class of one request; "" when it is ok.

    Ok means HTTP 200 with a valid answer body within the timeout. A status class wins over a
    transport error (the status says more); a 200 that came too late is a timeout; any other
    non-error status (204, an unfollowed redirect) is a bad body, since it carries no answer.
    """
    if status >= 500:
        return "http_5xx"
    if status >= 400:
        return "http_4xx"
    if exception is not None:
        return classify_exception(exception)
    if status == 0:
        return "connection_error"
    if latency_s > timeout_s:
        return "timeout"
    if status != 200 or not is_valid_answer(body):
        return "bad_body"
    return ""


def cache_status(headers: Mapping[str, object] | None, names: tuple[str, ...] = ("x-cache-status", "x-cache")) -> str:
    """The value of the first of ``names`` present (X-Cache-Status, else X-Cache), else ""; names in any case."""
    if not headers:
        return ""
    lowered = {str(k).lower(): v for k, v in headers.items()}
    for name in names:
        value = lowered.get(name)
        if value is not None:
            return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return ""


def shared_cache_status(headers: Mapping[str, object] | None) -> str:
    """The value of X-Shared-Cache-Status (the Redis cache add-on's), else ""."""
    return cache_status(headers, ("x-shared-cache-status",))


def make_record(
    settings: Settings,
    item: WorkItem,
    *,
    worker: str,
    start: float,
    latency_s: float,
    status: int,
    error: str,
    response_bytes: int,
    cache: str,
    active_users: int,
    shared_cache: str = "",
) -> dict[str, object]:
    """One row of the record schema (:data:`RECORD_COLUMNS`)."""
    if error not in ERRORS:
        raise ValueError(f"unknown error class {error!r} (allowed: {', '.join(map(repr, ERRORS))})")
    return {
        "scenario": settings.scenario,
        "step": settings.step,
        "users_target": int(settings.users_target),
        "worker": worker,
        "start": float(start),
        "latency_s": float(latency_s),
        "status": int(status or 0),
        "ok": error == "",
        "error": error,
        "response_bytes": int(response_bytes or 0),
        "cache_status": cache,
        "shared_cache_status": shared_cache,
        "active_users": int(active_users),
        "question_id": int(item.id),
        "mode": item.mode,
    }


class RecordSink:
    """Records buffered in memory and appended as JSON lines to one file per process."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.count = 0
        self._buffer: list[dict[str, object]] = []
        self._lock = threading.Lock()

    def add(self, record: dict[str, object]) -> None:
        """Buffer one record."""
        with self._lock:
            self._buffer.append(record)

    def take(self) -> list[dict[str, object]]:
        """Remove and return the buffered records."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        return batch

    def write(self, records: Sequence[dict[str, object]]) -> None:
        """Append records to the file (counted even without a file)."""
        if not records:
            return
        self.count += len(records)
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(lines)

    def flush(self) -> int:
        """Write the buffered records; returns how many."""
        batch = self.take()
        self.write(batch)
        return len(batch)


def write_status(path: Path, **status: object) -> None:
    """Replace a small JSON status file atomically (read by the parent for its progress bar)."""
    procs.write_atomic(path, json.dumps(status))
