"""The external health monitor: a program that probes the RAG service from outside, bounded in time and memory.

The plan's monitor loops forever and keeps every sample in a list. This one stops, and holds at most ``buffer``
samples at a time:

* It runs ``python -m ragperf.systems.monitoring.healthmon --base-url URL --questions FILE --listen-port P
  --out PARQUET [--interval S] [--duration S] [--max-probes N] [--buffer N] [--timeout S] [--ask-share F]
  [--buckets B1,B2,...] [--listen-host H]`` and probes until ``--duration`` seconds have passed or ``--max-probes``
  probes were made, whichever comes first (at least one of the two must be given: it refuses to run unbounded).
* Each probe is ``GET /health`` or ``POST /ask {"question": ..., "mode": "fast"}``. A share ``--ask-share`` of the
  probes (0.5 by default, spread evenly) are asks; their questions rotate through the questions file (a lab question
  pool, JSONL with ``question`` or ``text``), so the Phase 2 caches cannot answer every probe, and each sample keeps
  the cache headers (``X-Cache-Status`` from nginx, ``X-Shared-Cache-Status`` from the cache add-on) and where the
  answer came from (``served_by``: nginx, redis, coalesced, app or none).
* Samples go to a ring buffer of ``--buffer`` entries (:class:`SampleBuffer`). When it is full it is written to the
  Parquet file as one row group and emptied, so every sample lands on disk and memory stays bounded. The rest is
  written when probing ends, on SIGTERM or SIGINT too. The file is written as ``<out>.partial`` and renamed to
  ``<out>`` once complete: a reader never sees half a file.
* Choice: once probing is done the program does NOT exit. It keeps serving ``/metrics`` (``ragperf_probe_running``
  then 0) until it is stopped, so that Prometheus scrapes the final counts; ``GET /health`` says ``finished``.

``/metrics`` (its own registry) exports ``ragperf_probe_requests_total{endpoint,code}`` (code "0": no response),
``ragperf_probe_duration_seconds{endpoint}`` (histogram, :data:`STANDARD_BUCKETS` unless told),
``ragperf_probe_served_total{by}``, ``ragperf_probe_up{endpoint}`` (1 if that endpoint's last probe succeeded),
``ragperf_probe_samples_buffered``, ``ragperf_probe_samples_buffered_max`` (the most it ever held),
``ragperf_probe_samples_written_total`` and ``ragperf_probe_running``.

:class:`HealthMonServer` runs it as a process ragperf records and stops by its PID; :func:`plan` and
:class:`HealthMonApplier` make it a change of the change model; :func:`read_samples` reads the samples back.
"""

from __future__ import annotations

import argparse
import collections
import ipaddress
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError, Config, check_int

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

KIND = "healthmon"
CHANGE_NAME = "healthmon"
RECORD = "healthmon.json"
LOG = "healthmon.log"
PARTIAL_SUFFIX = ".partial"

# Latency buckets (seconds) of every histogram ragperf exports; configs take ``buckets`` to add the SLO's bound.
STANDARD_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
)  # fmt: skip

ENDPOINTS = ("health", "ask")
SERVED_BY = ("nginx", "redis", "coalesced", "app", "none")
# nginx's $upstream_cache_status values that mean nginx answered from its cache; the same set as
# ragperf.measure.metrics.CACHE_HIT_STATUSES (a test keeps them equal; not imported, to keep this program light).
NGINX_HIT_STATUSES = frozenset({"HIT", "STALE", "UPDATING", "REVALIDATED"})
NGINX_HEADER = "x-cache-status"
SHARED_HEADER = "x-shared-cache-status"  # the cache add-on's (ragperf.systems.cacheapp.STATUS_HEADER)

# The columns of a sample, in the Parquet file's order.
COLUMNS = ("seq", "t", "endpoint", "status", "latency_s", "ok", "error", "question_id", "cache_status",
           "shared_cache_status", "served_by")  # fmt: skip


# -- checks shared by the monitoring modules ------------------------------------------------------------------


def check_buckets(name: str, value: object) -> tuple[float, ...]:
    """``value`` as a tuple of floats; ValueError naming ``name`` unless it is 1-60 finite numbers > 0,
    strictly increasing (a list, as a configuration's ``to_dict`` writes it, is fine)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"{name}: must be a list of bucket bounds in seconds, not {value!r}")
    items = list(value)
    if not 1 <= len(items) <= 60:
        raise ValueError(f"{name}: must have 1 to 60 bucket bounds, not {len(items)}")
    bounds: list[float] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item) or item <= 0:
            raise ValueError(f"{name}: every bound must be a finite number of seconds > 0, not {item!r}")
        bounds.append(float(item))
    if any(b <= a for a, b in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(f"{name}: the bounds must be strictly increasing, not {bounds}")
    return tuple(bounds)


def buckets_with(*extra: float, base: Sequence[float] = STANDARD_BUCKETS) -> tuple[float, ...]:
    """``base`` with the bounds ``extra`` added (the SLO's latency bound, so that a histogram can tell it exactly)."""
    return check_buckets("buckets", sorted({float(b) for b in (*base, *extra)}))


def format_buckets(buckets: Sequence[float]) -> str:
    """The ``--buckets`` value of a command line: the bounds joined by commas."""
    return ",".join(repr(float(b)) for b in buckets)


def parse_buckets(text: str) -> tuple[float, ...]:
    """The bounds of a ``--buckets B1,B2,...`` value (argparse type: ValueError on anything else)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--buckets: {text!r} is not a comma-separated list of numbers") from None
    return check_buckets("--buckets", values)


def check_ipv4(name: str, value: object) -> str:
    """``value`` when it is an IPv4 address; else ValueError naming ``name``."""
    try:
        ipaddress.IPv4Address(value)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not an IPv4 address (127.0.0.1 to stay on this machine)") from None
    return str(value)


def check_seconds(name: str, value: object, low: float, high: float, *, low_open: bool = False) -> float:
    """``value`` as a float; ValueError naming ``name`` unless it is a number of seconds from ``low`` (exclusive
    when ``low_open``) to ``high``."""
    number = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    above = number and (value > low if low_open else value >= low)  # type: ignore[operator]
    if not (above and value <= high):  # type: ignore[operator]
        low_text = f"more than {low:g}" if low_open else f"from {low:g}"
        raise ValueError(f"{name}: must be a number of seconds {low_text} up to {high:g}, not {value!r}")
    return float(value)  # type: ignore[arg-type]


def _check_base_url(value: object) -> str:
    """The base URL without a trailing slash; ValueError unless http(s)://host[:port][/prefix], with no password."""
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"base_url: {value!r} is not a base URL http(s)://host:port[/prefix] (no query)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("base_url: must not hold a user or password (it is on the command line and in the record)")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"base_url: {value!r} has a port that is not 1-65535") from None
    return value.rstrip("/")  # type: ignore[union-attr]


# -- the configuration --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthMonConfig(Config):
    """How the health monitor runs: what it probes, how often and for how long, where samples and metrics go.

    ``base_url`` is the service (nginx, the add-on or the app: ``http://host:port``), ``questions_file`` the question
    pool asks rotate through, ``out_path`` the Parquet file of the samples, ``listen_host``/``listen_port`` where its
    ``/metrics`` listens, ``state_dir`` where the process record and log live. It probes every ``interval_s``
    seconds until ``duration_s`` seconds passed or ``max_probes`` probes were made (at least one of them must be
    set), holding at most ``buffer`` samples in memory; ``timeout_s`` bounds each probe, ``ask_share`` is the
    share of probes that ask a question, ``buckets`` the latency histogram's bounds.

    Raises ValueError (naming the field and what is allowed) when a value is not valid.
    """

    base_url: str
    questions_file: Path
    out_path: Path
    listen_port: int
    state_dir: Path
    interval_s: float = 1.0
    duration_s: float | None = None
    max_probes: int | None = None
    buffer: int = 1000
    timeout_s: float = 10.0
    ask_share: float = 0.5
    buckets: tuple[float, ...] = STANDARD_BUCKETS
    listen_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", _check_base_url(self.base_url))
        for name in ("questions_file", "out_path", "state_dir"):
            path = getattr(self, name)
            if not isinstance(path, str | os.PathLike) or any(ch in str(path) for ch in "\n\r\0"):
                raise ValueError(f"{name}: must be a path without line breaks or NUL characters, not {path!r}")
            object.__setattr__(self, name, Path(path).absolute())
        if self.out_path.suffix != ".parquet":
            raise ValueError(f"out_path: must name a .parquet file, not {str(self.out_path)!r}")
        check_int("listen_port", self.listen_port, 1, 65535)
        check_ipv4("listen_host", self.listen_host)
        object.__setattr__(self, "interval_s", check_seconds("interval_s", self.interval_s, 0, 3600, low_open=True))
        if self.duration_s is None and self.max_probes is None:
            raise ValueError("duration_s, max_probes: give at least one (the monitor never runs unbounded)")
        if self.duration_s is not None:
            duration = check_seconds("duration_s", self.duration_s, 0, 30 * 86400, low_open=True)
            object.__setattr__(self, "duration_s", duration)
        if self.max_probes is not None:
            check_int("max_probes", self.max_probes, 1, 1_000_000_000)
        check_int("buffer", self.buffer, 10, 10_000_000)
        object.__setattr__(self, "timeout_s", check_seconds("timeout_s", self.timeout_s, 0, 600, low_open=True))
        share = self.ask_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise ValueError(f"ask_share: must be a number from 0 to 1 (the share of probes that ask), not {share!r}")
        object.__setattr__(self, "ask_share", float(share))
        object.__setattr__(self, "buckets", check_buckets("buckets", self.buckets))

    @property
    def url(self) -> str:
        """Where its ``/metrics`` and ``/health`` answer."""
        host = "127.0.0.1" if self.listen_host == "0.0.0.0" else self.listen_host
        return f"http://{host}:{self.listen_port}"

    def argv(self) -> list[str]:
        """The command line that runs the monitor with this configuration (this Python, ``-m ...healthmon``)."""
        argv = [
            sys.executable, "-m", "ragperf.systems.monitoring.healthmon",
            "--base-url", self.base_url,
            "--questions", str(self.questions_file),
            "--out", str(self.out_path),
            "--listen-host", self.listen_host,
            "--listen-port", str(self.listen_port),
            "--interval", repr(self.interval_s),
            "--buffer", str(self.buffer),
            "--timeout", repr(self.timeout_s),
            "--ask-share", repr(self.ask_share),
            "--buckets", format_buckets(self.buckets),
        ]  # fmt: skip
        if self.duration_s is not None:
            argv += ["--duration", repr(self.duration_s)]
        if self.max_probes is not None:
            argv += ["--max-probes", str(self.max_probes)]
        return argv


# -- the program's parts --------------------------------------------------------------------------------------


def served_by(cache_status: str, shared_cache_status: str) -> str:
    """Where one answer came from, by its cache headers (the rule of ragperf.measure.metrics.served_by, per sample):
    nginx's own hit wins, then the add-on's HIT (redis) and COALESCED; any other header reached the app; none
    without any header (no cache in front, or no answer)."""
    nginx, shared = cache_status.strip().upper(), shared_cache_status.strip().upper()
    if nginx in NGINX_HIT_STATUSES:
        return "nginx"
    if shared == "HIT":
        return "redis"
    if shared == "COALESCED":
        return "coalesced"
    return "app" if nginx or shared else "none"


def is_ask(seq: int, share: float) -> bool:
    """Whether probe ``seq`` (from 0) asks: asks are spread evenly, ``floor(n * share)`` of the first ``n`` probes."""
    return math.floor((seq + 1) * share) > math.floor(seq * share)


class SampleBuffer:
    """A ring buffer of at most ``maxlen`` samples that never drops one: when it fills up, ``flush`` gets them all
    (to write them) and it starts empty again. ``max_seen`` is the most it ever held, to prove the bound."""

    def __init__(self, maxlen: int, flush: Callable[[list[dict[str, Any]]], None]) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, not {maxlen!r}")
        self._items: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)
        self._flush = flush
        self.maxlen = maxlen
        self.max_seen = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, sample: dict[str, Any]) -> None:
        """Keep ``sample``; hand everything to ``flush`` once ``maxlen`` are held."""
        self._items.append(sample)
        self.max_seen = max(self.max_seen, len(self._items))
        if len(self._items) >= self.maxlen:
            self.flush()

    def flush(self) -> None:
        """Hand what is held to ``flush`` (nothing when empty); it is dropped only after ``flush`` returned."""
        if self._items:
            self._flush(list(self._items))
            self._items.clear()


class SampleWriter:
    """The Parquet file of the samples: one row group per :meth:`write`, written to ``<out>.partial`` and renamed
    to ``out`` by :meth:`close` (so a reader never opens a file without its footer)."""

    def __init__(self, out_path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.out_path = Path(out_path)
        self.partial = self.out_path.with_name(self.out_path.name + PARTIAL_SUFFIX)
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.schema = pa.schema(
            [
                ("seq", pa.int64()),
                ("t", pa.float64()),
                ("endpoint", pa.string()),
                ("status", pa.int32()),
                ("latency_s", pa.float64()),
                ("ok", pa.bool_()),
                ("error", pa.string()),
                ("question_id", pa.int64()),
                ("cache_status", pa.string()),
                ("shared_cache_status", pa.string()),
                ("served_by", pa.string()),
            ]
        )
        self._pa = pa
        self._writer = pq.ParquetWriter(str(self.partial), self.schema)
        self.rows = 0
        self.row_groups = 0

    def write(self, samples: Sequence[Mapping[str, Any]]) -> None:
        """Append ``samples`` as one row group."""
        table = self._pa.Table.from_pylist([dict(s) for s in samples], schema=self.schema)
        self._writer.write_table(table, row_group_size=max(1, len(samples)))
        self.rows += len(samples)
        self.row_groups += 1

    def close(self) -> None:
        """Write the footer and put the file in place (idempotent)."""
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None  # type: ignore[assignment]
        os.replace(self.partial, self.out_path)


class ProbeMetrics:
    """The monitor's Prometheus metrics, in a registry of their own."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ragperf_probe_requests_total", "Probes sent, by endpoint and HTTP status (0: none)",
                                ["endpoint", "code"], registry=r)  # fmt: skip
        self.duration = Histogram("ragperf_probe_duration_seconds", "Probe latency in seconds", ["endpoint"],
                                  buckets=list(buckets), registry=r)  # fmt: skip
        self.served = Counter("ragperf_probe_served_total", "Probe answers by the layer that served them", ["by"],
                              registry=r)  # fmt: skip
        self.up = Gauge("ragperf_probe_up", "1 if the endpoint's last probe succeeded", ["endpoint"], registry=r)
        self.buffered = Gauge("ragperf_probe_samples_buffered", "Samples held in memory now", registry=r)
        self.buffered_max = Gauge("ragperf_probe_samples_buffered_max", "The most samples ever held", registry=r)
        self.written = Counter("ragperf_probe_samples_written_total", "Samples written to Parquet", registry=r)
        self.running = Gauge("ragperf_probe_running", "1 while probing, 0 when done", registry=r)
        for by in SERVED_BY:
            self.served.labels(by=by)  # present at 0 from the start, so rate() sees the first increase

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class Monitor:
    """The probing loop of the program (see the module's docstring); :meth:`run` returns when probing is done."""

    base_url: str
    questions: list[tuple[str, int]]  # (question, id)
    out_path: Path
    interval_s: float = 1.0
    duration_s: float | None = None
    max_probes: int | None = None
    buffer: int = 1000
    timeout_s: float = 10.0
    ask_share: float = 0.5
    buckets: Sequence[float] = STANDARD_BUCKETS
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.duration_s is None and self.max_probes is None:
            raise ValueError("give a duration or a maximum number of probes (the monitor never runs unbounded)")
        if self.ask_share > 0 and not self.questions:
            raise ValueError("asks need questions: the question pool is empty")
        self.metrics = ProbeMetrics(self.buckets)
        self.writer = SampleWriter(self.out_path)
        self.samples = SampleBuffer(self.buffer, self._write)
        self.probes = 0
        self.asks = 0
        self.finished = False

    def _write(self, batch: list[dict[str, Any]]) -> None:
        self.writer.write(batch)
        self.metrics.written.inc(len(batch))

    def run(self) -> None:
        """Probe until the duration passed, max_probes were made or :attr:`stop_event` is set; then write the rest."""
        self.metrics.running.set(1)
        started = time.monotonic()
        next_at = started
        try:
            with httpx.Client(base_url=self.base_url, timeout=self.timeout_s, trust_env=False) as client:
                while not self.stop_event.is_set():
                    if self.max_probes is not None and self.probes >= self.max_probes:
                        break
                    if self.duration_s is not None and time.monotonic() - started >= self.duration_s:
                        break
                    self.samples.add(self.probe(client, self.probes))
                    self.probes += 1
                    self._gauges()
                    # A fixed rate without bursts: a late probe pushes the schedule back instead of catching up.
                    now = time.monotonic()
                    next_at = max(next_at + self.interval_s, now)
                    if next_at > now:
                        self.stop_event.wait(next_at - now)
        finally:
            self.samples.flush()
            self.writer.close()
            self._gauges()
            self.metrics.running.set(0)
            self.finished = True
        log.info("probing done: %d probes (%d asks), %d rows in %s", self.probes, self.asks, self.writer.rows,
                 self.out_path)  # fmt: skip

    def _gauges(self) -> None:
        self.metrics.buffered.set(len(self.samples))
        self.metrics.buffered_max.set(self.samples.max_seen)

    def probe(self, client: httpx.Client, seq: int) -> dict[str, Any]:
        """Make probe ``seq`` and count it; the sample (one row of the Parquet file)."""
        question_id = -1
        if is_ask(seq, self.ask_share):
            endpoint = "ask"
            question, question_id = self.questions[self.asks % len(self.questions)]
            self.asks += 1
        else:
            endpoint = "health"
        t = time.time()
        began = time.perf_counter()
        status, error, nginx, shared = 0, "", "", ""
        try:
            if endpoint == "ask":
                response = client.post("/ask", json={"question": question, "mode": "fast"})
            else:
                response = client.get("/health")
            status = response.status_code
            nginx = response.headers.get(NGINX_HEADER, "")
            shared = response.headers.get(SHARED_HEADER, "")
            error = _answer_error(endpoint, response)
        except httpx.HTTPError as exc:
            error = type(exc).__name__  # the class only: a message may carry a URL or a body
        latency = time.perf_counter() - began
        ok = not error
        by = served_by(nginx, shared) if status else "none"
        m = self.metrics
        m.requests.labels(endpoint=endpoint, code=str(status)).inc()
        m.served.labels(by=by).inc()
        m.up.labels(endpoint=endpoint).set(1 if ok else 0)
        if status:
            m.duration.labels(endpoint=endpoint).observe(latency)
        return {"seq": seq, "t": t, "endpoint": endpoint, "status": status, "latency_s": latency, "ok": ok,
                "error": error, "question_id": question_id, "cache_status": nginx, "shared_cache_status": shared,
                "served_by": by}  # fmt: skip

    def health(self) -> dict[str, Any]:
        """What ``GET /health`` of the program answers."""
        return {"status": "ok", "running": not self.finished, "finished": self.finished, "probes": self.probes,
                "asks": self.asks, "buffered": len(self.samples), "buffered_max": self.samples.max_seen,
                "written": self.writer.rows, "out": str(self.out_path)}  # fmt: skip


def _answer_error(endpoint: str, response: httpx.Response) -> str:
    """An empty text when the answer is a success; else a short reason (never the body)."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    if endpoint == "ask":
        try:
            data = response.json()
        except ValueError:
            return "answer is not JSON"
        if not isinstance(data, dict) or not isinstance(data.get("answer"), str):
            return "no answer in the body"
    return ""


def _serve(monitor: Monitor, host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/health`` of ``monitor`` from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK wait between them

        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                body, kind, code = monitor.metrics.render(), CONTENT_TYPE_LATEST, 200
            elif path == "/health":
                body, kind, code = json.dumps(monitor.health()).encode(), "application/json", 200
            else:
                body, kind, code = b'{"detail": "not found"}', "application/json", 404
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the http.server signature
            pass  # scrapes every few seconds would fill the log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def load_questions(questions_file: Path) -> list[tuple[str, int]]:
    """(question, id) of every question of a lab question pool, in file order (see ``measure.workload.read_pool``)."""
    from ragperf.measure.workload import read_pool

    return [(item.question, item.id) for item in read_pool(Path(questions_file))]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the monitor: probe, write, then serve the final metrics until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m ragperf.systems.monitoring.healthmon", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--base-url", required=True, help="the service, e.g. http://127.0.0.1:8080")
    parser.add_argument("--questions", required=True, type=Path, help="JSONL question pool asks rotate through")
    parser.add_argument("--out", required=True, type=Path, help="the Parquet file of the samples")
    parser.add_argument("--listen-port", required=True, type=int)
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between probes (default 1)")
    parser.add_argument("--duration", type=float, help="stop probing after this many seconds")
    parser.add_argument("--max-probes", type=int, help="stop probing after this many probes")
    parser.add_argument("--buffer", type=int, default=1000, help="samples held in memory at most (default 1000)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds a probe may take (default 10)")
    parser.add_argument("--ask-share", type=float, default=0.5, help="share of probes that POST /ask (default 0.5)")
    parser.add_argument("--buckets", type=parse_buckets, default=STANDARD_BUCKETS, help="B1,B2,... in seconds")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per probe would grow the log without bound
    if args.duration is None and args.max_probes is None:
        parser.error("give --duration or --max-probes (or both): the monitor never runs unbounded")
    try:
        HealthMonConfig(  # the same checks as ragperf's own configurations
            base_url=args.base_url, questions_file=args.questions, out_path=args.out, listen_port=args.listen_port,
            state_dir=Path.cwd(), interval_s=args.interval, duration_s=args.duration, max_probes=args.max_probes,
            buffer=args.buffer, timeout_s=args.timeout, ask_share=args.ask_share, buckets=args.buckets,
            listen_host=args.listen_host,
        )  # fmt: skip
        questions = load_questions(args.questions)
    except (ValueError, OSError) as exc:  # WorkloadError is a ValueError
        parser.error(str(exc))

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()  # only that: a signal handler must not take locks (logging's) the interrupted code may hold

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    monitor = Monitor(
        base_url=args.base_url, questions=questions, out_path=args.out, interval_s=args.interval,
        duration_s=args.duration, max_probes=args.max_probes, buffer=args.buffer, timeout_s=args.timeout,
        ask_share=args.ask_share, buckets=args.buckets, stop_event=stop,
    )  # fmt: skip
    server = _serve(monitor, args.listen_host, args.listen_port)
    log.info("probing %s (asks %.0f%%, every %g s) into %s; metrics on %s:%d", args.base_url, 100 * args.ask_share,
             args.interval, args.out, args.listen_host, args.listen_port)  # fmt: skip
    try:
        monitor.run()
        while not stop.wait(3600):  # serve the final counts until stopped
            pass
        log.info("stopped by a signal")
    finally:
        server.shutdown()
        server.server_close()


# -- the process ragperf runs ---------------------------------------------------------------------------------


class HealthMonError(ChangeError, procs.ProcessError):
    """The health monitor could not be started, asked or stopped, or its samples could not be read."""


class HealthMonServer(procs.Server):
    """One health monitor process whose record (``healthmon.json``) and log live in ``state_dir``; stopped by its
    recorded PID. It counts as started once its ``/metrics`` answers 200. A start with the configuration it runs
    with does nothing; another configuration restarts it, and the new run replaces the samples file."""

    NAME = "healthmon"
    WHAT = "health monitor"
    RECORD = RECORD
    LOG = LOG
    CONFIG = HealthMonConfig
    ERROR = HealthMonError
    TIMEOUT = 20.0
    STOP_TIMEOUT = 30.0

    def argv(self, cfg: HealthMonConfig) -> list[str]:
        return cfg.argv()

    def start(self, cfg: HealthMonConfig) -> procs.Proc:
        """Start the monitor (see :meth:`procs.Server.start`) after checking that its question pool can be read.

        Raises:
            HealthMonError: the question pool cannot be read, or the start failed.
        """
        try:
            load_questions(cfg.questions_file)  # raises on an empty pool too
        except (ValueError, OSError) as exc:
            raise HealthMonError(f"questions_file: {exc}") from None
        return super().start(cfg)

    def awaited(self, cfg: HealthMonConfig) -> str:
        return f"answer {cfg.url}/metrics"

    def ready(self, cfg: HealthMonConfig) -> str | None:
        return procs.http_ok(f"{cfg.url}/metrics")

    def stop(self, timeout: float | None = None) -> bool:
        """Stop it by its PID. It first finishes the probe in flight and writes the rest of its samples, so it
        gets its probe timeout on top of ``STOP_TIMEOUT`` before SIGKILL."""
        if timeout is None:
            cfg = self.config
            timeout = self.STOP_TIMEOUT + (cfg.timeout_s if cfg is not None else 0.0)
        return super().stop(timeout)

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """The running monitor's ``/health``: running, finished, probes, asks, buffered, written, out.

        Raises:
            HealthMonError: none runs, or it did not answer 200.
        """
        url = f"{self.url}/health"
        try:
            with httpx.Client(timeout=timeout, trust_env=False) as client:
                response = client.get(url)
        except httpx.HTTPError as exc:
            raise HealthMonError(f"the health monitor did not answer {url} ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise HealthMonError(f"{url} answered HTTP {response.status_code}")
        return response.json()

    def wait_finished(self, timeout: float) -> dict[str, Any]:
        """Wait until probing is done and the samples file is complete; its last ``/health``.

        Raises:
            HealthMonError: it died, or was still probing after ``timeout`` seconds.
        """
        last: dict[str, Any] = {}
        proc = self.proc

        def done() -> str | None:
            nonlocal last
            try:
                last = self.health()
            except HealthMonError as exc:
                return str(exc)
            return None if last.get("finished") else f"{last.get('probes')} probes so far"

        procs.wait_until(done, timeout=timeout, what="the health monitor did not finish probing", proc=proc,
                         interval=0.2, error=HealthMonError)  # fmt: skip
        return last


def read_samples(out_path: Path) -> pd.DataFrame:
    """The samples of a monitor's run, one row a probe, with the columns :data:`COLUMNS`.

    Raises:
        HealthMonError: there is no complete file yet (the monitor still probes, or was killed before it finished).
    """
    import pyarrow.parquet as pq

    path = Path(out_path)
    if not path.exists():
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        why = "the monitor still probes, or was killed before writing its end" if partial.exists() else "no such file"
        raise HealthMonError(f"{path}: no complete samples file ({why})")
    return pq.read_table(path).to_pandas()


def plan(current: HealthMonConfig | None, desired: HealthMonConfig | None) -> list[Change]:
    """The change that takes the monitor from ``current`` (None: not running) to ``desired`` (None: stopped);
    none when they are equal."""
    if current == desired:
        return []
    if desired is None:
        reason = "stop the health monitor (its samples file stays)"
        details: dict[str, Any] = {"action": "stop"}
    else:
        bound = " or ".join(
            part
            for part in (
                f"{desired.duration_s:g} s" if desired.duration_s is not None else "",
                f"{desired.max_probes} probes" if desired.max_probes is not None else "",
            )
            if part
        )
        what = "start" if current is None else "restart"
        reason = (
            f"{what} the health monitor: probe {desired.base_url} every {desired.interval_s:g} s for {bound} "
            f"({100 * desired.ask_share:.0f}% asks rotating through {desired.questions_file.name}, "
            f"at most {desired.buffer} samples in memory), samples to {desired.out_path}, metrics on {desired.url}"
        )
        if current is not None:
            reason += " (the new run replaces the samples file)"
        details = {"action": what, "url": desired.url, "out": str(desired.out_path)}
    return [Change.of_config(KIND, CHANGE_NAME, current, desired, reason, details)]


class HealthMonApplier(procs.ServerApplier):
    """Makes and undoes ``healthmon`` changes: the monitor of ``after`` runs; undo brings back ``before`` (None:
    stopped). See :class:`ragperf.core.procs.ServerApplier`."""

    kind = KIND
    SERVER = HealthMonServer
    TIMEOUT = 20.0


if __name__ == "__main__":
    main()
