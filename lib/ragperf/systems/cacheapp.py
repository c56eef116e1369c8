"""The cache add-on: a small async proxy in front of the RAG service that keeps its answers in Redis.

Run it as ``python -m ragperf.systems.cacheapp --listen-port P --upstream http://127.0.0.1:APP
--redis redis://127.0.0.1:R/0 --ttl 600 [--key-version v1]``, or in-process as :class:`CacheProxy`
(an ASGI application), or as a process ragperf starts and stops by its PID with
:class:`ragperf.systems.cacheproxy.ProxyServer`.

What it caches: ``POST /ask`` (no query string, a JSON content type) whose body is a JSON object with
a string ``question`` and a ``mode`` of ``fast`` or ``quality`` (``fast`` when absent, as in the app).
The key is the sha256 of the normalised question (NFC, casefolded, whitespace runs collapsed to one
space, stripped), the mode, the key version and any other fields of the body, so questions that differ
only in Unicode form, case or spacing share an entry and nothing else does:
``ragperf:ask:<version>:<hex>``. The upstream still receives the body exactly as the client sent it.
Only ``200`` answers whose body is a JSON object with a string ``answer`` are stored, for ``ttl``
seconds; errors, 4xx and 5xx never are. Every other request (other paths and methods, and bodies that
are not a well-formed question, whose 422 must reach the client as is) is passed through untouched and
carries no ``X-Shared-Cache-Status``.

``X-Shared-Cache-Status`` on every answer of the cached path says where it came from. It is not
``X-Cache-Status``: an nginx in front of the add-on adds that header for its own cache, and the load
test records both layers separately.

* ``HIT``: from Redis.
* ``MISS``: this request went to the upstream (and its answer was stored if it was cacheable). Before
  it does, it looks in Redis once more: a request whose lookup missed just before another stored the
  answer gets a ``HIT`` instead of asking the app a second time.
* ``COALESCED``: single flight. While one request of a key is at the upstream, the others of the same
  key in this process wait for it and get its answer, whatever its status (an error is passed to each
  follower and is not stored); the upstream sees the key once. The scope is one proxy process: there is
  no cross-process lock in Redis, so N proxy processes may each send the same new question once.
  A request that waits for another request's *Redis* answer is a ``HIT``.
* ``BYPASS``: Redis was unreachable or failed (0.2 s socket timeout). The request goes straight to the
  upstream as if there were no cache (no lookup, no store, no single flight), so requests keep
  succeeding during a Redis outage. The outage is logged once when it starts and once when it ends;
  Redis is tried again at most every ``retry_s`` seconds (1 s), and caching resumes by itself.

``GET /__cache/metrics`` answers Prometheus metrics (text format, from a registry of the proxy's own, so that
several proxies can live in one process): ``ragperf_cache_requests_total{result,code}`` (result hit, miss,
coalesced or bypass: the requests of the cached path, passthrough ones are not in it; code the HTTP status
answered), ``ragperf_cache_request_duration_seconds{result}`` (histogram: the time the add-on took to answer),
``ragperf_cache_upstream_requests_total{code}`` (the cached path's trips to the app, MISS and BYPASS; code "0" when
the app could not be reached or timed out), ``ragperf_cache_upstream_duration_seconds`` (histogram: the time the
app took, for the trips it answered), and the gauges ``ragperf_cache_in_flight`` (keys at the app now) and
``ragperf_cache_redis_up`` (asked on every scrape, as health does). The histograms' bounds are ``--buckets``
(by default :data:`ragperf.systems.monitoring.healthmon.STANDARD_BUCKETS`).

``GET /__cache/health`` answers the counters as JSON; ``POST /__cache/purge`` (optional query
``key_version``) deletes the cached answers with SCAN, as :func:`ragperf.systems.cachekeys.purge` does.
A purge races with answers being fetched at that moment, which may be stored just after it: when the
corpus changes, starting the proxy with a new ``--key-version`` is the atomic way to invalidate, and
purge frees the memory of the old entries. :func:`hit_overhead` measures what a HIT costs end to end.

Bodies are buffered (requests and responses alike), which suits a JSON API; streamed responses are not
streamed through.

The process ragperf starts, stops and plans is :mod:`ragperf.systems.cacheproxy`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
import redis
import redis.asyncio as aredis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ragperf.systems.cachekeys import DEFAULT_MODE, ask_key, cacheable, check_key_version, purge

log = logging.getLogger(__name__)

HIT, MISS, COALESCED, BYPASS = "HIT", "MISS", "COALESCED", "BYPASS"


HEALTH_PATH = "/__cache/health"
METRICS_PATH = "/__cache/metrics"
STATUS_HEADER = "x-shared-cache-status"  # nginx in front adds its own X-Cache-Status


# Hop-by-hop headers (RFC 9110 section 7.6.1) and the ones the proxy recomputes.
_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"host",
    b"content-length",
}


Scope = MutableMapping[str, Any]


Message = MutableMapping[str, Any]


Receive = Callable[[], Awaitable[Message]]


Send = Callable[[Message], Awaitable[None]]


Headers = list[tuple[bytes, bytes]]


@dataclass
class Reply:
    """A buffered HTTP answer."""

    status: int
    headers: Headers
    body: bytes
    cache: str | None = None
    failed: bool = False  # the proxy made it up: the upstream could not be reached or timed out

    def content_type(self) -> bytes:
        for name, value in self.headers:
            if name == b"content-type":
                return value
        return b"application/octet-stream"


def _json_reply(status: int, data: Any, cache: str | None = None) -> Reply:
    return Reply(status, [(b"content-type", b"application/json")], json.dumps(data).encode(), cache)


def _encode_entry(reply: Reply) -> bytes:
    return reply.content_type() + b"\n" + reply.body


def _decode_entry(raw: bytes) -> Reply:
    content_type, _, body = raw.partition(b"\n")
    return Reply(200, [(b"content-type", content_type)], body, HIT)


@dataclass
class Counters:
    """What the proxy did since it started."""

    hits: int = 0
    misses: int = 0
    coalesced: int = 0
    bypassed: int = 0
    stored: int = 0
    errors_not_cached: int = 0
    passthrough: int = 0
    upstream_failures: int = 0
    outages: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def standard_buckets() -> tuple[float, ...]:
    """The standard latency buckets (imported only when no buckets are given: the monitoring package pulls in
    pandas, which would triple the add-on's memory; :class:`ragperf.systems.cacheproxy.ProxyServer` always
    passes them)."""
    from ragperf.systems.monitoring.healthmon import STANDARD_BUCKETS

    return STANDARD_BUCKETS


class ProxyMetrics:
    """The add-on's Prometheus metrics, in a registry of their own (never the process's global one)."""

    def __init__(self, proxy: CacheProxy, buckets: Sequence[float]) -> None:
        self.registry = r = CollectorRegistry()
        bounds = list(buckets)
        self.requests = Counter("ragperf_cache_requests_total", "Requests of the cached path, by result and status",
                                ["result", "code"], registry=r)  # fmt: skip
        self.duration = Histogram("ragperf_cache_request_duration_seconds", "Time the add-on took to answer",
                                  ["result"], buckets=bounds, registry=r)  # fmt: skip
        self.upstream_requests = Counter("ragperf_cache_upstream_requests_total",
                                         "Trips of the cached path to the app, by status (0: none)", ["code"],
                                         registry=r)  # fmt: skip
        self.upstream_duration = Histogram("ragperf_cache_upstream_duration_seconds",
                                           "Time the app took, for the trips it answered", buckets=bounds,
                                           registry=r)  # fmt: skip
        in_flight = Gauge("ragperf_cache_in_flight", "Keys at the app now (single flight)", registry=r)
        in_flight.set_function(lambda: len(proxy._flights))
        redis_up = Gauge("ragperf_cache_redis_up", "1 while Redis answers", registry=r)
        redis_up.set_function(lambda: 1.0 if proxy.redis_up else 0.0)

    def answered(self, reply: Reply, seconds: float) -> None:
        """Count an answer of the cached path."""
        result = (reply.cache or "").lower()
        self.requests.labels(result=result, code=str(reply.status)).inc()
        self.duration.labels(result=result).observe(seconds)

    def upstream(self, reply: Reply, seconds: float) -> None:
        """Count a trip of the cached path to the app."""
        self.upstream_requests.labels(code="0" if reply.failed else str(reply.status)).inc()
        if not reply.failed:
            self.upstream_duration.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RedisDown(Exception):
    """Redis is known to be unreachable (or just failed): bypass the cache."""


class CacheProxy:
    """The ASGI application of the cache add-on (see the module's docstring).

    Args:
        upstream: base URL of the app, e.g. ``http://127.0.0.1:8000``.
        redis_url: ``redis://127.0.0.1:<port>/0``.
        ttl: seconds an answer stays in the cache.
        key_version: part of every key; change it to start from an empty cache.
        timeout: seconds to wait for the upstream (connecting, sending, reading).
        redis_timeout: socket timeout of every Redis call; past it, the request bypasses the cache.
        retry_s: the least time between two attempts to reach Redis while it is down.
        max_connections: size of the connection pool to the upstream.
        buckets: the bounds (seconds) of the latency histograms; None: the standard ones.
    """

    def __init__(
        self,
        upstream: str,
        redis_url: str,
        *,
        ttl: int = 600,
        key_version: str = "v1",
        timeout: float = 60.0,
        redis_timeout: float = 0.2,
        retry_s: float = 1.0,
        max_connections: int = 200,
        buckets: Sequence[float] | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
        self.upstream = upstream.rstrip("/")
        self.redis_url = redis_url
        self.ttl = int(ttl)
        self.key_version = check_key_version(key_version)
        self.timeout = timeout
        self.redis_timeout = redis_timeout
        self.retry_s = retry_s
        self.max_connections = max_connections
        self.counters = Counters()
        self.redis_up = True
        self._retry_at = 0.0
        self._down_since = 0.0
        # The one request at the upstream per key that the other requests of the key wait for.
        self._flights: dict[str, asyncio.Task[Reply]] = {}
        self._http: httpx.AsyncClient | None = None
        self._redis: aredis.Redis | None = None
        self.metrics = ProxyMetrics(self, standard_buckets() if buckets is None else buckets)

    # -- clients ---------------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.upstream,
                timeout=httpx.Timeout(self.timeout),
                # uvicorn closes idle connections after 5 s: drop ours first, so no request is sent on
                # a connection the app is closing.
                limits=httpx.Limits(
                    max_connections=self.max_connections,
                    max_keepalive_connections=self.max_connections,
                    keepalive_expiry=4.0,
                ),
                follow_redirects=False,
            )
        return self._http

    def _cache(self) -> aredis.Redis:
        if self._redis is None:
            self._redis = aredis.Redis.from_url(
                self.redis_url,
                socket_timeout=self.redis_timeout,
                socket_connect_timeout=self.redis_timeout,
                retry=Retry(NoBackoff(), 0),  # no retries: a failure means bypass now, not later
                health_check_interval=0,
            )
        return self._redis

    async def aclose(self) -> None:
        """Close the pools to the upstream and to Redis (waits for requests in flight first)."""
        if self._flights:
            await asyncio.gather(*list(self._flights.values()), return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # -- Redis with bypass -----------------------------------------------------------------------

    async def _redis_call(self, call: Callable[[aredis.Redis], Awaitable[Any]]) -> Any:
        """Run a Redis call, or raise _RedisDown if Redis is down (tried again every ``retry_s``)."""
        now = time.monotonic()
        if not self.redis_up and now < self._retry_at:
            raise _RedisDown
        try:
            result = await asyncio.wait_for(call(self._cache()), timeout=self.redis_timeout * 5)
        except (TimeoutError, redis.RedisError, OSError) as exc:
            self._mark_down(exc)
            raise _RedisDown from exc
        if not self.redis_up:
            self.redis_up = True
            log.warning(
                "Redis at %s is back after %.1f s: caching again (%d requests bypassed so far)",
                self.redis_url,
                time.monotonic() - self._down_since,
                self.counters.bypassed,
            )
        return result

    def _mark_down(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self.retry_s
        if self.redis_up:
            self.redis_up = False
            self._down_since = time.monotonic()
            self.counters.outages += 1
            log.warning(
                "Redis at %s failed (%s: %s): bypassing the cache until it answers again",
                self.redis_url,
                type(exc).__name__,
                exc,
            )

    async def ping(self) -> bool:
        """True if Redis answers now (while it is down, asked at most every ``retry_s``)."""
        try:
            await self._redis_call(lambda r: r.ping())
        except _RedisDown:
            return False
        return True

    # -- ASGI ------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets: the server closes the connection
        started = time.perf_counter()
        reply = await self._handle(scope, receive)
        headers = [(n, v) for n, v in reply.headers if n not in _HOP]
        if reply.status not in (204, 304):
            headers.append((b"content-length", str(len(reply.body)).encode()))
        if reply.cache is not None:
            headers.append((STATUS_HEADER.encode(), reply.cache.encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        if reply.cache is not None:  # the cached path
            self.metrics.answered(reply, time.perf_counter() - started)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client()
                self._cache()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _handle(self, scope: Scope, receive: Receive) -> Reply:
        method, path, query = scope["method"], scope["path"], scope.get("query_string", b"")
        if path == HEALTH_PATH and method == "GET":
            up = await self.ping()
            return _json_reply(200, {**self.counters.as_dict(), "redis_up": up, "in_flight": len(self._flights)})
        if path == METRICS_PATH and method == "GET":
            await self.ping()  # redis_up as of now, not as of the last request
            return Reply(200, [(b"content-type", CONTENT_TYPE_LATEST.encode())], self.metrics.render())
        if path == "/__cache/purge" and method == "POST":
            return await self._purge_reply(query)
        body = await _read_body(receive)
        headers: Headers = list(scope.get("headers", []))
        if method == "POST" and path == "/ask" and not query and _is_json(headers):
            key = ask_key(body, self.key_version)
            if key is not None:
                return await self._ask(key, headers, body)
        self.counters.passthrough += 1
        return await self._forward(method, _target(scope), headers, body, retry=False)

    async def _purge_reply(self, query: bytes) -> Reply:
        versions = parse_qs(query.decode("latin-1")).get("key_version")
        try:
            deleted = await asyncio.to_thread(purge, self.redis_url, versions[0] if versions else None)
        except ValueError as exc:
            return _json_reply(400, {"detail": str(exc)})
        except (TimeoutError, redis.RedisError, OSError) as exc:
            return _json_reply(503, {"detail": f"Redis failed: {type(exc).__name__}: {exc}"})
        return _json_reply(200, {"deleted": deleted})

    # -- the cached path -------------------------------------------------------------------------

    async def _ask(self, key: str, headers: Headers, body: bytes) -> Reply:
        try:
            raw = await self._redis_call(lambda r: r.get(key))
        except _RedisDown:
            self.counters.bypassed += 1
            reply = await self._upstream(headers, body)
            reply.cache = BYPASS
            return reply
        if raw is not None:
            self.counters.hits += 1
            return _decode_entry(raw)
        flight = self._flights.get(key)
        if flight is None:
            # Creating the task and registering it happen with no await in between: the first miss
            # of a key is its only leader. The flight is removed only after the answer is stored, so a
            # later request either finds the flight or finds the answer in Redis.
            task = asyncio.get_running_loop().create_task(self._fill(key, headers, body))
            self._flights[key] = task
            task.add_done_callback(lambda done: self._land(key, done))
            # shield: a client that goes away must not cancel the request the others wait for.
            return _copy(await asyncio.shield(task), None)
        reply = await asyncio.shield(flight)
        if reply.cache == HIT:
            self.counters.hits += 1
            return _copy(reply, HIT)
        self.counters.coalesced += 1
        return _copy(reply, COALESCED)

    def _land(self, key: str, task: asyncio.Task[Reply]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]

    async def _fill(self, key: str, headers: Headers, body: bytes) -> Reply:
        """The leader's work: look again (an answer may have just been stored), else ask and store."""
        try:
            raw = await self._redis_call(lambda r: r.get(key))
        except _RedisDown:
            raw = None
        if raw is not None:
            self.counters.hits += 1
            return _decode_entry(raw)
        self.counters.misses += 1
        reply = await self._upstream(headers, body, identity=True)
        reply.cache = MISS
        if not cacheable(reply.status, reply.body) or _encoded(reply.headers):
            self.counters.errors_not_cached += 1
            return reply
        entry = _encode_entry(reply)
        with contextlib.suppress(_RedisDown):
            await self._redis_call(lambda r: r.set(key, entry, ex=self.ttl))
            self.counters.stored += 1
        return reply

    # -- the upstream ----------------------------------------------------------------------------

    async def _upstream(self, headers: Headers, body: bytes, *, identity: bool = False) -> Reply:
        """The cached path's trip to the app (``POST /ask``), timed and counted."""
        started = time.perf_counter()
        reply = await self._forward("POST", "/ask", headers, body, retry=True, identity=identity)
        self.metrics.upstream(reply, time.perf_counter() - started)
        return reply

    async def _forward(
        self, method: str, target: str, headers: Headers, body: bytes, *, retry: bool, identity: bool = False
    ) -> Reply:
        """Send the request to the upstream and buffer its answer; 502/504 when it cannot be reached.

        ``retry`` resends once when the upstream closed a kept-alive connection under the request (safe
        for asking a question, which changes nothing); ``identity`` asks for an uncompressed body.
        """
        out = [(n, v) for n, v in headers if n.lower() not in _HOP]
        if identity:
            out = [(n, v) for n, v in out if n.lower() != b"accept-encoding"] + [(b"accept-encoding", b"identity")]
        client = self._client()
        for attempt in range(2 if retry else 1):
            try:
                request = client.build_request(method, target, headers=out, content=body)
                response = await client.send(request, stream=True)
                try:
                    data = b"".join([chunk async for chunk in response.aiter_raw()])
                finally:
                    await response.aclose()
                reply_headers = [(n.lower(), v) for n, v in response.headers.raw]
                return Reply(response.status_code, reply_headers, data)
            except httpx.RemoteProtocolError as exc:
                if attempt == 0 and retry:
                    continue
                return self._upstream_failed(exc, 502)
            except httpx.TimeoutException as exc:
                return self._upstream_failed(exc, 504)
            except httpx.HTTPError as exc:
                return self._upstream_failed(exc, 502)
        raise AssertionError("unreachable")

    def _upstream_failed(self, exc: Exception, status: int) -> Reply:
        self.counters.upstream_failures += 1
        log.warning("upstream %s failed: %s: %s", self.upstream, type(exc).__name__, exc)
        reply = _json_reply(status, {"detail": f"cache proxy: upstream failed ({type(exc).__name__})"})
        reply.failed = True
        return reply


def _copy(reply: Reply, cache: str | None) -> Reply:
    """Each waiter gets its own Reply object (with its own status header)."""
    return Reply(reply.status, list(reply.headers), reply.body, cache or reply.cache, reply.failed)


def _encoded(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(n == b"content-encoding" and v.strip().lower() not in (b"", b"identity") for n, v in headers)


def _is_json(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """True when the request says its body is JSON (application/json or a ``+json`` type)."""
    for name, value in headers:
        if name.lower() == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


def _target(scope: Scope) -> str:
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    return (path + (b"?" + query if query else b"")).decode("latin-1")


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile ``q`` (0-100) of sorted values."""
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def hit_overhead(
    proxy_url: str,
    n: int = 200,
    *,
    question: str = "ragperf cache hit overhead probe",
    mode: str = DEFAULT_MODE,
    header: str = STATUS_HEADER,
) -> dict[str, Any]:
    """Ask one question ``n`` times through the proxy after a warm-up; the latency of the HITs in ms.

    Returns ``n``, ``hits`` (answers whose ``header``, by default ``X-Shared-Cache-Status``, is ``HIT``),
    ``p50_ms``, ``p95_ms``, ``mean_ms`` and ``max_ms``, measured on one kept-alive connection from this
    process (so they include the client's own HTTP overhead). ``proxy_url`` is the add-on itself: an nginx
    in front answers repeats from its own cache, replaying the add-on's header as it was when nginx stored
    the answer; to time nginx's own hits, give its URL and ``header="x-cache-status"``.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, not {n!r}")
    payload = {"question": question, "mode": mode}
    timings: list[float] = []
    hits = 0
    with httpx.Client(base_url=proxy_url.rstrip("/"), timeout=60) as client:
        warm = client.post("/ask", json=payload)
        warm.raise_for_status()
        for _ in range(n):
            started = time.perf_counter()
            response = client.post("/ask", json=payload)
            elapsed = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            if response.headers.get(header) == HIT:
                hits += 1
                timings.append(elapsed)
    if not timings:
        raise RuntimeError(
            f"no {header}: {HIT} in {n} requests to {proxy_url}: is Redis up? (warm-up said {warm.headers})"
        )
    timings.sort()
    return {
        "n": n,
        "hits": hits,
        "p50_ms": round(_percentile(timings, 50), 3),
        "p95_ms": round(_percentile(timings, 95), 3),
        "mean_ms": round(sum(timings) / len(timings), 3),
        "max_ms": round(timings[-1], 3),
    }


def _buckets_arg(text: str) -> tuple[float, ...]:
    """The bounds of ``--buckets B1,B2,...``: numbers > 0, strictly increasing (argparse type)."""
    bounds = tuple(float(part) for part in text.split(",") if part.strip())
    if not bounds or bounds[0] <= 0 or any(b <= a for a, b in zip(bounds, bounds[1:], strict=False)):
        raise ValueError(f"not increasing bounds > 0: {text!r}")
    return bounds


def main(argv: Sequence[str] | None = None) -> None:
    """Run the cache add-on on uvicorn until it is stopped (SIGTERM or SIGINT)."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m ragperf.systems.cacheapp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--upstream", required=True, help="base URL of the app, e.g. http://127.0.0.1:8000")
    parser.add_argument("--redis", required=True, help="e.g. redis://127.0.0.1:6380/0")
    parser.add_argument("--ttl", type=int, default=600, help="seconds an answer stays cached (default 600)")
    parser.add_argument("--key-version", default="v1", help="part of every key; change it to invalidate all")
    parser.add_argument("--timeout", type=float, default=60.0, help="upstream timeout in seconds (default 60)")
    parser.add_argument("--redis-timeout", type=float, default=0.2, help="Redis socket timeout (default 0.2 s)")
    parser.add_argument("--max-connections", type=int, default=200, help="upstream connection pool size")
    parser.add_argument("--buckets", type=_buckets_arg, help="latency histogram bounds B1,B2,... in seconds")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = CacheProxy(
        args.upstream,
        args.redis,
        ttl=args.ttl,
        key_version=args.key_version,
        timeout=args.timeout,
        redis_timeout=args.redis_timeout,
        max_connections=args.max_connections,
        buckets=args.buckets,
    )
    uvicorn.run(
        app,
        host=args.listen_host,
        port=args.listen_port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_keep_alive=5,
    )


if __name__ == "__main__":
    main()
