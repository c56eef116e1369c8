"""The text of the caching nginx's configuration: nginx.conf rendered from a
:class:`~ragperf.systems.nginx.CacheConfig`, its digest, and ``nginx -t``.

Caching POST in nginx has several traps, each handled by :func:`render`:

* nginx caches GET and HEAD only unless ``proxy_cache_methods POST`` names POST.
* The default cache key ignores the body, so every question would share one answer: the key here is
  ``ragperf:v<key version> <method> <request URI> <content type>`` + newline + ``$request_body``.
  nginx 1.22 rejects spaces and control characters in the request line and a header value holds no
  newline, so the parts cannot run into each other.
* ``$request_body`` is empty whenever nginx has written the body to a temporary file. All such
  requests would then share the key of the empty body. nginx 1.22 keeps a body in memory while the
  part not read along with the headers is below 1.25 x ``client_body_buffer_size``; the buffer is
  sized (:func:`body_buffer_bytes`) so that every body of up to ``max_body_kb`` KiB stays in memory.
  A POST whose ``$request_body`` is empty (too large, or really empty) is neither looked up in nor
  stored into the cache (``proxy_cache_bypass`` and ``proxy_no_cache``): its status header says
  ``BYPASS``. Bodies up to ``client_max_body_size`` (at least 1 MiB) still reach the app.
* nginx writes the whole key into each cache entry's header, which must fit in
  ``proxy_buffer_size`` (4k by default); for a longer key it logs an error and silently skips the
  cache (no status at all). With the default, no question over about 3.8 KB would ever be cached,
  so the buffer is sized for ``max_body_kb`` (:func:`key_buffer_bytes`).
* Only POST requests are cached; GET (``/health``, ``/docs`` ...) always reaches the app.
* Only ``200`` answers are kept: the validity comes from ``proxy_cache_valid 200`` alone, because
  ``Cache-Control``, ``Expires`` and ``X-Accel-Expires`` from the app are ignored. ``Set-Cookie``
  is deliberately *not* ignored: nginx then never caches an answer that sets a cookie, so one
  user's cookie can never be served to another. The app sets no cookies, so nothing is lost.
* ``proxy_cache_lock``: concurrent misses of one key wait for a single upstream request. nginx
  checks a held lock every 500 ms, so the waiting requests answer up to half a second after the first.
* The upstream keeps idle connections (HTTP/1.1, ``Connection ""``) for 4 s, less than uvicorn's
  5 s keep-alive, so nginx does not send a POST on a connection the app is closing; should that
  happen anyway, ``proxy_next_upstream error non_idempotent`` retries it once on a fresh connection
  (asking a question changes nothing in the app).

With several upstreams nginx is Phase 4's load balancer (:func:`upstream_lines`, :func:`retry_lines`):

* Without a ``zone`` each worker keeps its own ``least_conn`` counts and its own idea of which server
  failed; the shared zone gives every worker one count and one failure state.
* Open-source nginx checks servers passively only: a server that fails ``max_fails`` times within
  ``fail_timeout`` is left out for ``fail_timeout``, then tried again with real requests.
* nginx passes a POST on to another server after a refused connection, but never one it has already
  sent unless ``proxy_next_upstream`` names ``non_idempotent``: without it, every request a server holds
  when it dies fails. The app's only POST, ``/ask``, changes nothing, so retrying it is safe.
  ``proxy_next_upstream_tries`` and ``proxy_next_upstream_timeout`` bound how often and for how long.

With one upstream the text is Phase 2's, unchanged.

The ping location answers with the digest of the rendered text (:func:`rendered_digest`), so a reload
can be confirmed. The process that runs this text is :class:`ragperf.systems.nginx.Nginx`.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ragperf.core.changes import ChangeError

if TYPE_CHECKING:
    from ragperf.systems.nginx import CacheConfig

NGINX_BIN = "nginx"
PING_PATH = "/__nginx_ping"
STATUS_PATH = "/stub_status"  # nginx's counters, on status_port only
CONFIG_HEADER = "X-Ragperf-Config"
CACHE_ZONE = "ragperf_cache"
UPSTREAM = "ragperf_app"
KEYS_ZONE_MB = 16  # about 128 000 keys; fixed so that a reload never has to resize the shared zone
UPSTREAM_KEEPALIVE = 64  # idle connections to the app each worker keeps
UPSTREAM_KEEPALIVE_S = 4  # below uvicorn's default keep-alive of 5 s
UPSTREAM_ZONE_KB = 256  # the balancer's shared state: room for far more servers than a lab runs
_DIGEST_PLACEHOLDER = "@@RAGPERF_CONFIG_DIGEST@@"


class NginxError(ChangeError):
    """nginx could not be started, reloaded or stopped."""


class NginxConfigError(NginxError):
    """nginx rejected a configuration; the message is nginx's own."""


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def render(cfg: CacheConfig, *, key_version: int = 1, user: str | None = None) -> str:
    """The complete nginx.conf for ``cfg``: a pure function of its arguments.

    ``key_version`` is the first part of every cache key (bumping it makes every cached answer
    unreachable, see :meth:`ragperf.systems.nginx.Nginx.purge`); ``user`` is the ``user`` directive for the workers
    (``"nobody nogroup"``), for a master running as root only. The ping location
    ``/__nginx_ping`` answers 200 with the header ``X-Ragperf-Config: <digest of this text>``, so a
    reload can be confirmed.
    """
    d = cfg.state_dir
    body_limit_kb = max(1024, 4 * cfg.max_body_kb)
    body_buffer, key_buffer = body_buffer_bytes(cfg.max_body_kb), key_buffer_bytes(cfg.max_body_kb)
    # proxy_busy_buffers_size must be at least proxy_buffer_size and below all proxy_buffers but one.
    proxy_buffers = max(8, key_buffer // 8192 + 3)
    lock_s = max(1, math.ceil(cfg.proxy_timeout_s))
    header = cfg.cache_status_header
    log_format = (
        '{"time":"$time_iso8601","remote":"$remote_addr","method":"$request_method","uri":"$request_uri",'
        '"status":$status,"bytes":$body_bytes_sent,"request_length":$request_length,'
        '"request_time":$request_time,"upstream_response_time":"$upstream_response_time",'
        '"upstream_status":"$upstream_status","upstream":"$upstream_addr","cache":"$upstream_cache_status",'
        '"connection_requests":$connection_requests}'
    )
    lines = [
        "# Written by ragperf (ragperf.systems.nginx.render); every path is inside the state directory.",
    ]
    if user:
        lines += [f"user {user};", "worker_rlimit_nofile 16384;"]
    lines += [
        "worker_processes auto;",
        "master_process on;",
        f"worker_shutdown_timeout {lock_s + 10}s;",
        f"pid {d}/nginx.pid;",
        f"error_log {d}/error.log warn;",
        "",
        "events {",
        "    worker_connections 4096;",
        "}",
        "",
        "http {",
        "    default_type application/octet-stream;",
        "    server_tokens off;",
        f"    client_body_temp_path {d}/client_body_temp;",
        f"    proxy_temp_path {d}/proxy_temp;",
        f"    fastcgi_temp_path {d}/fastcgi_temp;",
        f"    uwsgi_temp_path {d}/uwsgi_temp;",
        f"    scgi_temp_path {d}/scgi_temp;",
        "",
        f"    log_format ragperf_json escape=json '{log_format}';",
        f"    access_log {d}/access.log ragperf_json;",
        "",
        "    # $request_body (and so the cache key) holds the body only while it is in memory: nginx keeps",
        "    # it there while (body - bytes read with the headers) < 1.25 x the buffer,",
        f"    # so every body of up to {cfg.max_body_kb} KiB.",
        f"    client_max_body_size {body_limit_kb}k;",
        f"    client_body_buffer_size {body_buffer};",
        "    client_body_in_single_buffer on;",
        "",
        *upstream_lines(cfg),
        "",
    ]
    if cfg.cache_enabled:
        lines += [
            "    # 0 (cacheable) only for a POST whose body nginx holds in memory; an empty $request_body",
            "    # (no body, or one too large for the buffer) must never be looked up nor stored.",
            '    map "$request_method:$request_body" $ragperf_no_cache {',
            "        volatile;",
            "        default 1;",
            '        "POST:" 1;',
            "        ~^POST: 0;",
            "    }",
            "",
            f"    proxy_cache_path {d}/cache levels=1:2 keys_zone={CACHE_ZONE}:{KEYS_ZONE_MB}m "
            f"max_size={cfg.cache_size_mb}m inactive={cfg.ttl_s}s use_temp_path=off;",
            "",
        ]
    proxy_common = [
        f"            proxy_pass http://{UPSTREAM};",
        "            proxy_http_version 1.1;",
        '            proxy_set_header Connection "";',
        "            proxy_set_header Host $host;",
        "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "            proxy_set_header X-Real-IP $remote_addr;",
        f"            proxy_connect_timeout {_ms(min(cfg.proxy_timeout_s, 10.0))};",
        f"            proxy_send_timeout {_ms(cfg.proxy_timeout_s)};",
        f"            proxy_read_timeout {_ms(cfg.proxy_timeout_s)};",
        *retry_lines(cfg),
    ]
    lines += [
        "    server {",
        f"        listen {cfg.listen_host}:{cfg.listen_port} backlog=4096;",
        "        server_name localhost;",
        "",
        f"        location = {PING_PATH} {{",
        "            access_log off;",
        "            default_type text/plain;",
        f"            add_header {CONFIG_HEADER} {_DIGEST_PLACEHOLDER} always;",
        '            return 200 "ok\\n";',
        "        }",
        "",
        "        location = /health {",
        *proxy_common,
        "        }",
        "",
        "        location / {",
        *proxy_common,
    ]
    if cfg.cache_enabled:
        lines += [
            f"            proxy_cache {CACHE_ZONE};",
            "            proxy_cache_methods POST;",
            f'            proxy_cache_key "ragperf:v{key_version} $request_method $request_uri $content_type\\n'
            '$request_body";',
            f"            proxy_cache_valid 200 {cfg.ttl_s}s;",
            "            proxy_ignore_headers Cache-Control Expires X-Accel-Expires;",
            "            proxy_cache_bypass $ragperf_no_cache;",
            "            proxy_no_cache $ragperf_no_cache;",
        ]
        if cfg.cache_lock:
            lines += [
                "            proxy_cache_lock on;",
                f"            proxy_cache_lock_timeout {lock_s}s;",
                f"            proxy_cache_lock_age {lock_s}s;",
            ]
        lines += [
            f"            add_header {header} $upstream_cache_status always;",
            "            # The whole key is written into each cache entry's header, which must fit in",
            "            # proxy_buffer_size; nginx silently skips the cache for a longer key.",
            f"            proxy_buffer_size {key_buffer // 1024}k;",
            f"            proxy_buffers {proxy_buffers} 8k;",
            f"            proxy_busy_buffers_size {key_buffer // 1024}k;",
        ]
    lines += ["        }", "    }"]
    if cfg.status_port:
        lines += [
            "",
            "    # Phase 3: nginx's own counters for the nginx exporter, on a port of their own, loopback only.",
            "    server {",
            f"        listen 127.0.0.1:{cfg.status_port};",
            f"        location = {STATUS_PATH} {{",
            "            stub_status;",
            "            access_log off;",
            "            allow 127.0.0.1;",
            "            deny all;",
            "        }",
            "        location / {",
            "            return 404;",
            "        }",
            "    }",
        ]
    lines += ["}", ""]
    text = "\n".join(lines)
    return text.replace(_DIGEST_PLACEHOLDER, config_digest(text))


def upstream_lines(cfg: CacheConfig) -> list[str]:
    """The ``upstream`` block: one server as Phase 2 has it, or several as a shared ``least_conn`` balancer."""
    keepalive = [
        f"        keepalive {UPSTREAM_KEEPALIVE};",
        f"        keepalive_timeout {UPSTREAM_KEEPALIVE_S}s;",
        "    }",
    ]
    if len(cfg.upstreams) == 1:
        return [f"    upstream {UPSTREAM} {{", f"        server {cfg.upstreams[0]};", *keepalive]
    servers = [
        f"        server {a} max_fails={cfg.max_fails} fail_timeout={cfg.fail_timeout_s}s;" for a in cfg.upstreams
    ]
    return [
        f"    upstream {UPSTREAM} {{",
        "        # Shared by every worker: one least_conn count and one failure state. The checks are passive:",
        "        # a server that fails max_fails times within fail_timeout is left out for fail_timeout.",
        f"        zone {UPSTREAM} {UPSTREAM_ZONE_KB}k;",
        "        least_conn;",
        *servers,
        *keepalive,
    ]


def retry_lines(cfg: CacheConfig) -> list[str]:
    """When a proxied location passes a request on to the next server: after a failed kept-alive connection
    (one upstream), or after one of ``next_upstream`` (several), bounded in tries and time."""
    if len(cfg.upstreams) == 1:
        return ["            proxy_next_upstream error non_idempotent;", "            proxy_next_upstream_tries 2;"]
    return [
        "            # The app's only POST, /ask, changes nothing: retrying one nginx has already sent is safe, and",
        "            # without non_idempotent every request a server holds when it dies would fail.",
        f"            proxy_next_upstream {' '.join(cfg.next_upstream)} non_idempotent;",
        f"            proxy_next_upstream_tries {cfg.next_upstream_tries};",
        f"            proxy_next_upstream_timeout {_ms(cfg.next_upstream_timeout_s)};",
    ]


def body_buffer_bytes(max_body_kb: int) -> int:
    """The ``client_body_buffer_size`` that keeps every body of up to ``max_body_kb`` KiB in memory.

    nginx 1.22 reads a body into memory while the part not read with the headers is smaller than
    ``buffer + buffer / 4``; the smallest buffer whose 1.25 times exceed the limit is chosen.
    """
    limit = max_body_kb * 1024
    size = (limit * 4) // 5
    while size + size // 4 <= limit:
        size += 1
    return size


def key_buffer_bytes(max_body_kb: int) -> int:
    """The ``proxy_buffer_size`` a cache key with a body of ``max_body_kb`` KiB fits in.

    The in-memory body may exceed the limit by what arrived with the request headers (up to the 8k
    of a large header buffer); 4 KiB more hold the key prefix, method, URI and content type, and the
    cache entry's own header. The result is a whole number of 4 KiB pages.
    """
    need = max_body_kb * 1024 + 8192 + 4096
    return -(-need // 4096) * 4096


def config_digest(text: str) -> str:
    """A short digest of a configuration text (the value of the ping location's header)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rendered_digest(conf_text: str) -> str | None:
    """The digest :func:`render` put into ``conf_text``, or None."""
    match = re.search(rf"add_header {CONFIG_HEADER} ([0-9a-f]+) always;", conf_text)
    return match.group(1) if match else None


def check(conf_text: str, state_dir: Path, *, nginx_bin: str = NGINX_BIN) -> None:
    """Test ``conf_text`` with ``nginx -t`` (nothing is started, no port is bound).

    The text goes to a temporary file in ``state_dir``, removed afterwards. Note that nginx
    creates the directories and log files the configuration names while testing it.

    Raises:
        NginxConfigError: nginx rejected the configuration; the message is nginx's own.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    fd, conf_name = tempfile.mkstemp(prefix=".check-", suffix=".conf", dir=state_dir)
    conf = Path(conf_name)
    check_log = conf.with_suffix(".log")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(conf_text)
        argv = [nginx_bin, "-t", "-q", "-c", str(conf), "-p", f"{state_dir}/", "-e", str(check_log)]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError as exc:
            raise NginxConfigError(f"nginx is not installed ({nginx_bin} not found)") from exc
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip() or read_or_empty(check_log).strip() or "no message"
            raise NginxConfigError(f"nginx rejected the configuration:\n{message}")
    finally:
        conf.unlink(missing_ok=True)
        check_log.unlink(missing_ok=True)


def read_or_empty(path: Path) -> str:
    """A file's text, or "" when it does not exist (yet)."""
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
