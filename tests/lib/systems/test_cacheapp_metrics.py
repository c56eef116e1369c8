"""The cache add-on's /__cache/metrics against a real Redis and a real (tiny) upstream over HTTP.

The add-on runs in-process (its ASGI application through httpx's ASGITransport), so several proxies can live in one
process, as they would not if the metrics sat in prometheus_client's global registry; one test runs it as the process
ragperf starts, to see ``--buckets`` arrive.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragperf.core import procs
from ragperf.systems import cacheapp, rediscache
from ragperf.systems.cacheapp import BYPASS, COALESCED, HIT, MISS, STATUS_HEADER, CacheProxy
from ragperf.systems.cacheproxy import ProxyConfig, ProxyServer
from ragperf.systems.monitoring.healthmon import STANDARD_BUCKETS
from ragperf.systems.rediscache import RedisConfig, RedisServer

pytestmark = pytest.mark.skipif(
    not Path(rediscache.redis_server_binary()).exists(), reason="redis-server is not installed"
)

BUCKETS = (0.01, 0.1, 1.0)
SLOW_S = 0.3  # questions starting with "slow" wait this long at the upstream


class Upstream:
    """A stand-in of the app: /ask echoes the question (after SLOW_S for "slow..."); counts the questions."""

    def __init__(self) -> None:
        self.questions: Counter[str] = Counter()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                upstream.questions[data["question"]] += 1
                if data["question"].startswith("slow"):
                    time.sleep(SLOW_S)
                body = json.dumps({"answer": f"echo: {data['question']}", "sources": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def upstream():
    up = Upstream()
    try:
        yield up
    finally:
        up.server.shutdown()
        up.server.server_close()


@pytest.fixture
def redis_server(tmp_path):
    cfg = RedisConfig(port=procs.free_port(), state_dir=tmp_path / "redis")
    server = RedisServer(cfg.state_dir)
    server.start(cfg)
    try:
        yield server
    finally:
        server.stop(timeout=10)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def named(found: dict, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in found.items() if n == name}


async def scrape(client: httpx.AsyncClient) -> dict:
    response = await client.get(cacheapp.METRICS_PATH)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def ask(client: httpx.AsyncClient, question: str):
    return client.post("/ask", json={"question": question, "mode": "fast"})


def test_miss_hit_coalesced_and_bypass_are_counted_with_their_labels(upstream, redis_server):
    async def run() -> tuple[dict, dict, list[str], dict]:
        proxy = CacheProxy(upstream.url, redis_server.url, ttl=30, key_version=uuid.uuid4().hex[:8], buckets=BUCKETS)
        other = CacheProxy(upstream.url, redis_server.url, ttl=30, key_version="other", buckets=BUCKETS)
        transport, other_transport = httpx.ASGITransport(app=proxy), httpx.ASGITransport(app=other)
        statuses: list[str] = []
        try:
            async with (
                httpx.AsyncClient(transport=transport, base_url="http://proxy") as client,
                httpx.AsyncClient(transport=other_transport, base_url="http://other") as other_client,
            ):
                for question in ("q1", "q1"):
                    statuses.append((await ask(client, question)).headers[STATUS_HEADER])
                # Two at once of a new, slow question: one goes to the app, the other waits for it.
                both = await asyncio.gather(ask(client, "slow q2"), ask(client, "slow q2"))
                statuses += sorted(r.headers[STATUS_HEADER] for r in both)
                before = await scrape(client)
                redis_server.stop(timeout=10)
                statuses.append((await ask(client, "q3")).headers[STATUS_HEADER])
                after = await scrape(client)
                untouched = await scrape(other_client)
                return before, after, statuses, untouched
        finally:
            await proxy.aclose()
            await other.aclose()

    before, after, statuses, untouched = asyncio.run(run())
    assert statuses == [MISS, HIT, COALESCED, MISS, BYPASS]
    assert upstream.questions["q1"] == 1 and upstream.questions["slow q2"] == 1 and upstream.questions["q3"] == 1

    def labels(**kw: str) -> tuple[tuple[str, str], ...]:
        return tuple(sorted(kw.items()))

    assert named(after, "ragperf_cache_requests_total") == {
        labels(result="miss", code="200"): 2,
        labels(result="hit", code="200"): 1,
        labels(result="coalesced", code="200"): 1,
        labels(result="bypass", code="200"): 1,
    }
    counts = named(after, "ragperf_cache_request_duration_seconds_count")
    assert counts == {labels(result="miss"): 2, labels(result="hit"): 1, labels(result="coalesced"): 1,
                      labels(result="bypass"): 1}  # fmt: skip
    buckets = named(after, "ragperf_cache_request_duration_seconds_bucket")
    assert {dict(k)["le"] for k in buckets} == {"0.01", "0.1", "1.0", "+Inf"}
    for result in ("miss", "hit", "coalesced", "bypass"):
        assert buckets[labels(result=result, le="+Inf")] == counts[labels(result=result)]
    # The coalesced request waited for the slow trip (lower bounds only: the machine may be slow, never fast).
    assert buckets[labels(result="coalesced", le="0.1")] == 0
    # The app: the two misses and the bypass, each answered.
    assert named(after, "ragperf_cache_upstream_requests_total") == {labels(code="200"): 3}
    assert after[("ragperf_cache_upstream_duration_seconds_count", ())] == 3
    assert after[("ragperf_cache_upstream_duration_seconds_bucket", (("le", "0.1"),))] <= 2  # not the slow one
    assert after[("ragperf_cache_upstream_duration_seconds_sum", ())] >= SLOW_S
    assert before[("ragperf_cache_redis_up", ())] == 1 and after[("ragperf_cache_redis_up", ())] == 0
    assert after[("ragperf_cache_in_flight", ())] == 0
    # A second proxy in the same process has counters of its own, and nothing lands in the global registry.
    assert named(untouched, "ragperf_cache_requests_total") == {}
    assert untouched[("ragperf_cache_upstream_duration_seconds_count", ())] == 0
    assert prometheus_client.REGISTRY.get_sample_value("ragperf_cache_requests_total") is None


def test_an_unreachable_app_is_code_0_at_the_upstream_and_502_to_the_client(redis_server):
    closed = f"http://127.0.0.1:{procs.free_port()}"

    async def run() -> tuple[httpx.Response, dict, dict]:
        proxy = CacheProxy(closed, redis_server.url, ttl=30, key_version=uuid.uuid4().hex[:8])
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=proxy), base_url="http://proxy") as client:
                response = await ask(client, "nobody home")
                health = (await client.get(cacheapp.HEALTH_PATH)).json()
                return response, await scrape(client), health
        finally:
            await proxy.aclose()

    response, found, health = asyncio.run(run())
    assert (response.status_code, response.headers[STATUS_HEADER]) == (502, MISS)
    assert named(found, "ragperf_cache_requests_total") == {(("code", "502"), ("result", "miss")): 1}
    assert named(found, "ragperf_cache_upstream_requests_total") == {(("code", "0"),): 1}
    assert found[("ragperf_cache_upstream_duration_seconds_count", ())] == 0  # no answer, no app time
    assert found[("ragperf_cache_redis_up", ())] == 1
    buckets = {dict(k)["le"] for k in named(found, "ragperf_cache_upstream_duration_seconds_bucket")}
    assert buckets == {*(repr(b) for b in STANDARD_BUCKETS), "+Inf"}  # the standard ones when none are given
    assert health["misses"] == 1 and health["upstream_failures"] == 1  # the JSON counters stay as they were


def test_the_process_gets_its_buckets_from_the_config(tmp_path, upstream, redis_server):
    cfg = ProxyConfig(listen_port=procs.free_port(), upstream=upstream.url, redis_url=redis_server.url,
                      state_dir=tmp_path / "proxy", buckets=(0.1, 0.5))  # fmt: skip
    assert ProxyConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "buckets"}).buckets == STANDARD_BUCKETS
    assert ProxyConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.argv()[cfg.argv().index("--buckets") + 1] == "0.1,0.5"
    with pytest.raises(ValueError, match="buckets"):
        ProxyConfig(**{**cfg.__dict__, "buckets": (0.5, 0.1)})
    server = ProxyServer(cfg.state_dir)
    try:
        server.start(cfg)
        assert httpx.post(f"{cfg.url}/ask", json={"question": "from the process"}, timeout=10).status_code == 200
        found = samples(httpx.get(f"{cfg.url}{cacheapp.METRICS_PATH}", timeout=10).text)
    finally:
        server.stop()
    les = {dict(k)["le"] for k in named(found, "ragperf_cache_upstream_duration_seconds_bucket")}
    assert les == {"0.1", "0.5", "+Inf"}
    assert named(found, "ragperf_cache_requests_total") == {(("code", "200"), ("result", "miss")): 1}
