"""What a cache HIT of ``POST /ask`` costs through each way Redis could serve cached answers.

The project must choose how the shared Redis cache answers repeated questions in front of the RAG
service: (a) nginx's Lua module with a Redis client (``resty.redis``), or (b) the async caching proxy
``ragperf.systems.cacheproxy``. This benchmark starts, in a temporary directory under /var/tmp:

* a throwaway Redis (``ragperf.systems.rediscache.RedisServer``);
* a tiny upstream app on uvicorn (this file run with ``--serve-upstream PORT``) that answers ``/ask`` with a
  ~3 KB JSON answer in Vietnamese with its sources, and counts the requests it gets;
* ``ragperf.systems.cacheproxy`` in front of the app;
* nginx with Lua, rendered here: ``location = /ask`` reads the body (``ngx.req.read_body``), keys it with
  the hex sha1 of the raw bytes, GETs Redis over a keepalive pool and answers a hit itself; a miss goes to
  the app through an internal ``proxy_pass`` location (``ngx.location.capture``) and a 200 is stored with
  ``SET ... EX``;
* nginx with its own ``proxy_cache`` (``ragperf.systems.nginx``, cache on), for reference;
* nginx as a plain reverse proxy (``ragperf.systems.nginx``, cache off) in front of
  ``ragperf.systems.cacheproxy``: the tier
  as deployed when nginx's own cache misses.

Then, for one question, it measures a HIT through each (and the bare Redis GET from Python as the floor):
a warm-up, the latency at concurrency 1 (p50/p95/mean over ``--requests``), and the hits per second at
``--concurrency`` over a fixed number of requests. Every measured answer must be a HIT with the exact body
the app answered, and the app must see the warm-up misses only; otherwise the benchmark fails. All HTTP
approaches are driven by the same ``httpx`` design (one ``AsyncClient`` with one kept-alive HTTP/1.1 connection
per concurrent worker, pre-encoded body). Every process it starts is stopped by its PID at the end, also
on failure, Ctrl-C or SIGTERM.

Usage: ``.venv/bin/python benchmarks/cache_hit_overhead.py [--requests N] [--concurrency C] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import grp
import json
import logging
import math
import os
import pwd
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import redis.asyncio as aredis
from pydantic import BaseModel

from ragperf.core import procs
from ragperf.systems import nginx as rnginx
from ragperf.systems import nginxconf
from ragperf.systems.rediscache import RedisConfig, RedisServer, redis_server_binary

log = logging.getLogger("cache_hit_overhead")

QUESTION = "Những trường hợp nào được áp dụng hình thức chỉ định thầu theo Luật Đấu thầu 2023?"
MODE = "fast"
KEY_VERSION = "bench"
TTL_S = 600
# The proxy's status header is being renamed; accept both names (the new one first).
STATUS_HEADERS = ("x-shared-cache-status", "x-cache-status")
LUA_STATUS_HEADER = "X-Shared-Cache-Status"
LUA_KEY_PREFIX = "ragperf:lua:v1:"
PROXY_KEY_PATTERN = "ragperf:ask:*"
NGINX_MODULE_DIRS = (Path("/usr/lib/nginx/modules"), Path("/usr/share/nginx/modules"))
NGINX_MODULES = ("ndk_http_module.so", "ngx_http_lua_module.so")  # ndk must be loaded first
LUA_DIRS = (Path("/usr/share/lua/5.1"), Path("/usr/local/share/lua/5.1"), Path("/usr/local/openresty/lualib"))
# Debian's lua-nginx-redis installs resty.redis as nginx.redis.
REDIS_LUA_MODULES = ("resty.redis", "nginx.redis")

APPROACHES: tuple[tuple[str, str], ...] = (
    ("redis_get", "Redis GET from Python (floor)"),
    ("cacheproxy", "ragperf.systems.cacheproxy"),
    ("nginx_lua", "nginx + Lua + resty.redis"),
    ("nginx_proxy_cache", "nginx proxy_cache (reference)"),
    ("nginx_cacheproxy", "nginx (no cache) -> cacheproxy"),
)


class BenchmarkError(RuntimeError):
    """A measured answer was not a correct HIT, the app saw more than the warm-up, or a server failed."""


# -- the upstream app ------------------------------------------------------------------------------

_PARAGRAPHS = (
    "Theo Điều 23 Luật Đấu thầu số 22/2023/QH15, chỉ định thầu được áp dụng trong một số trường hợp đặc "
    "biệt, khi việc tổ chức đấu thầu rộng rãi không bảo đảm được yêu cầu về thời gian hoặc tính chất của "
    "gói thầu.",
    "Thứ nhất, gói thầu cần thực hiện để khắc phục ngay hoặc để xử lý kịp thời hậu quả gây ra do sự cố bất "
    "khả kháng; gói thầu cần thực hiện để bảo đảm bí mật nhà nước; gói thầu cần triển khai ngay để tránh "
    "gây nguy hại trực tiếp đến tính mạng, sức khỏe và tài sản của cộng đồng dân cư trên địa bàn.",
    "Thứ hai, gói thầu mua thuốc, hóa chất, vật tư xét nghiệm, thiết bị y tế, linh kiện, phụ kiện, phương "
    "tiện, xây lắp cần triển khai ngay để phục vụ công tác phòng, chống dịch bệnh hoặc duy trì hoạt động "
    "của cơ sở khám bệnh, chữa bệnh trong trường hợp cấp bách.",
    "Thứ ba, gói thầu có giá trị trong hạn mức chỉ định thầu theo quy định của Chính phủ: không quá 500 "
    "triệu đồng đối với gói thầu dịch vụ tư vấn, dịch vụ công và không quá 01 tỷ đồng đối với gói thầu "
    "xây lắp, hỗn hợp, mua sắm hàng hóa, dịch vụ phi tư vấn.",
    "Khi áp dụng chỉ định thầu, chủ đầu tư vẫn phải bảo đảm các nguyên tắc cạnh tranh, công bằng, minh bạch "
    "và hiệu quả kinh tế; nhà thầu được đề nghị chỉ định phải có đủ năng lực, kinh nghiệm và hồ sơ đề xuất "
    "đáp ứng yêu cầu của hồ sơ yêu cầu.",
)
_SOURCES = (
    ("Luật Đấu thầu 22/2023/QH15", "Điều 23", "Chỉ định thầu được áp dụng trong các trường hợp sau đây"),
    ("Nghị định 24/2024/NĐ-CP", "Điều 80", "Hạn mức chỉ định thầu đối với gói thầu dịch vụ tư vấn, dịch vụ công"),
    ("Luật Đấu thầu 22/2023/QH15", "Điều 5", "Bảo đảm cạnh tranh trong lựa chọn nhà thầu, nhà đầu tư"),
    ("Thông tư 07/2024/TT-BKHĐT", "Điều 3", "Mẫu hồ sơ yêu cầu chỉ định thầu đối với gói thầu xây lắp"),
)


def answer_body(question: str, mode: str) -> bytes:
    """The app's answer to a question: ~3 KB of JSON (Vietnamese text and its sources), deterministic."""
    answer = f"Câu hỏi: {question}\n\n" + "\n\n".join(_PARAGRAPHS)
    sources = [
        {"document": doc, "article": article, "chunk_id": 1000 + 17 * i, "score": round(0.91 - 0.07 * i, 2),
         "excerpt": excerpt}
        for i, (doc, article, excerpt) in enumerate(_SOURCES)
    ]  # fmt: skip
    data = {"answer": answer, "mode": mode, "sources": sources, "model": "ragperf-bench-upstream"}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


class Ask(BaseModel):
    """The app's request body (FastAPI validates it, as the real service does)."""

    question: str
    mode: Literal["fast", "quality"] = "fast"


def build_upstream() -> Any:
    """The stand-in of the RAG service: FastAPI, ``POST /ask`` validated like the app, and a counter of every
    request to ``/ask`` (whatever its method or body), read with ``GET /__count``."""
    from fastapi import FastAPI, Request, Response

    app = FastAPI()
    state = {"ask": 0}

    @app.middleware("http")
    async def count_ask(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path == "/ask":
            state["ask"] += 1
        return await call_next(request)

    @app.post("/ask")
    async def ask(req: Ask) -> Response:
        return Response(content=answer_body(req.question, req.mode), media_type="application/json")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/__count")
    async def count() -> dict[str, int]:
        return {"ask": state["ask"]}

    return app


def serve_upstream(port: int) -> None:
    import uvicorn

    uvicorn.run(build_upstream(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- nginx with Lua ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LuaSupport:
    """Where nginx's Lua module and the Redis client are; ``missing`` says why it cannot run, if it cannot."""

    nginx_bin: str | None
    ndk_module: Path | None
    lua_module: Path | None
    lua_dir: Path | None
    redis_module: str | None
    missing: str | None


def find_lua_support() -> LuaSupport:
    """Look for nginx, ndk + the Lua module, lua-resty-core and a resty.redis client."""
    nginx_bin = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    ndk, lua = (next((d / so for d in NGINX_MODULE_DIRS if (d / so).exists()), None) for so in NGINX_MODULES)
    lua_dir, redis_module = None, None
    for directory in LUA_DIRS:
        for name in REDIS_LUA_MODULES:
            if (directory / (name.replace(".", "/") + ".lua")).exists() and (directory / "resty/core.lua").exists():
                lua_dir, redis_module = directory, name
                break
        if lua_dir:
            break
    missing = []
    if nginx_bin is None:
        missing.append("nginx is not installed")
    if ndk is None or lua is None:
        missing.append("nginx's Lua module (ndk_http_module.so + ngx_http_lua_module.so) is missing")
    if lua_dir is None:
        missing.append("resty.redis (lua-nginx-redis) with lua-resty-core is missing")
    if not Path(redis_server_binary()).exists():
        missing.append("redis-server is not installed")
    return LuaSupport(nginx_bin, ndk, lua, lua_dir, redis_module, "; ".join(missing) or None)


def render_lua_module(redis_port: int, redis_module: str, ttl: int = TTL_S) -> str:
    """The Lua module of the ``location = /ask`` handler (loaded once per worker, code cache on)."""
    return f"""-- Written by benchmarks/cache_hit_overhead.py: the Redis cache of POST /ask in nginx's Lua.
local ok, redis = pcall(require, "resty.redis")
if not ok then redis = require("{redis_module}") end

local byte, find, fmt, sub = string.byte, string.find, string.format, string.sub
local HEX20 = string.rep("%02x", 20)
local REDIS_HOST, REDIS_PORT, TTL = "127.0.0.1", {redis_port}, {ttl}
local PREFIX, HEADER = "{LUA_KEY_PREFIX}", "{LUA_STATUS_HEADER}"

local _M = {{}}

local function connect()
    local red = redis:new()
    red:set_timeout(200) -- ms: connect, send and read
    local done, err = red:connect(REDIS_HOST, REDIS_PORT)
    if not done then return nil, err end
    return red
end

local function release(red)
    local done, err = red:set_keepalive(10000, 64)
    if not done then ngx.log(ngx.WARN, "redis keepalive failed: ", err) end
end

local function reply(status, ctype, body, cache)
    ngx.status = status
    ngx.header["Content-Type"] = ctype
    ngx.header["Content-Length"] = #body
    ngx.header[HEADER] = cache
    ngx.print(body)
end

local function from_app(body)
    local res = ngx.location.capture("/__app/ask", {{method = ngx.HTTP_POST, body = body}})
    return res, res.header["Content-Type"] or "application/octet-stream"
end

function _M.ask()
    local ctype = ngx.var.content_type
    if ngx.req.get_method() ~= "POST" or ngx.var.args or not ctype or not find(ctype, "json", 1, true) then
        return ngx.exec("@app")
    end
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if not body then return ngx.exec("@app") end -- empty, or spilled to a file: not cached
    -- The key is the raw bytes: no JSON parsing, no Unicode normalisation (no library for it here).
    local key = PREFIX .. fmt(HEX20, byte(ngx.sha1_bin(body), 1, 20))
    local red, err = connect()
    local raw
    if red then
        raw, err = red:get(key)
        if raw == nil then red:close(); red = nil end
    end
    if not red then -- Redis down: straight to the app, nothing stored
        ngx.log(ngx.WARN, "redis failed, bypassing the cache: ", err)
        local res, rtype = from_app(body)
        return reply(res.status, rtype, res.body, "BYPASS")
    end
    if raw ~= ngx.null then
        release(red)
        local nl = find(raw, "\\n", 1, true)
        return reply(200, sub(raw, 1, nl - 1), sub(raw, nl + 1), "HIT")
    end
    release(red) -- back to the pool while the app answers
    local res, rtype = from_app(body)
    if res.status == 200 and not res.truncated then
        local store = connect()
        if store then
            if store:set(key, rtype .. "\\n" .. res.body, "EX", TTL) then release(store) else store:close() end
        end
    end
    return reply(res.status, rtype, res.body, "MISS")
end

return _M
"""


def worker_user() -> str | None:
    """``nobody <its group>`` for the ``user`` directive when nginx's master runs as root, else None."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("nobody")
    return f"{entry.pw_name} {grp.getgrgid(entry.pw_gid).gr_name}"


def render_lua_conf(support: LuaSupport, state_dir: Path, port: int, app_port: int, user: str | None) -> str:
    """nginx.conf of the Lua variant: every file in ``state_dir``; logging and upstream pool as in
    ragperf.systems.nginx."""
    d = state_dir
    proxy = [
        "            proxy_http_version 1.1;",
        '            proxy_set_header Connection "";',
        "            proxy_set_header Host $host;",
        "            proxy_connect_timeout 10s;",
        "            proxy_read_timeout 60s;",
        "            proxy_send_timeout 60s;",
    ]
    log_format = (
        '{"time":"$time_iso8601","method":"$request_method","uri":"$request_uri","status":$status,'
        '"bytes":$body_bytes_sent,"request_time":$request_time,"upstream_response_time":"$upstream_response_time"}'
    )
    lines = [
        "# Written by benchmarks/cache_hit_overhead.py (nginx + Lua + resty.redis).",
        f"load_module {support.ndk_module};",
        f"load_module {support.lua_module};",
    ]
    if user:
        lines.append(f"user {user};")
    lines += [
        "worker_processes auto;",
        f"pid {d}/nginx.pid;",
        f"error_log {d}/error.log warn;",
        "events {",
        "    worker_connections 4096;",
        "}",
        "http {",
        "    default_type application/octet-stream;",
        "    server_tokens off;",
        *(f"    {kind}_temp_path {d}/{kind}_temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        f"    log_format bench_json escape=json '{log_format}';",
        f"    access_log {d}/access.log bench_json;",
        f'    lua_package_path "{d}/?.lua;{support.lua_dir}/?.lua;;";',
        "    lua_socket_log_errors off;",
        "    client_max_body_size 1m;",
        "    client_body_buffer_size 16k;",
        "    client_body_in_single_buffer on;",
        "    upstream bench_app {",
        f"        server 127.0.0.1:{app_port};",
        "        keepalive 64;",
        "        keepalive_timeout 4s;",
        "    }",
        "    server {",
        f"        listen 127.0.0.1:{port} backlog=4096;",
        "        location = /__ping {",
        "            access_log off;",
        '            return 200 "ok\\n";',
        "        }",
        "        location = /ask {",
        '            content_by_lua_block { require("ragperf_lua_cache").ask() }',
        "        }",
        "        location /__app/ {",
        "            internal;",
        "            proxy_pass http://bench_app/;",
        *proxy,
        "        }",
        "        location @app {",
        "            proxy_pass http://bench_app;",
        *proxy,
        "        }",
        "        location / {",
        "            proxy_pass http://bench_app;",
        *proxy,
        "        }",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)


# -- the processes ---------------------------------------------------------------------------------


@dataclass
class Stack:
    """Every process the benchmark started, stopped (by PID) in reverse order by :meth:`close`."""

    root: Path
    cleanups: list[tuple[str, Callable[[], object]]] = field(default_factory=list)

    def push(self, what: str, stop: Callable[[], object]) -> None:
        self.cleanups.append((what, stop))

    def close(self) -> None:
        """Stop everything; a second Ctrl-C or SIGTERM waits until it is done (it is delivered afterwards)."""
        main = threading.current_thread() is threading.main_thread()
        if main:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            while self.cleanups:
                what, stop = self.cleanups.pop()
                try:
                    stop()
                except Exception as exc:  # keep stopping the others
                    log.error("could not stop %s: %s", what, exc)
                else:
                    log.info("stopped %s", what)
        finally:
            if main:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})

    def start_redis(self) -> RedisServer:
        state = self.root / "redis"
        server = RedisServer(state)
        self.push("redis", server.stop)
        server.start(RedisConfig(port=procs.free_port(), state_dir=state, maxmemory_mb=64))
        return server

    def start_process(self, name: str, argv: list[str], port: int, ready_path: str) -> str:
        proc = procs.start(name, argv, self.root / f"{name}.log", port=port)
        self.push(f"{name} (pid {proc.pid})", lambda: procs.stop(proc, timeout=10))
        url = f"http://127.0.0.1:{port}"
        procs.wait_http(url + ready_path, proc, timeout=30)
        return url

    def start_upstream(self) -> str:
        port = procs.free_port()
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve-upstream", str(port)]
        return self.start_process("upstream", argv, port, "/health")

    def start_cacheproxy(self, upstream: str, redis_url: str) -> str:
        port = procs.free_port()
        argv = [sys.executable, "-m", "ragperf.systems.cacheapp", "--listen-port", str(port), "--upstream", upstream,
                "--redis", redis_url, "--ttl", str(TTL_S), "--key-version", KEY_VERSION,
                "--log-level", "warning"]  # fmt: skip
        return self.start_process("cacheproxy", argv, port, "/__cache/health")

    def start_nginx(self, name: str, upstream_port: int, cache_enabled: bool) -> str:
        state = self.root / name
        instance = rnginx.Nginx(state)
        self.push(f"nginx {name}", instance.stop)
        cfg = rnginx.CacheConfig(
            listen_port=procs.free_port(),
            upstreams=(f"127.0.0.1:{upstream_port}",),
            state_dir=state,
            cache_enabled=cache_enabled,
            ttl_s=TTL_S,
            cache_size_mb=64,
        )
        instance.start(cfg)
        return f"http://127.0.0.1:{cfg.listen_port}"

    def start_nginx_lua(self, support: LuaSupport, app_port: int, redis_port: int) -> str:
        state = self.root / "nginx-lua"
        state.mkdir(mode=0o755)
        (state / "ragperf_lua_cache.lua").write_text(render_lua_module(redis_port, support.redis_module or ""))
        port = procs.free_port()
        text = render_lua_conf(support, state, port, app_port, worker_user())
        nginxconf.check(text, state, nginx_bin=support.nginx_bin or "nginx")
        conf = state / "nginx.conf"
        conf.write_text(text)
        argv = [support.nginx_bin or "nginx", "-c", str(conf), "-p", f"{state}/", "-e", str(state / "error.log"),
                "-g", "daemon off;"]  # fmt: skip
        return self.start_process("nginx-lua", argv, port, "/__ping")


# -- measuring -------------------------------------------------------------------------------------


def cache_status(headers: httpx.Headers) -> str | None:
    """The cache status of an answer, from the new or the old header name."""
    for name in STATUS_HEADERS:
        if name in headers:
            return headers[name]
    return None


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of sorted values."""
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class Plan:
    """How much to measure: ``requests`` sequential HITs and ``throughput_requests`` at ``concurrency``
    per approach, each split into ``rounds`` that alternate between the approaches."""

    requests: int
    concurrency: int
    throughput_requests: int
    warmup: int
    rounds: int


@dataclass
class Result:
    """One approach's numbers (milliseconds, hits per second) and what reached the app."""

    name: str
    label: str
    first_status: str
    p50_ms: float
    p95_ms: float
    mean_ms: float
    hits_per_s: float
    loaded_p50_ms: float
    loaded_p95_ms: float
    client_cpu_pct: float
    latency_requests: int
    throughput_requests: int
    concurrency: int
    warmup_requests: int
    upstream_warmup: int
    upstream_measured: int
    delta_p50_vs_floor_ms: float | None = None


@dataclass
class Probe:
    """One approach under measurement: ``call(worker)`` makes one verified HIT on that worker's connection and
    returns its seconds."""

    name: str
    label: str
    call: Callable[[int], Awaitable[float]]
    first: Callable[[], Awaitable[str]]
    first_status: str = ""
    warmup_requests: int = 0
    upstream_warmup: int = 0
    upstream_measured: int = 0
    latencies: list[float] = field(default_factory=list)
    loaded: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0

    def result(self, plan: Plan) -> Result:
        latencies, loaded, ms = sorted(self.latencies), sorted(self.loaded), 1000.0
        return Result(
            name=self.name,
            label=self.label,
            first_status=self.first_status,
            p50_ms=round(percentile(latencies, 50) * ms, 3),
            p95_ms=round(percentile(latencies, 95) * ms, 3),
            mean_ms=round(statistics.fmean(latencies) * ms, 3),
            hits_per_s=round(len(loaded) / self.wall_s, 1),
            loaded_p50_ms=round(percentile(loaded, 50) * ms, 3),
            loaded_p95_ms=round(percentile(loaded, 95) * ms, 3),
            client_cpu_pct=round(100 * self.client_cpu_s / self.wall_s, 1),
            latency_requests=len(latencies),
            throughput_requests=len(loaded),
            concurrency=plan.concurrency,
            warmup_requests=self.warmup_requests,
            upstream_warmup=self.upstream_warmup,
            upstream_measured=self.upstream_measured,
        )


async def closed_loop(
    call: Callable[[int], Awaitable[float]], total: int, concurrency: int
) -> tuple[float, list[float]]:
    """``total`` calls by ``concurrency`` workers, each starting its next call when its last ends."""
    remaining = total
    timings: list[float] = []

    async def worker(index: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            timings.append(await call(index))

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(min(concurrency, total))))
    return time.perf_counter() - started, timings


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` nearly equal positive chunks."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


PAYLOAD = json.dumps({"question": QUESTION, "mode": MODE}, ensure_ascii=False).encode()
REQUEST_HEADERS = {"content-type": "application/json"}


class HttpClients:
    """The one client design of every HTTP approach: ``concurrency`` ``httpx.AsyncClient`` objects of one kept-alive
    HTTP/1.1 connection each, one per worker (worker 0 runs the sequential latency measurement).

    One client per worker rather than one shared pool: httpx's pool spends time in proportion to its
    connections on every request, which at 32 connections made the client the bottleneck of every row.
    Idle connections are dropped after 3 s, before uvicorn (5 s) closes them under a request.
    """

    def __init__(self, base_url: str, concurrency: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=3.0)
        self.clients = [httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0) for _ in range(concurrency)]

    async def post(self, worker: int) -> httpx.Response:
        return await self.clients[worker].post("/ask", content=PAYLOAD, headers=REQUEST_HEADERS)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


def http_probe(name: str, clients: HttpClients, expected: bytes) -> Probe:
    label = dict(APPROACHES)[name]

    def check(response: httpx.Response, allowed: tuple[str, ...]) -> str:
        status = cache_status(response.headers)
        if response.status_code != 200 or status not in allowed or response.content != expected:
            raise BenchmarkError(
                f"{label}: expected a 200 {'/'.join(allowed)} with the app's {len(expected)}-byte answer, got "
                f"{response.status_code}, cache status {status!r}, {len(response.content)} bytes: "
                f"{response.content[:200]!r}"
            )
        return status

    async def call(worker: int) -> float:
        started = time.perf_counter()
        response = await clients.post(worker)
        elapsed = time.perf_counter() - started
        check(response, ("HIT",))
        return elapsed

    async def first() -> str:
        return check(await clients.post(0), ("MISS", "HIT"))

    return Probe(name, label, call, first)


def redis_probe(client: aredis.Redis, key: str, expected: bytes) -> Probe:
    """The floor: the proxy's own entry, read with redis.asyncio (the client library the proxy uses)."""
    label = dict(APPROACHES)["redis_get"]

    async def call(worker: int) -> float:
        started = time.perf_counter()
        raw = await client.get(key)
        elapsed = time.perf_counter() - started
        if raw is None or not raw.endswith(expected):
            raise BenchmarkError(f"{label}: {key} does not hold the app's answer ({(raw or b'')[:120]!r})")
        return elapsed

    async def first() -> str:
        await call(0)
        return "HIT"

    return Probe("redis_get", label, call, first)


class Measurement:
    """Warms every probe up, then measures them in rounds that alternate between the approaches, so that
    whatever else the machine does at a moment weighs on all of them alike. The app's request counter is
    read around every step: after the warm-up, nothing may reach it."""

    def __init__(self, probes: list[Probe], plan: Plan, upstream_count: Callable[[], Awaitable[int]]) -> None:
        self.probes, self.plan, self.upstream_count = probes, plan, upstream_count

    async def run(self) -> None:
        for probe in self.probes:
            await self.warm(probe)
        latency_chunks = split(self.plan.requests, self.plan.rounds)
        load_chunks = split(self.plan.throughput_requests, self.plan.rounds)
        for index in range(self.plan.rounds):
            order = self.probes[index % len(self.probes) :] + self.probes[: index % len(self.probes)]
            for probe in order:
                if index < len(latency_chunks):
                    await self.step(probe, self.latency, latency_chunks[index])
            for probe in order:
                if index < len(load_chunks):
                    await self.step(probe, self.load, load_chunks[index])

    async def warm(self, probe: Probe) -> None:
        log.info("warming up %s", probe.label)
        before = await self.upstream_count()
        probe.first_status = await probe.first()
        for _ in range(self.plan.warmup):
            await probe.call(0)
        opened = max(self.plan.warmup, 2 * self.plan.concurrency)
        await closed_loop(probe.call, opened, self.plan.concurrency)  # opens the pool's connections
        probe.warmup_requests = 1 + self.plan.warmup + opened
        probe.upstream_warmup = await self.upstream_count() - before

    async def step(self, probe: Probe, measure: Callable[[Probe, int], Awaitable[None]], n: int) -> None:
        before = await self.upstream_count()
        await measure(probe, n)
        reached = await self.upstream_count() - before
        if reached:
            probe.upstream_measured += reached
            raise BenchmarkError(f"{probe.label}: the app got {reached} request(s) while only HITs were measured")

    async def latency(self, probe: Probe, n: int) -> None:
        await probe.call(0)  # untimed: reopens the connection if it expired while the others ran
        probe.latencies += [await probe.call(0) for _ in range(n)]

    async def load(self, probe: Probe, n: int) -> None:
        concurrency = self.plan.concurrency
        await closed_loop(probe.call, 2 * concurrency, concurrency)  # untimed: refills the pool
        cpu = time.process_time()
        wall, timings = await closed_loop(probe.call, n, concurrency)
        probe.client_cpu_s += time.process_time() - cpu
        probe.wall_s += wall
        probe.loaded += timings


async def run_measurements(urls: dict[str, str], redis_url: str, plan: Plan) -> tuple[list[Result], int]:
    """Measure every approach (in the order of APPROACHES); return the results and the app's total requests."""
    expected = answer_body(QUESTION, MODE)
    async with contextlib.AsyncExitStack() as stack:
        counter = await stack.enter_async_context(httpx.AsyncClient(base_url=urls["upstream"], timeout=10.0))

        async def upstream_count() -> int:
            response = await counter.get("/__count")
            response.raise_for_status()
            return int(response.json()["ask"])

        clients = {name: HttpClients(urls[name], plan.concurrency) for name, _ in APPROACHES[1:]}
        for pool in clients.values():
            stack.push_async_callback(pool.aclose)
        # The floor reads the proxy's entry: one request through the proxy stores it (a warm-up miss).
        before = await upstream_count()
        primed = await clients["cacheproxy"].post(0)
        if primed.status_code != 200 or primed.content != expected:
            raise BenchmarkError(f"priming the proxy failed: {primed.status_code} {primed.content[:200]!r}")
        primed_upstream = await upstream_count() - before
        redis_client = aredis.Redis.from_url(redis_url, max_connections=plan.concurrency + 1)
        stack.push_async_callback(redis_client.aclose)
        probes = [redis_probe(redis_client, await single_proxy_key(redis_client), expected)]
        probes += [http_probe(name, clients[name], expected) for name, _ in APPROACHES[1:]]
        await Measurement(probes, plan, upstream_count).run()
        total = await upstream_count()
    probes[0].upstream_warmup += primed_upstream  # the priming request counts as the floor's warm-up
    probes[0].warmup_requests += 1
    return [probe.result(plan) for probe in probes], total


async def single_proxy_key(client: aredis.Redis) -> str:
    keys = [key.decode() async for key in client.scan_iter(match=PROXY_KEY_PATTERN, count=100)]
    if len(keys) != 1:
        raise BenchmarkError(f"expected exactly one cacheproxy entry in Redis after priming, found {keys}")
    return keys[0]


# -- reporting -------------------------------------------------------------------------------------


def notes(support: LuaSupport, body_bytes: int, plan: Plan, load: tuple[float, float]) -> list[str]:
    cores = os.cpu_count() or 1
    busy = (
        f" Other processes were busy (1-min load {load[0]:.2f} before, {load[1]:.2f} after on {cores} cores): "
        "expect noise, compare the rows rather than the absolute numbers."
        if max(load) > 0.25 * cores
        else ""
    )
    return [
        f"The load client (one Python asyncio process, httpx), Redis, the app, the proxy and nginx all share this "
        f"machine's {cores} core(s): hits/s compare the approaches, they are not the capacity of a real deployment. "
        f"The {plan.rounds} measuring rounds alternate between the approaches so background load weighs on all. "
        "'client CPU' is the load client's CPU time over the wall time of the hits/s runs: near 100% means the "
        f"client, not the server, set the pace.{busy}",
        "nginx runs 'worker_processes auto' (one worker per core); ragperf.systems.cacheproxy runs as one uvicorn "
        "process.",
        f"Lua key: hex sha1 of the raw request body ({LUA_KEY_PREFIX}<sha1>) via {support.redis_module}. This is a "
        "lower bound on the work a real Lua cache needs: Lua here has no Unicode library, so it cannot NFC-normalise, "
        "casefold or collapse spaces as the proxy does (questions that differ only in Unicode form, case or spacing "
        "miss), and it neither parses nor validates the JSON.",
        f"Answer: {body_bytes} bytes of JSON (Vietnamese text + 4 sources); request body {len(PAYLOAD)} bytes. "
        f"Latency: {plan.requests} sequential requests on one kept-alive connection; hits/s: "
        f"{plan.throughput_requests} requests by {plan.concurrency} concurrent workers, each with its own httpx "
        "AsyncClient and connection (the same design for every HTTP approach; the floor uses redis.asyncio, the "
        "proxy's own client). Every measured answer was "
        "checked: status 200, cache status HIT, the app's exact bytes.",
    ]


def format_table(results: Sequence[Result], plan: Plan) -> str:
    header = (
        f"{'approach':<34} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'p50-floor':>9} "
        f"{'hits/s@' + str(plan.concurrency):>10} {'p50@C ms':>9} {'client CPU':>10} {'first':>5} {'app warm/meas':>13}"
    )
    rows = [header, "-" * len(header)]
    for r in results:
        delta = "" if r.delta_p50_vs_floor_ms is None else f"{r.delta_p50_vs_floor_ms:+.3f}"
        rows.append(
            f"{r.label:<34} {r.p50_ms:>8.3f} {r.p95_ms:>8.3f} {r.mean_ms:>8.3f} {delta:>9} "
            f"{r.hits_per_s:>10.0f} {r.loaded_p50_ms:>9.2f} {f'{r.client_cpu_pct:.0f}%':>10} {r.first_status:>5} "
            f"{f'{r.upstream_warmup}/{r.upstream_measured}':>13}"
        )
    return "\n".join(rows)


def verdict(results: Sequence[Result], plan: Plan) -> str:
    """One paragraph, computed from the numbers: which approach adds less per HIT, by how much, what else counts."""
    by = {r.name: r for r in results}
    floor, lua, proxy, chain, ngx = (
        by[n] for n in ("redis_get", "nginx_lua", "cacheproxy", "nginx_cacheproxy", "nginx_proxy_cache")
    )
    # nginx stays in front in both designs, so the deployed comparison is nginx + Lua against nginx -> cacheproxy.
    diff = chain.p50_ms - lua.p50_ms
    faster, slower = ("nginx + Lua", "nginx -> cacheproxy") if diff >= 0 else ("nginx -> cacheproxy", "nginx + Lua")
    lua_extra = lua.p50_ms - ngx.p50_ms
    lua_work = (
        f"Lua's own work costs about {lua_extra:.2f} ms"
        if lua_extra > 0.1
        else f"Lua's own work is within noise ({lua_extra:+.2f} ms)"
    )
    text = (
        f"Per cache HIT, {faster} adds less. As deployed behind nginx (the path when nginx's own cache misses), "
        f"nginx + Lua answers in {lua.p50_ms:.2f} ms p50 ({lua.p95_ms:.2f} ms p95, {lua.hits_per_s:.0f} hits/s at "
        f"concurrency {plan.concurrency}) and nginx -> cacheproxy in {chain.p50_ms:.2f} ms ({chain.p95_ms:.2f} ms "
        f"p95, {chain.hits_per_s:.0f} hits/s): {slower} costs {abs(diff):.2f} ms more per hit at p50 "
        f"({chain.p50_ms / lua.p50_ms:.2f}x the latency; Lua serves {lua.hits_per_s / chain.hits_per_s:.2f}x the "
        f"hits per second). cacheproxy alone takes {proxy.p50_ms:.2f} ms ({proxy.p50_ms - lua.p50_ms:+.2f} ms vs "
        f"Lua), so the extra nginx hop costs it {chain.p50_ms - proxy.p50_ms:+.2f} ms. The Redis GET itself takes "
        f"{floor.p50_ms:.2f} ms from Python; nginx's own proxy_cache HIT, which asks no Redis at all, already "
        f"takes {ngx.p50_ms:.2f} ms ({ngx.p50_ms - floor.p50_ms:+.2f} ms over the floor: the client's HTTP stack and "
        f"one nginx hop, common to every HTTP row), so beyond it {lua_work} and the proxy tier's work costs about "
        f"{chain.p50_ms - ngx.p50_ms:.2f} ms. "
        "The Lua figure is a lower bound: its key is a sha1 of the raw bytes, so it cannot normalise Unicode (NFC, "
        "casefold, spacing) as the proxy does and shares fewer answers; it does not validate the JSON, has no single "
        "flight (concurrent misses of one question all reach the app) and only a per-request bypass when Redis fails "
        "(no retry window: on a hung Redis every request waits out its 200 ms timeout), while "
        "ragperf.systems.cacheproxy already has all of these."
    )
    if max(lua.client_cpu_pct, chain.client_cpu_pct) >= 80:
        text += (
            f" The load client (one Python process) used {lua.client_cpu_pct:.0f}% of a core in the Lua hits/s run "
            f"and {chain.client_cpu_pct:.0f}% in the proxy tier's: near 100% the client, not the server, sets the "
            "pace, so those hits/s understate the server and the latencies are the better guide."
        )
    client_capped = chain.client_cpu_pct >= 80
    ceiling = f"{chain.hits_per_s:.0f} hits/s" + (" (or more: the client was the limit)" if client_capped else "")
    # A hit replaces a miss, which costs a whole RAG answer (retrieval + LLM generation, typically seconds): a few
    # ms per hit matter only when the tier runs out of hits per second.
    if diff <= 0:
        text += (
            " The proxy tier is no slower even before Lua gets those features: keep nginx -> "
            "ragperf.systems.cacheproxy."
        )
    elif diff < 5.0:
        text += (
            f" A difference of {diff:.2f} ms per hit is small next to what a miss costs (a full RAG answer, typically "
            "seconds), so the proxy's features decide: keep nginx -> ragperf.systems.cacheproxy, and reconsider Lua "
            "(or run "
            f"more proxy processes) only if the hit rate nears the {ceiling} one proxy process sustained here."
        )
    else:
        text += (
            f" At {diff:.2f} ms per hit the gap is large enough to matter: prefer Lua only if the missing "
            "normalisation, single flight and outage handling are rebuilt there; otherwise run several proxy processes."
        )
    return text


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="sequential HITs timed per approach (default 500)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients for hits/s (default 32)")
    parser.add_argument(
        "--throughput-requests", type=int, default=None, help="requests of the hits/s run (default max(4N, 20C))"
    )
    parser.add_argument("--warmup", type=int, default=None, help="sequential warm-up HITs (default min(50, N))")
    parser.add_argument("--rounds", type=int, default=5, help="alternating measuring rounds (default 5)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    parser.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("requests", "concurrency", "throughput_requests", "rounds"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, not {value}")
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup must be 0 or more, not {args.warmup}")
    return args


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(args: argparse.Namespace, support: LuaSupport) -> dict[str, Any]:
    plan = Plan(
        requests=args.requests,
        concurrency=args.concurrency,
        throughput_requests=args.throughput_requests or max(4 * args.requests, 20 * args.concurrency),
        warmup=args.warmup if args.warmup is not None else min(50, args.requests),
        rounds=args.rounds,
    )
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="ragperf-cache-hit-", dir="/var/tmp"))
    root.chmod(0o755)  # the nginx workers (nobody) must reach their state directories
    stack = Stack(root)
    try:
        redis = stack.start_redis()
        redis_url, redis_port = redis.url, redis.config.port
        urls = {"upstream": stack.start_upstream()}
        app_port = int(urls["upstream"].rsplit(":", 1)[1])
        urls["cacheproxy"] = stack.start_cacheproxy(urls["upstream"], redis_url)
        proxy_port = int(urls["cacheproxy"].rsplit(":", 1)[1])
        urls["nginx_lua"] = stack.start_nginx_lua(support, app_port, redis_port)
        urls["nginx_proxy_cache"] = stack.start_nginx("nginx-cache", app_port, cache_enabled=True)
        urls["nginx_cacheproxy"] = stack.start_nginx("nginx-plain", proxy_port, cache_enabled=False)
        results, upstream_total = asyncio.run(run_measurements(urls, redis_url, plan))
    finally:
        stack.close()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    load = (load_before, os.getloadavg()[0])
    warmup_total = sum(r.upstream_warmup for r in results)
    if upstream_total != warmup_total or any(r.upstream_measured for r in results):
        raise BenchmarkError(f"the app saw {upstream_total} requests, the warm-ups account for {warmup_total}")
    floor = results[0].p50_ms
    for r in results[1:]:
        r.delta_p50_vs_floor_ms = round(r.p50_ms - floor, 3)
    return {
        "plan": asdict(plan),
        "question": QUESTION,
        "mode": MODE,
        "answer_bytes": len(answer_body(QUESTION, MODE)),
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"before": load[0], "after": load[1]},
        "redis_lua_module": support.redis_module,
        "approaches": {r.name: asdict(r) for r in results},
        "upstream_requests": {"total": upstream_total, "warmup": warmup_total, "beyond_warmup": 0},
        "table": format_table(results, plan),
        "verdict": verdict(results, plan),
        "notes": notes(support, len(answer_body(QUESTION, MODE)), plan, load),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the table and verdict; return (and with --json write) the results."""
    args = parse_args(argv)
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return {}
    support = find_lua_support()
    if support.missing:
        raise SystemExit(f"cannot run the benchmark: {support.missing}")
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM cleans up like Ctrl-C
    try:
        report = run(args, support)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(report["table"])
    print()
    for note in report["notes"]:
        print(f"* {note}")
    print()
    print(report["verdict"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"\nresults written to {args.json}")
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        main()
    except BenchmarkError as exc:
        sys.exit(f"benchmark failed: {exc}")
    except KeyboardInterrupt:
        sys.exit("interrupted; every process started was stopped")
