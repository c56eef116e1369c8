"""A caching nginx in front of the RAG service, started, reloaded and stopped by ragperf.

Phase 2 caches the service's answers without touching the app: nginx listens on its own port,
passes requests to the app, and keeps the ``200`` answers of ``POST /ask`` for ``ttl_s`` seconds,
keyed by the request method, URI, content type and the whole request body. Phase 4 uses the same
configuration with the cache off and several upstreams as a load balancer.

Its configuration's text, and how caching POST in nginx avoids its traps, is :mod:`~ragperf.systems.nginxconf`.

A reload (SIGHUP) counts only once the ping location answers with the new configuration's digest
*and* every worker of the old configuration has stopped accepting: for a moment after a reload the
master runs new and old workers side by side, and both take new connections.

:class:`Nginx` runs one instance whose every file lives in a state directory: the configuration,
``nginx.json`` (the process record, so another Python process can stop it), logs, temporary files
and the cache. :class:`NginxApplier` makes and undoes ``nginx`` changes of the change model.
:func:`retried` reads the requests its access log shows were passed on from one upstream to another.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import json
import logging
import os
import pwd
import re
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError, Config, StateApplier, check_int, config_diff, diff_text
from ragperf.systems import nginxconf
from ragperf.systems.nginxconf import NGINX_BIN, NginxError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

KIND = "nginx"
CHANGE_NAME = "cache"
CONF = "nginx.conf"
CONF_PREV = "nginx.conf.prev"
RECORD = "nginx.json"
KEY_VERSION_FILE = "cache-key-version"
MAX_BODY_KB_LIMIT = 1024
# proxy_next_upstream's cases but non_idempotent, which is always on
NEXT_UPSTREAM_CASES = ("error", "timeout", "invalid_header", "http_500", "http_502", "http_503", "http_504",
                       "http_403", "http_404", "http_429")  # fmt: skip
_UPSTREAM_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})$")
_HEADER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/@+-]*$")


@dataclass(frozen=True)
class CacheConfig(Config):
    """What the nginx in front of the service should do.

    ``upstreams`` are ``host:port`` addresses of the app (several make a ``least_conn`` load
    balancer); ``state_dir`` holds every file of the instance. With ``cache_enabled`` False nginx
    is a plain reverse proxy. ``ttl_s`` is how long a ``200`` answer is served from the cache,
    ``cache_size_mb`` the disk the cache may use, ``max_body_kb`` the largest request body that is
    cached (larger ones pass through uncached). ``proxy_timeout_s`` bounds the wait for the app,
    and the wait of concurrent misses for the one request that fills the cache. ``cache_lock`` makes
    concurrent misses of one key wait for that one request (nginx polls the lock every 500 ms); leave
    it off when something behind nginx coalesces misses itself without that delay.

    With several upstreams (Phase 4's balancer) each server is left out for ``fail_timeout_s`` once it
    failed ``max_fails`` times within ``fail_timeout_s`` (open-source nginx checks passively only), and a
    request that meets one of ``next_upstream`` (by default an error, a timeout or a 503) is passed on to another
    server, POST included (``non_idempotent`` is always added), at most ``next_upstream_tries`` attempts in all and
    within ``next_upstream_timeout_s`` of the first. A 502 is not retried by default: nginx's own 502 for a server
    it cannot reach is an ``error`` already, and the app answers 502 when its LLM provider fails (the provider's
    429 under load), so retrying those only multiplies the load on the provider and, each one counting as a
    failure, takes healthy servers out until none is left (measured: every request of the step then failed).
    nginx tries each server at most once per request, so ``next_upstream_tries`` may be at most one more
    than the number of upstreams (the one more lets a host name stand for two addresses, and keeps the
    default valid for two upstreams). With one upstream these four are checked but not used: nginx ignores
    ``max_fails`` for a lone server, and the configuration stays Phase 2's, byte for byte.
    """

    listen_port: int
    upstreams: tuple[str, ...]
    state_dir: Path
    cache_enabled: bool = True
    ttl_s: int = 600
    cache_size_mb: int = 256
    max_body_kb: int = 16
    proxy_timeout_s: float = 60.0
    cache_status_header: str = "X-Cache-Status"
    listen_host: str = "127.0.0.1"
    cache_lock: bool = True
    status_port: int = 0
    max_fails: int = 1
    fail_timeout_s: int = 10
    next_upstream_tries: int = 3
    next_upstream_timeout_s: float = 30.0
    next_upstream: tuple[str, ...] = ("error", "timeout", "http_503")

    def __post_init__(self) -> None:
        upstreams = (self.upstreams,) if isinstance(self.upstreams, str) else tuple(self.upstreams)
        object.__setattr__(self, "upstreams", upstreams)
        object.__setattr__(self, "state_dir", Path(self.state_dir).absolute())
        check_int("listen_port", self.listen_port, 1, 65535)
        if not upstreams:
            raise ValueError("upstreams: give at least one 'host:port' address of the app")
        for address in upstreams:
            match = _UPSTREAM_RE.match(address) if isinstance(address, str) else None
            if match is None or not 1 <= int(match.group(1)) <= 65535:
                raise ValueError(f"upstreams: {address!r} is not a 'host:port' address (port 1-65535)")
        if len(set(upstreams)) != len(upstreams):
            raise ValueError(f"upstreams: {list(upstreams)} lists an address twice")
        if not _SAFE_PATH_RE.match(str(self.state_dir)):
            raise ValueError(
                f"state_dir: {str(self.state_dir)!r} may hold only letters, digits and . _ / @ + - "
                "(it is written into nginx.conf unquoted)"
            )
        for name in ("cache_enabled", "cache_lock"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: must be True or False, not {getattr(self, name)!r}")
        check_int("ttl_s", self.ttl_s, 1, 365 * 86400)
        check_int("status_port", self.status_port, 0, 65535)
        if self.status_port and self.status_port == self.listen_port:
            raise ValueError(f"status_port: {self.status_port} is listen_port too; give another port (0: none)")
        check_int("cache_size_mb", self.cache_size_mb, 1, 1024 * 1024)
        check_int("max_body_kb", self.max_body_kb, 1, MAX_BODY_KB_LIMIT)
        _check_seconds("proxy_timeout_s", self.proxy_timeout_s)
        self._check_balancing()
        header = self.cache_status_header
        if not isinstance(header, str) or not _HEADER_RE.match(header):
            raise ValueError(f"cache_status_header: {header!r} is not an HTTP header name (letters, digits, '-')")
        try:
            ipaddress.IPv4Address(self.listen_host)
        except ValueError:
            raise ValueError(
                f"listen_host: {self.listen_host!r} is not an IPv4 address (0.0.0.0 for every interface)"
            ) from None

    def _check_balancing(self) -> None:
        check_int("max_fails", self.max_fails, 1, 100)
        check_int("fail_timeout_s", self.fail_timeout_s, 1, 3600)
        check_int("next_upstream_tries", self.next_upstream_tries, 1, 20)
        _check_seconds("next_upstream_timeout_s", self.next_upstream_timeout_s)
        cases = (self.next_upstream,) if isinstance(self.next_upstream, str) else tuple(self.next_upstream)
        object.__setattr__(self, "next_upstream", cases)
        unknown = [c for c in cases if c not in NEXT_UPSTREAM_CASES]
        if not cases or unknown:
            raise ValueError(f"next_upstream: {list(cases)} must name one or more of {', '.join(NEXT_UPSTREAM_CASES)}")
        servers = len(self.upstreams)
        if servers > 1 and self.next_upstream_tries > servers + 1:
            raise ValueError(
                f"next_upstream_tries: {self.next_upstream_tries} with {servers} upstreams; nginx tries each server "
                f"at most once per request, so give 1 to {servers + 1}"
            )

    @property
    def url(self) -> str:
        """Where clients reach nginx (the loopback address when it listens on every interface)."""
        host = "127.0.0.1" if self.listen_host == "0.0.0.0" else self.listen_host
        return f"http://{host}:{self.listen_port}"

    @property
    def status_url(self) -> str | None:
        """nginx's ``stub_status`` page (loopback only), for the nginx exporter; None when there is none."""
        return f"http://127.0.0.1:{self.status_port}{nginxconf.STATUS_PATH}" if self.status_port else None


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.001 <= value <= 86400:
        raise ValueError(f"{name}: must be a number of seconds from 0.001 to 86400, not {value!r}")


def _worker_user() -> tuple[str, int, int] | None:
    """The ``user`` directive for a root master (``nobody`` and its group), or None when not root."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("nobody")
    group = grp.getgrgid(entry.pw_gid).gr_name
    return f"{entry.pw_name} {group}", entry.pw_uid, entry.pw_gid


def _check_reachable(state_dir: Path, uid: int, gid: int) -> None:
    """The workers (``uid``) must be able to traverse every directory down to ``state_dir``."""
    directory = procs.unreachable(state_dir, uid, [gid])
    if directory is not None:
        raise NginxError(
            f"the nginx workers (uid {uid}) cannot enter {directory} (mode {directory.stat().st_mode & 0o777:o}); "
            f"make it reachable, e.g. chmod 0755 {directory}"
        )


def _processes() -> list[tuple[int, int, int]]:
    """``(pid, parent pid, process group)`` of every live (not zombie) process."""
    table = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        if rest[0] != "Z":
            table.append((int(entry.name), int(rest[1]), int(rest[2])))
    return table


def _group_members(pgid: int) -> list[int]:
    """PIDs of live processes in process group ``pgid``."""
    return [pid for pid, _, group in _processes() if group == pgid]


def _orphaned_workers(master: procs.Proc) -> list[int]:
    """nginx processes a dead ``master`` left behind in its process group (it was killed, not stopped).

    Only while the master's PID is unused: the group then still is the one the master led, and no
    other process can have taken its number.
    """
    if procs.start_ticks(master.pid) is not None:
        return []
    return [pid for pid in _group_members(master.pid) if _title(pid).startswith("nginx: ")]


def _title(pid: int) -> str:
    """A process's title (nginx rewrites it: "nginx: worker process", "... is shutting down")."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _accepting_workers(master: int) -> list[int]:
    """The master's worker processes that still accept connections (not shutting down)."""
    children = [pid for pid, parent, _ in _processes() if parent == master]
    return [pid for pid in children if "worker process" in (title := _title(pid)) and "shutting down" not in title]


def _ping(host: str, port: int, timeout: float = 2.0) -> str | None:
    """The configuration digest the ping location answers with, or None if nginx does not answer."""
    if host == "0.0.0.0":
        host = "127.0.0.1"
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{nginxconf.PING_PATH}", timeout=timeout) as response:
            return response.headers.get(nginxconf.CONFIG_HEADER) if response.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def _serves(cfg: CacheConfig, digest: str | None) -> str | None:
    """None when nginx on ``cfg``'s port answers with configuration ``digest``; else what it serves."""
    seen = _ping(cfg.listen_host, cfg.listen_port)
    return None if seen == digest else f"it serves {seen or 'nothing'}, not {digest}"


class Nginx(procs.Server):
    """One nginx instance whose files all live in ``state_dir``.

    The process record (``nginx.json``: PID, start time, configuration and its digest) is kept in
    the state directory, so any process can look at or stop an instance another one started. A start
    checks the configuration with ``nginx -t`` first (:class:`~ragperf.systems.nginxconf.NginxConfigError`,
    nothing started) and is refused while nginx runs: a running nginx takes a new configuration by
    :meth:`reload`. A stop is nginx's fast shutdown; workers a killed master left behind (same process
    group) are killed too.
    """

    NAME = "nginx"
    WHAT = "nginx"
    RECORD = RECORD
    LOG = "nginx.log"
    CONFIG = CacheConfig
    ERROR = NginxError
    STOP_TIMEOUT = 10.0

    def __init__(self, state_dir: Path, *, nginx_bin: str = NGINX_BIN, timeout: float | None = None) -> None:
        super().__init__(state_dir, timeout=timeout)
        self.nginx_bin = nginx_bin

    # -- files --------------------------------------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        return self.state_dir / CONF

    @property
    def error_log(self) -> Path:
        return self.state_dir / "error.log"

    @property
    def access_log(self) -> Path:
        """nginx's access log: one JSON object a line (see :func:`retried`)."""
        return self.state_dir / "access.log"

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def key_version(self) -> int:
        """The cache-key version in use (kept in the state directory, it only grows)."""
        text = nginxconf.read_or_empty(self.state_dir / KEY_VERSION_FILE).strip()
        return int(text) if text.isdigit() else 1

    def status(self) -> dict[str, Any]:
        """What runs: PID, port, digest, key version, configuration (JSON values)."""
        result = super().status()
        record, cfg = self._record() or {}, self.config
        return result | {
            "digest": record.get("digest") if cfg else None,
            "serving_digest": _ping(cfg.listen_host, cfg.listen_port) if cfg else None,
            "key_version": self.key_version,
        }

    # -- the life cycle's hooks -------------------------------------------------------------------------

    def files(self, cfg: CacheConfig) -> dict[str, str | None]:
        return {CONF: self._render(cfg)}

    def check_files(self, files: Mapping[str, str]) -> None:
        worker = _worker_user()
        if worker:
            _check_reachable(self.state_dir, worker[1], worker[2])
        nginxconf.check(files[CONF], self.state_dir, nginx_bin=self.nginx_bin)

    def argv(self, cfg: CacheConfig) -> list[str]:
        return [self.nginx_bin, "-c", str(self.conf_path), "-p", f"{self.state_dir}/", "-e", str(self.error_log),
                "-g", "daemon off;"]  # fmt: skip

    def record_extra(self, cfg: CacheConfig, files: Mapping[str, str]) -> dict[str, Any]:
        return {"digest": nginxconf.rendered_digest(files[CONF]) or "", "key_version": self.key_version}

    def awaited(self, cfg: CacheConfig) -> str:
        return f"serve its configuration on port {cfg.listen_port}"

    def ready(self, cfg: CacheConfig) -> str | None:
        return _serves(cfg, (self._record() or {}).get("digest"))

    def on_running(self, proc: procs.Proc, cfg: CacheConfig) -> procs.Proc | None:
        raise NginxError(f"nginx already runs from {self.state_dir} (pid {proc.pid}); reload it instead")

    def after_stop(self, proc: procs.Proc) -> None:
        leftovers = _orphaned_workers(proc)
        for pid in leftovers:
            log.warning("killing nginx process %d left behind by its master %d", pid, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while leftovers and _orphaned_workers(proc) and time.monotonic() < deadline:
            time.sleep(0.05)

    def tail(self, proc: procs.Proc) -> str:
        errors = "\n".join(nginxconf.read_or_empty(self.error_log).splitlines()[-15:])
        return f"its error log {self.error_log} ends:\n{errors}\n{super().tail(proc)}"

    def _render(self, cfg: CacheConfig) -> str:
        self._check_state_dir(cfg)
        worker = _worker_user()
        return nginxconf.render(cfg, key_version=self.key_version, user=worker[0] if worker else None)

    # -- reload and purge -------------------------------------------------------------------------------

    def reload(self, cfg: CacheConfig) -> None:
        """Check ``cfg`` first, then switch the running nginx to it without dropping requests.

        A configuration nginx rejects changes nothing (the running one keeps serving, ``nginx.conf``
        is untouched). Otherwise the file is replaced (the old one kept as ``nginx.conf.prev``), the
        master gets SIGHUP, and the reload counts only once the ping location reports the new digest
        and no worker of the old configuration accepts connections any more (for a moment after
        SIGHUP both accept); if it never does, the previous file is put back.

        Raises:
            NginxConfigError: nginx rejected the configuration.
            NginxError: nginx does not run, or did not take the new configuration.
        """
        record, proc = self._record(), self.proc
        if record is None or proc is None or not procs.is_alive(proc):
            raise NginxError(f"nginx does not run from {self.state_dir}; start it instead")
        text = self._render(cfg)
        nginxconf.check(text, self.state_dir, nginx_bin=self.nginx_bin)
        digest = nginxconf.rendered_digest(text) or ""
        old_cfg = CacheConfig.from_dict(record["config"])
        if digest == record.get("digest") and _ping(old_cfg.listen_host, old_cfg.listen_port) == digest:
            return
        if (cfg.listen_host, cfg.listen_port) != (old_cfg.listen_host, old_cfg.listen_port):
            self._check_port(cfg)
        previous = nginxconf.read_or_empty(self.conf_path)
        if previous:
            procs.write_atomic(self.state_dir / CONF_PREV, previous)
        procs.write_atomic(self.conf_path, text)
        old_workers = set(_accepting_workers(proc.pid))

        def taken() -> str | None:
            still = old_workers & set(_accepting_workers(proc.pid))
            return _serves(cfg, digest) or (f"old workers {sorted(still)} still accept connections" if still else None)

        os.kill(proc.pid, signal.SIGHUP)
        try:
            procs.wait_until(
                taken,
                timeout=self.timeout,
                what=f"nginx did not serve configuration {digest} on port {cfg.listen_port} after reload",
                proc=proc,
                error=NginxError,
                tail=lambda: self.tail(proc),
            )
        except NginxError as exc:
            if previous:
                procs.write_atomic(self.conf_path, previous)
                if procs.is_alive(proc):
                    os.kill(proc.pid, signal.SIGHUP)
            raise NginxError(f"nginx did not take the new configuration; the previous one is back: {exc}") from exc
        self._save_record(proc, cfg, digest=digest, key_version=self.key_version)
        log.info("nginx in %s reloaded (configuration %s)", self.state_dir, digest)

    def purge(self) -> int:
        """Make every cached answer unreachable at once; return the new cache-key version.

        The key version (the first part of each cache key) is bumped. A running nginx is reloaded,
        so from then on every request misses and fills the cache afresh; the old files are never
        read again and the cache manager deletes them once they are ``ttl_s`` old or the cache is
        full. Files are not deleted under a running nginx: its shared index and in-flight writes
        still refer to them. When nginx does not run, the cache directory is emptied as well.
        The version only grows, so undoing a configuration change cannot bring old answers back.
        """
        version = self.key_version + 1
        procs.write_atomic(self.state_dir / KEY_VERSION_FILE, f"{version}\n")
        record = self._record()
        if record is not None and self.running:
            self.reload(CacheConfig.from_dict(record["config"]))
        elif self.cache_dir.exists():
            for child in self.cache_dir.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        return version


RETRIED_COLUMNS = ("time", "status", "upstreams", "upstream_statuses", "request_time")
_UPSTREAM_SEP = re.compile(r", | : ")  # between servers tried; between server groups (an internal redirect)


def entries(access_log: Path, *, since: float | None = None, until: float | None = None) -> pd.DataFrame:
    """The requests in nginx's JSON ``access_log``, one row each in the log's order: ``time`` (epoch seconds, whole
    seconds as nginx logs them, when the request ended), ``status`` (the client's), ``upstreams`` (the addresses
    tried, in order; nginx's upstream group name for an attempt no live server was left for), ``upstream_statuses``
    (one status each; int, None where nginx wrote none) and ``request_time`` (seconds). ``since``/``until`` keep the
    rows whose time lies within them (both included). A missing log has no rows; a last line nginx is still writing
    is left out.

    Raises:
        ValueError: a line is not one of the log's JSON objects (the message names the line).
    """
    import pandas as pd  # only here: the programs ragperf runs import this module and stay light

    rows = [_retry_row(entry) for entry in _log_entries(access_log)]
    rows = [row for row in rows if (since is None or row["time"] >= since) and (until is None or row["time"] <= until)]
    return pd.DataFrame(rows, columns=list(RETRIED_COLUMNS))


def retried(access_log: Path, *, since: float | None = None, until: float | None = None) -> pd.DataFrame:
    """The requests of :func:`entries` that nginx tried on more than one upstream (a failover, or a retry)."""
    rows = entries(access_log, since=since, until=until)
    return rows[rows["upstreams"].map(len) > 1].reset_index(drop=True)


def _log_entries(access_log: Path) -> list[dict[str, Any]]:
    """The access log's JSON objects; what follows the last newline (nothing, or a line being written) is not."""
    entries = []
    for number, line in enumerate(nginxconf.read_or_empty(Path(access_log)).split("\n")[:-1], start=1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{access_log}: line {number} is not a JSON access-log entry ({exc})") from None
        if not isinstance(entry, dict) or not {"time", "status", "upstream", "upstream_status"} <= set(entry):
            raise ValueError(f"{access_log}: line {number} lacks time, status, upstream or upstream_status")
        entries.append(entry)
    return entries


def _retry_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One access-log entry as a row of :func:`retried`."""
    statuses = _upstream_parts(entry["upstream_status"])
    return {
        "time": datetime.fromisoformat(entry["time"]).timestamp(),
        "status": entry["status"],
        "upstreams": _upstream_parts(entry["upstream"]),
        "upstream_statuses": [int(s) if s.isdigit() else None for s in statuses],
        "request_time": entry.get("request_time"),
    }


def _upstream_parts(value: str) -> list[str]:
    """``$upstream_addr`` or ``$upstream_status`` split into one part per attempt ("" when nginx made none)."""
    return [part.strip() for part in _UPSTREAM_SEP.split(value)] if value else []


def plan(current: CacheConfig | None, desired: CacheConfig, *, name: str = CHANGE_NAME) -> list[Change]:
    """The change that takes nginx from ``current`` (None: not running) to ``desired``; none when equal. ``name``
    tells apart two nginx of one phase (Phase 4's load balancer beside Phase 2's cache)."""
    if current == desired:
        return []
    if current is not None and current.state_dir != desired.state_dir:
        raise ChangeError(
            f"state_dir: the running nginx lives in {current.state_dir}, the desired one in {desired.state_dir}; "
            "stop the old instance first"
        )
    if current is None:
        reason = f"start a {'caching ' if desired.cache_enabled else ''}nginx on port {desired.listen_port}"
        details: dict[str, Any] = {"action": "start"}
    else:
        diff = config_diff(current, desired)
        reason = f"reload nginx: {diff_text(diff)}"
        details = {"action": "reload", "diff": diff}
    return [Change.of_config(KIND, name, current, desired, reason, details)]


class NginxApplier(StateApplier):
    """Makes and undoes ``nginx`` changes: ``after`` (a :class:`CacheConfig` as a dict) is started or
    reloaded; undo reloads (or starts) ``before``, or stops nginx when ``before`` is None.

    Both are idempotent: a configuration nginx already serves is not reloaded, stopping a stopped
    nginx does nothing, so undo is safe after an apply that failed half way.
    """

    kind = KIND

    def __init__(self, *, nginx_bin: str = NGINX_BIN, timeout: float = 15.0) -> None:
        self.nginx_bin = nginx_bin
        self.timeout = timeout

    def become(self, state: Mapping[str, Any] | None, other: Mapping[str, Any] | None) -> None:
        if state is None and other is None:
            return
        if state is None:
            Nginx(Path(other["state_dir"]), nginx_bin=self.nginx_bin, timeout=self.timeout).stop()
            return
        cfg = CacheConfig.from_dict(state)
        instance = Nginx(cfg.state_dir, nginx_bin=self.nginx_bin, timeout=self.timeout)
        if instance.running:
            instance.reload(cfg)
        else:
            instance.start(cfg)
