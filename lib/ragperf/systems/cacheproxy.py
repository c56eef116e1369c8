"""The cache add-on as a process ragperf runs (the program itself is :mod:`ragperf.systems.cacheapp`).

:class:`ProxyServer` runs one add-on process (``sys.executable -m ragperf.systems.cacheapp``) whose files live
in a state directory: ``cacheproxy.json`` (the process record: PID, start time and the
:class:`ProxyConfig`, so another Python process can look at it or stop it) and ``cacheproxy.log`` (its
output). A start counts once ``GET /__cache/health`` answers. :class:`ProxyApplier` makes and undoes
``cacheproxy`` changes of the change model; :func:`plan` plans them.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError, Config, check_int, check_ipv4, config_diff, diff_text
from ragperf.systems import cacheapp, cachekeys
from ragperf.systems.monitoring.healthmon import STANDARD_BUCKETS, check_buckets, format_buckets

log = logging.getLogger(__name__)

KIND = "cacheproxy"
CHANGE_NAME = "cache"
RECORD = "cacheproxy.json"
LOG = "cacheproxy.log"


# -- the add-on as a process ragperf starts and stops --------------------------------------------------


class ProxyError(ChangeError):
    """The cache add-on could not be started, asked or stopped."""


@dataclass(frozen=True)
class ProxyConfig(Config):
    """How the cache add-on runs: where it listens, what it talks to, and its cache settings.

    ``upstream`` is the app's base URL (``http://host:port``), ``redis_url`` the Redis that holds the
    answers (``redis://host:port/db``, no password: the URL is on the command line and in the process
    record), ``state_dir`` where the process record and the log live. ``ttl_s`` and ``key_version`` are
    the cache's (see the module's docstring), ``timeout_s`` bounds the wait for the app,
    ``redis_timeout_s`` every Redis call (past it a request bypasses the cache), ``max_connections`` the
    pool to the app, ``buckets`` the bounds (seconds) of its ``/__cache/metrics`` latency histograms.

    Raises ValueError (naming the field and what is allowed) when a value is not valid.
    """

    listen_port: int
    upstream: str
    redis_url: str
    state_dir: Path
    ttl_s: int = 600
    key_version: str = "v1"
    timeout_s: float = 60.0
    redis_timeout_s: float = 0.2
    max_connections: int = 200
    listen_host: str = "127.0.0.1"
    buckets: tuple[float, ...] = STANDARD_BUCKETS

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir).absolute())
        check_int("listen_port", self.listen_port, 1, 65535)
        check_ipv4("listen_host", self.listen_host)
        object.__setattr__(self, "upstream", _check_upstream(self.upstream))
        _check_redis_url(self.redis_url)
        check_int("ttl_s", self.ttl_s, 1, 365 * 86400)
        if not isinstance(self.key_version, str) or not cachekeys.VERSION_RE.match(self.key_version):
            raise ValueError(f"key_version: must be 1-64 letters, digits, '.', '-' or '_', not {self.key_version!r}")
        _check_seconds("timeout_s", self.timeout_s, 0.001, 86400)
        _check_seconds("redis_timeout_s", self.redis_timeout_s, 0.001, 60)
        check_int("max_connections", self.max_connections, 1, 100_000)
        object.__setattr__(self, "buckets", check_buckets("buckets", self.buckets))
        host, port = _UPSTREAM_RE.match(self.upstream).group(1, 2)  # type: ignore[union-attr]
        if int(port) == self.listen_port and host in ("127.0.0.1", "localhost", self.listen_host):
            raise ValueError(f"upstream: {self.upstream} is the add-on's own address; give the app's")

    @property
    def url(self) -> str:
        """Where clients reach the add-on (the loopback address when it listens on every interface)."""
        host = "127.0.0.1" if self.listen_host == "0.0.0.0" else self.listen_host
        return f"http://{host}:{self.listen_port}"

    def argv(self) -> list[str]:
        """The command line that runs the add-on with this configuration (this Python,
        ``-m ragperf.systems.cacheapp``)."""
        return [
            sys.executable, "-m", "ragperf.systems.cacheapp",
            "--listen-host", self.listen_host,
            "--listen-port", str(self.listen_port),
            "--upstream", self.upstream,
            "--redis", self.redis_url,
            "--ttl", str(self.ttl_s),
            "--key-version", self.key_version,
            "--timeout", repr(float(self.timeout_s)),
            "--redis-timeout", repr(float(self.redis_timeout_s)),
            "--max-connections", str(self.max_connections),
            "--buckets", format_buckets(self.buckets),
        ]  # fmt: skip


_UPSTREAM_RE = re.compile(r"^http://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})/?$")
_REDIS_URL_RE = re.compile(r"^rediss?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})(?:/(\d{1,2}))?$")


def _check_seconds(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{name}: must be a number of seconds from {low:g} to {high:g}, not {value!r}")


def _check_upstream(value: object) -> str:
    """The upstream without a trailing slash; ValueError unless it is ``http://host:port``."""
    match = _UPSTREAM_RE.match(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise ValueError(f"upstream: {value!r} is not a base URL http://host:port (port 1-65535, no path)")
    return value.rstrip("/")  # type: ignore[union-attr]


def _check_redis_url(value: object) -> None:
    match = _REDIS_URL_RE.match(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise ValueError(
            f"redis_url: {value!r} is not redis://host:port[/db] (port 1-65535, no password: the URL is "
            "written to the command line and the process record)"
        )


class ProxyStatus(procs.ServerStatus, total=False):
    """:meth:`ProxyServer.status`: the server's fields, its URL and log, and its health counters when it runs."""

    url: str | None
    log: str
    health: dict[str, Any] | None
    health_error: str


class ProxyServer(procs.Server):
    """One cache add-on process whose record and log live in ``state_dir``; stopped by its recorded PID.

    The process record (``cacheproxy.json``: the process and its :class:`ProxyConfig`) lets any Python
    process look at or stop an add-on another one started. A start with the configuration it already
    runs with does nothing; another configuration restarts it (the answers in Redis stay; the counters
    start from zero). It counts once ``GET /__cache/health`` answers 200 (within ``timeout`` seconds).
    """

    NAME = "cacheproxy"
    WHAT = "cache add-on"
    RECORD = RECORD
    LOG = LOG
    CONFIG = ProxyConfig
    ERROR = ProxyError
    TIMEOUT = 20.0
    STOP_TIMEOUT = 10.0

    def argv(self, cfg: ProxyConfig) -> list[str]:
        return cfg.argv()

    def awaited(self, cfg: ProxyConfig) -> str:
        return f"answer {cfg.url}{cacheapp.HEALTH_PATH}"

    def ready(self, cfg: ProxyConfig) -> str | None:
        return procs.http_ok(f"{cfg.url}{cacheapp.HEALTH_PATH}")

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """The running add-on's ``/__cache/health``: its counters, ``redis_up`` and ``in_flight``.

        Raises:
            ProxyError: none runs, or it did not answer 200.
        """
        url = f"{self.url}{cacheapp.HEALTH_PATH}"
        try:
            with httpx.Client(timeout=timeout, trust_env=False) as client:
                response = client.get(url)
        except httpx.HTTPError as exc:
            raise ProxyError(f"the cache add-on did not answer {url} ({type(exc).__name__}: {exc})") from None
        if response.status_code != 200:
            raise ProxyError(f"{url} answered HTTP {response.status_code}: {response.text[:200]}")
        return response.json()

    def status(self) -> ProxyStatus:
        """What runs (JSON values): PID, port, URL, configuration, log, and the health counters when it runs."""
        base = super().status()
        running = base["running"]
        result = ProxyStatus(**base, url=self.url if running else None, log=str(self.log_path), health=None)
        if running:
            try:
                result["health"] = self.health()
            except ProxyError as exc:
                result["health_error"] = str(exc)
        return result


def plan(current: ProxyConfig | None, desired: ProxyConfig) -> list[Change]:
    """The change that takes the add-on from ``current`` (None: not running) to ``desired``; none when equal."""
    if current == desired:
        return []
    if current is None:
        reason = (
            f"start the cache add-on on {desired.url} in front of {desired.upstream}, sharing answers through "
            f"Redis ({desired.redis_url}, ttl {desired.ttl_s} s, key version {desired.key_version})"
        )
        details: dict[str, Any] = {"action": "start", "url": desired.url}
    else:
        diff = config_diff(current, desired)
        reason = f"restart the cache add-on: {diff_text(diff)}" + (
            " (a new key version starts from an empty cache)"
            if "key_version" in diff
            else " (the answers in Redis stay; its counters start from zero)"
        )
        details = {"action": "restart", "url": desired.url, "diff": diff}
    return [Change.of_config(KIND, CHANGE_NAME, current, desired, reason, details)]


class ProxyApplier(procs.ServerApplier):
    """Makes and undoes ``cacheproxy`` changes: starts (or restarts) the add-on with ``after``; undo brings back
    ``before``, or stops the add-on when ``before`` is None (see :class:`ragperf.core.procs.ServerApplier`)."""

    kind = KIND
    SERVER = ProxyServer
    TIMEOUT = 20.0
