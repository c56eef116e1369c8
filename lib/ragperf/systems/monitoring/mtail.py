"""nginx's JSON access log as Prometheus metrics, through mtail (open-source nginx has no per-upstream metrics).

nginx writes one JSON object a line (``log_format ragperf_json`` of :mod:`ragperf.systems.nginxconf`, fields in a
fixed order: time, remote, method, uri, status, bytes, request_length, request_time, upstream_response_time,
upstream_status, upstream, cache, connection_requests). :func:`render_program` is the mtail program that turns the
lines of ``/ask`` and ``/health`` (the path exactly, with or without a query) into:

* ``ragperf_nginx_requests_total{code,cache}``: requests by HTTP status and ``$upstream_cache_status`` ("-" when
  empty: no cache on that path, or none configured);
* ``ragperf_nginx_request_duration_seconds{cache}``: histogram of ``request_time``;
* ``ragperf_nginx_upstream_duration_seconds``: histogram of the LAST upstream's ``upstream_response_time`` when
  nginx tried several (skipped when it is "" or "-": answered from the cache, or no upstream answered);
* ``ragperf_nginx_upstream_tries_total{upstream_status}``: for requests nginx retried on another upstream (several
  statuses, "502, 200"), one count per try by its status (up to :data:`MAX_TRIES` tries a request).

Facts of mtail 3.0.0~rc50 this module is built on (checked on the binary):

* A histogram's buckets are ranges (lower, upper] whose first lower bound is 0, so an observation of exactly 0
  (nginx's ``request_time`` 0.000, every fast cache hit) is in ``_count`` but in no bucket, not even ``+Inf``. The
  program gives -1 as the first bound, which mtail uses only as the first range's lower bound (no ``le="-1"`` is
  exported): 0 then lands in the first bucket and ``+Inf`` equals ``_count``.
* A log that exists when mtail starts is read from its end, so lines nginx wrote in an earlier phase are not
  counted again; a log that appears later is found by the next poll and also read from its end, losing what was
  written before that. :class:`MtailServer` therefore creates the log (empty) when it is missing, before mtail starts.
* ``--logs`` is a comma-separated list of glob patterns: the log's path must not hold ``,`` or glob characters.
* ``--compile_only`` still binds the HTTP port (3903 by default, on every interface) and fails when it is taken:
  the check runs with ``--port 0 --address 127.0.0.1``.
* ``--emit_prog_label=false`` drops the ``prog="nginx.mtail"`` label, so the labels are exactly those above.
* mtail's counters start from zero when it restarts (Prometheus handles the reset); ragperf never rotates the log.

:class:`MtailServer` runs ``mtail`` from a state directory (``progs/nginx.mtail``, ``mtail.json``, ``mtail.log``);
:func:`plan` and :class:`MtailApplier` make it a change of the change model.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError, Config, check_int
from ragperf.systems.monitoring.healthmon import STANDARD_BUCKETS, check_buckets, check_ipv4

log = logging.getLogger(__name__)

KIND = "mtail"
CHANGE_NAME = "nginx-log"
RECORD = "mtail.json"
LOG = "mtail.log"
PROGS = "progs"
PROGRAM = f"{PROGS}/nginx.mtail"
MAX_TRIES = 8  # upstream tries of one request the tries counter sees (nginx's proxy_next_upstream_tries)
ZERO_FLOOR = -1  # the first bound given to mtail: see the module's docstring
_BAD_LOG_CHARS = ",*?[]{}#%\n\r\0"


def mtail_binary() -> str:
    """The mtail to run: the one on PATH, else Debian's ``/usr/bin/mtail``."""
    return shutil.which("mtail") or "/usr/bin/mtail"


# The JSON-escaped string of one field (nginx's escape=json: \" \\ \uXXXX ...).
_STR = r'(?:[^"\\]|\\.)*'
_LINE = (
    r'^\{"time":"' + _STR + r'","remote":"' + _STR + r'","method":"' + _STR + r'",'
    r'"uri":"\/(?:ask|health)(?:[?\/]' + _STR + r')?",'
    r'"status":(?P<status>\d{3}),"bytes":\d+,"request_length":\d+,'
    r'"request_time":(?P<request_time>\d+(?:\.\d+)?),'
    r'"upstream_response_time":"(?P<upstream_time>[^"]*)",'
    r'"upstream_status":"(?P<upstream_status>[^"]*)",'
    r'"upstream":"' + _STR + r'",'
    r'"cache":"(?P<cache>[^"]*)"'
)
_SEP = r"(?:, | : )"  # nginx joins tries with ", " and upstream groups (an internal redirect) with " : "
_ONE = r"[^,: ]+"


def render_program(buckets: Sequence[float] = STANDARD_BUCKETS) -> str:
    """The mtail program for nginx's ``ragperf_json`` access log with the histograms' ``buckets`` (pure)."""
    bounds = ", ".join(repr(float(b)) for b in (ZERO_FLOOR, *check_buckets("buckets", buckets)))
    lines = [
        "# Written by ragperf (ragperf.systems.monitoring.mtail.render_program): nginx's JSON access log. Do not edit.",
        f"# The first bound {ZERO_FLOOR} only makes mtail count 0-second requests in the first bucket.",
        "counter ragperf_nginx_requests_total by code, cache",
        f"histogram ragperf_nginx_request_duration_seconds by cache buckets {bounds}",
        f"histogram ragperf_nginx_upstream_duration_seconds buckets {bounds}",
        "counter ragperf_nginx_upstream_tries_total by upstream_status",
        "",
        f"/{_LINE}/ {{",
        '  $cache == "" {',
        '    ragperf_nginx_requests_total[$status]["-"]++',
        '    ragperf_nginx_request_duration_seconds["-"] = $request_time',
        "  } else {",
        "    ragperf_nginx_requests_total[$status][$cache]++",
        "    ragperf_nginx_request_duration_seconds[$cache] = $request_time",
        "  }",
        "  # the last try's time: the number that ends the field",
        r"  $upstream_time =~ /(?P<last_time>\d+(?:\.\d+)?)$/ {",
        "    ragperf_nginx_upstream_duration_seconds = $last_time",
        "  }",
        "  # retried requests only: one count per try, by its status",
        f"  $upstream_status =~ /^(?P<try_0>{_ONE}){_SEP}/ {{",
        "    ragperf_nginx_upstream_tries_total[$try_0]++",
        "  }",
    ]
    for k in range(1, MAX_TRIES):
        lines += [
            f"  $upstream_status =~ /^(?:{_ONE}{_SEP}){{{k}}}(?P<try_{k}>{_ONE})/ {{",
            f"    ragperf_nginx_upstream_tries_total[$try_{k}]++",
            "  }",
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


class MtailError(ChangeError, procs.ProcessError):
    """mtail could not be started, its program was refused, or it could not be stopped."""


@dataclass(frozen=True)
class MtailConfig(Config):
    """How mtail runs: the nginx access log it reads, where its ``/metrics`` listens, its histograms' buckets.

    Raises ValueError (naming the field and what is allowed) when a value is not valid.
    """

    log_path: Path
    listen_port: int
    state_dir: Path
    buckets: tuple[float, ...] = STANDARD_BUCKETS
    listen_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        for name in ("log_path", "state_dir"):
            value = getattr(self, name)
            if not isinstance(value, str | Path) or not Path(value).is_absolute():
                raise ValueError(f"{name}: must be an absolute path, not {value!r}")
            object.__setattr__(self, name, Path(value))
        bad = sorted({ch for ch in str(self.log_path) if ch in _BAD_LOG_CHARS})
        if bad:
            raise ValueError(
                f"log_path: must not hold {' '.join(repr(c) for c in bad)} (mtail reads --logs as comma-separated "
                f"glob patterns), not {str(self.log_path)!r}"
            )
        if any(ch in str(self.state_dir) for ch in "\n\r\0,"):
            raise ValueError("state_dir: must not hold line breaks, NUL characters or commas")
        check_int("listen_port", self.listen_port, 1, 65535)
        check_ipv4("listen_host", self.listen_host)
        object.__setattr__(self, "buckets", check_buckets("buckets", self.buckets))

    @property
    def url(self) -> str:
        """Where mtail's ``/metrics`` answers."""
        host = "127.0.0.1" if self.listen_host == "0.0.0.0" else self.listen_host
        return f"http://{host}:{self.listen_port}"


class MtailServer(procs.Server):
    """One mtail process whose program, record and log live in ``state_dir``; stopped by its recorded PID.

    It counts as started once ``GET /metrics`` answers 200 (mtail has opened the log by then, at its end). A start
    with the configuration it runs with does nothing; another one restarts it (its counters start from zero).
    """

    NAME = "mtail"
    WHAT = "mtail"
    RECORD = RECORD
    LOG = LOG
    CONFIG = MtailConfig
    ERROR = MtailError
    TIMEOUT = 20.0
    STOP_TIMEOUT = 10.0

    @property
    def program_path(self) -> Path:
        return self.state_dir / PROGRAM

    def start(self, cfg: MtailConfig) -> procs.Proc:
        """Start mtail (see :meth:`procs.Server.start`), creating nginx's log empty first when it is missing.

        Raises:
            MtailError: the log's folder does not exist, the program does not compile, or the start failed.
        """
        if not cfg.log_path.parent.is_dir():
            raise MtailError(f"log_path: the folder {cfg.log_path.parent} does not exist (is nginx set up?)")
        if not cfg.log_path.exists():
            cfg.log_path.touch(mode=0o644)  # see the module's docstring: a log that appears later loses lines
        return super().start(cfg)

    def files(self, cfg: MtailConfig) -> dict[str, str | None]:
        (self.state_dir / PROGS).mkdir(exist_ok=True)  # write_atomic writes inside the folder
        return {PROGRAM: render_program(cfg.buckets)}

    def check_files(self, files: Mapping[str, str]) -> None:
        """Compile the program with ``mtail --compile_only`` in a folder of its own before it is written."""
        check_program(files[PROGRAM], self.state_dir)

    def argv(self, cfg: MtailConfig) -> list[str]:
        return [
            mtail_binary(),
            "--progs", str(self.state_dir / PROGS),
            "--logs", str(cfg.log_path),
            "--address", cfg.listen_host,
            "--port", str(cfg.listen_port),
            "--logtostderr",
            "--emit_prog_label=false",
        ]  # fmt: skip

    def awaited(self, cfg: MtailConfig) -> str:
        return f"answer {cfg.url}/metrics"

    def ready(self, cfg: MtailConfig) -> str | None:
        return procs.http_ok(f"{cfg.url}/metrics")


def check_program(text: str, workdir: Path | None = None) -> None:
    """Raise MtailError with mtail's own error unless ``text`` compiles (``mtail --compile_only``)."""
    with tempfile.TemporaryDirectory(prefix=".mtail-check-", dir=workdir) as folder:
        (Path(folder) / "nginx.mtail").write_text(text, encoding="utf-8")
        argv = [mtail_binary(), "--compile_only", "--progs", folder, "--logtostderr", "--port", "0",
                "--address", "127.0.0.1"]  # fmt: skip
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MtailError(f"could not run {argv[0]} --compile_only: {exc}") from None
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if not line.startswith("I")] or [result.stderr[-500:]]
        raise MtailError("mtail refused the program: " + "\n".join(errors[-10:]))


def plan(current: MtailConfig | None, desired: MtailConfig | None) -> list[Change]:
    """The change that takes mtail from ``current`` (None: not running) to ``desired`` (None: stopped); none
    when they are equal."""
    if current == desired:
        return []
    if desired is None:
        reason = "stop mtail (nginx's per-request metrics end; the access log stays)"
        details: dict[str, Any] = {"action": "stop"}
    else:
        what = "start" if current is None else "restart"
        reason = (
            f"{what} mtail on {desired.url}: nginx's access log {desired.log_path} as per-request metrics "
            "(requests by status and cache status, request and upstream latency, retried upstream tries), "
            "read from the log's current end"
        )
        if current is not None:
            reason += " (its counters start from zero)"
        details = {"action": what, "url": desired.url}
    return [Change.of_config(KIND, CHANGE_NAME, current, desired, reason, details)]


class MtailApplier(procs.ServerApplier):
    """Makes and undoes ``mtail`` changes: mtail runs with ``after``; undo brings back ``before`` (None: stopped).
    See :class:`ragperf.core.procs.ServerApplier`."""

    kind = KIND
    SERVER = MtailServer
    TIMEOUT = 20.0
