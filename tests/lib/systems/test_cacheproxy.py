"""The cache add-on against a real Redis and a real (tiny) upstream app over HTTP; nothing is mocked.

The upstream runs in this process on uvicorn (a thread), so the tests can count what reached it; the
proxy runs as its own process (``python -m ragperf.systems.cacheproxy``, started by :class:`ProxyServer`), as it
will in the lab.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections import Counter
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError
from ragperf.systems import cacheapp, cachekeys, cacheproxy, rediscache
from ragperf.systems.cacheapp import BYPASS, COALESCED, HIT, MISS, STATUS_HEADER
from ragperf.systems.cachekeys import cache_key, normalise_question
from ragperf.systems.cacheproxy import ProxyApplier, ProxyConfig, ProxyError, ProxyServer
from ragperf.systems.rediscache import RedisConfig, RedisServer

pytestmark = pytest.mark.skipif(
    not Path(rediscache.redis_server_binary()).exists(), reason="redis-server is not installed"
)

DELAY = 0.05


class Upstream:
    """A stand-in of the app: echoes the question after DELAY; 500 for "boom", 422 for bad input or no question."""

    def __init__(self) -> None:
        self.n = 0
        self.questions: Counter[str] = Counter()
        self.bodies: list[bytes] = []
        self.app = Starlette(routes=[Route("/ask", self.ask, methods=["POST"]), Route("/health", self.health)])

    async def ask(self, request: Request) -> JSONResponse:
        raw = await request.body()
        self.bodies.append(raw)
        self.n += 1
        n = self.n
        await asyncio.sleep(DELAY)
        try:
            data = json.loads(raw)
        except ValueError:
            return JSONResponse({"detail": "not JSON"}, status_code=422)
        if not isinstance(data, dict) or not isinstance(data.get("question"), str):
            return JSONResponse({"detail": "question must be a string"}, status_code=422)
        if data.get("mode", "fast") not in ("fast", "quality"):
            return JSONResponse({"detail": "mode must be fast or quality"}, status_code=422)
        question = data["question"]
        self.questions[question] += 1
        if not question:
            return JSONResponse({"detail": "empty question"}, status_code=422)
        if question == "boom":
            return JSONResponse({"detail": "boom"}, status_code=500)
        return JSONResponse({"answer": f"echo: {question}", "sources": [], "n": n})

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})


class Lab:
    """The upstream, Redis and the proxy of one test module."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.upstream = Upstream()
        self.up_port = procs.free_port()
        self.redis_cfg = RedisConfig(port=procs.free_port(), state_dir=base / "redis")
        self.redis = RedisServer(self.redis_cfg.state_dir)
        self.proxy_cfg = ProxyConfig(
            listen_port=procs.free_port(),
            upstream=f"http://127.0.0.1:{self.up_port}",
            redis_url=self.redis_cfg.url,
            state_dir=base / "proxy",
        )
        self.proxy = ProxyServer(self.proxy_cfg.state_dir)
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.proxy_cfg.url

    @property
    def redis_url(self) -> str:
        return self.redis_cfg.url

    def start(self) -> None:
        config = uvicorn.Config(self.upstream.app, host="127.0.0.1", port=self.up_port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="upstream", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the test upstream did not start"
            time.sleep(0.02)
        self.redis.start(self.redis_cfg)
        self.proxy.start(self.proxy_cfg)

    def stop(self) -> None:
        self.proxy.stop(timeout=10)
        self.redis.stop(timeout=10)
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=10)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/__cache/health", timeout=10).json()

    def proxy_log(self) -> str:
        return self.proxy.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def lab():
    base = Path(tempfile.mkdtemp(prefix="ragperf-test-cacheproxy-", dir="/var/tmp"))
    lab = Lab(base)
    try:
        lab.start()
        yield lab
    finally:
        try:
            lab.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def client(lab):
    with httpx.Client(base_url=lab.url, timeout=30) as c:
        yield c


def ask(client: httpx.Client, question, mode: str | None = "fast", **extra) -> httpx.Response:
    body = {"question": question, **extra}
    if mode is not None:
        body["mode"] = mode
    return client.post("/ask", json=body)


def status(response: httpx.Response) -> str | None:
    return response.headers.get(STATUS_HEADER)


# -- the key ----------------------------------------------------------------------------------------


def test_normalisation_folds_form_case_and_spacing_only():
    nfc = unicodedata.normalize("NFC", "Luật Đấu thầu")
    nfd = unicodedata.normalize("NFD", "Luật Đấu thầu")
    assert nfc != nfd
    assert normalise_question(nfd) == normalise_question(nfc) == "luật đấu thầu"
    assert normalise_question("  Luật \t  Đấu\nthầu  ") == "luật đấu thầu"
    assert normalise_question("LUẬT ĐẤU THẦU") == "luật đấu thầu"
    assert cache_key(nfd) == cache_key("  luật đấu THẦU ")
    assert cache_key("luật đấu thầu") != cache_key("luật đấu thầu 2023")
    assert cache_key("luật đấu thầu") != cache_key("luật đấu thầu", "quality")
    assert cache_key("luật đấu thầu") != cache_key("luật đấu thầu", version="v2")
    assert cache_key("luật đấu thầu") != cache_key("luật đấu thầu", extra={"top_k": 3})
    assert cache_key("a", version="v7").startswith("ragperf:ask:v7:")
    with pytest.raises(ValueError, match="key version"):
        cache_key("a", version="v*")


def test_ask_key_takes_well_formed_questions_only():
    assert cachekeys.ask_key(b'{"question": "a"}', "v1") == cachekeys.ask_key(b'{"question":"A","mode":"fast"}', "v1")
    for body in (b"", b"not json", b"[]", b'{"question": 5}', b'{"mode": "fast"}', b'{"question": "a", "mode": "x"}'):
        assert cachekeys.ask_key(body, "v1") is None, body
    assert cachekeys.ask_key(b"[" * 100_000, "v1") is None
    lone = cachekeys.ask_key(b'{"question": "a\\ud800"}', "v1")
    assert lone is not None and lone != cachekeys.ask_key(b'{"question": "a"}', "v1")
    assert cachekeys.cacheable(200, b'{"answer": "x", "sources": []}')
    assert not cachekeys.cacheable(200, b'{"answer": null}')
    assert not cachekeys.cacheable(200, b"not json")
    assert not cachekeys.cacheable(500, b'{"answer": "x"}')


# -- through the proxy ------------------------------------------------------------------------------


def test_same_question_twice_is_a_miss_then_a_hit(lab, client):
    first = ask(client, "What is a bid bond?")
    n_after_first = lab.upstream.n
    second = ask(client, "What is a bid bond?")
    assert (first.status_code, status(first)) == (200, MISS)
    assert (second.status_code, status(second)) == (200, HIT)
    assert second.json() == first.json()
    assert second.headers["content-type"].startswith("application/json")
    assert lab.upstream.n == n_after_first  # the hit never reached the app
    assert lab.upstream.questions["What is a bid bond?"] == 1


def test_unicode_form_case_and_spacing_share_an_entry(lab, client):
    nfc = unicodedata.normalize("NFC", "Luật Đấu thầu")
    nfd = unicodedata.normalize("NFD", "Luật Đấu thầu")
    assert status(ask(client, nfc)) == MISS
    assert status(ask(client, nfd)) == HIT
    assert status(ask(client, "  Luật   Đấu thầu  ")) == HIT
    assert status(ask(client, "luật đấu thầu")) == HIT
    assert status(ask(client, "LUẬT ĐẤU THẦU", mode=None)) == HIT  # mode defaults to fast
    assert (
        sum(lab.upstream.questions[q] for q in lab.upstream.questions if normalise_question(q) == "luật đấu thầu") == 1
    )


def test_other_words_or_another_mode_do_not_share(lab, client):
    assert status(ask(client, "Luật Đầu tư")) == MISS
    assert status(ask(client, "Luật Đầu tư công")) == MISS
    assert status(ask(client, "Luật Đầu tư", mode="quality")) == MISS
    assert status(ask(client, "Luật Đầu tư", mode="quality")) == HIT
    reply = ask(client, "Luật Đầu tư công")
    assert status(reply) == HIT and reply.json()["answer"] == "echo: Luật Đầu tư công"


def test_errors_are_never_cached(lab, client):
    for _ in range(2):
        boom = ask(client, "boom")
        assert (boom.status_code, status(boom)) == (500, MISS)
        empty = ask(client, "")
        assert (empty.status_code, status(empty)) == (422, MISS)
    assert lab.upstream.questions["boom"] == 2
    assert lab.upstream.questions[""] == 2


def test_malformed_questions_pass_through_untouched(lab, client):
    bodies = [b'{"question": 5}', b'{"question": "x", "mode": "slow"}', b"[1, 2]", b"{not json"]
    for body in bodies * 2:
        before = len(lab.upstream.bodies)
        reply = client.post("/ask", content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 422 and STATUS_HEADER not in reply.headers
        assert lab.upstream.bodies[before:] == [body]  # exactly as sent
    health = client.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert STATUS_HEADER not in health.headers
    assert client.get("/nowhere").status_code == 404


def test_concurrent_requests_do_not_mix_and_reach_the_app_once_per_question(lab):
    questions = [f"concurrent question number {i}?" for i in range(10)]

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=lab.url, timeout=30, limits=limits) as c:
            return await asyncio.gather(*(ask_async(c, questions[i % 10]) for i in range(50)))

    async def ask_async(c: httpx.AsyncClient, q: str) -> httpx.Response:
        return await c.post("/ask", json={"question": q, "mode": "quality"})

    replies = asyncio.run(run())
    for i, reply in enumerate(replies):
        assert reply.status_code == 200
        assert reply.json()["answer"] == f"echo: {questions[i % 10]}"  # its own question, no cross-talk
    for q in questions:
        assert lab.upstream.questions[q] == 1, q  # single flight: the app saw each question once
        marks = Counter(status(r) for i, r in enumerate(replies) if questions[i % 10] == q)
        assert marks[MISS] == 1 and marks[MISS] + marks[COALESCED] + marks[HIT] == 5, marks
    assert lab.health()["coalesced"] > 0


def test_followers_of_a_failing_request_get_its_error(lab):
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=lab.url, timeout=30) as c:
            return await asyncio.gather(*(c.post("/ask", json={"question": "boom"}) for _ in range(5)))

    before = lab.upstream.questions["boom"]
    replies = asyncio.run(run())
    assert [r.status_code for r in replies] == [500] * 5
    assert sorted(status(r) for r in replies) == sorted([MISS] + [COALESCED] * 4)
    assert lab.upstream.questions["boom"] == before + 1
    assert status(ask(httpx.Client(base_url=lab.url), "boom")) == MISS  # and nothing was stored


def _wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_redis_outage_bypasses_the_cache_and_recovers(lab, client):
    before = lab.health()
    assert before["redis_up"] is True
    marks: list[str | None] = []
    try:
        for i in range(4):
            reply = ask(client, f"outage question {i % 2}")
            assert reply.status_code == 200
            marks.append(status(reply))
        assert marks == [MISS, MISS, HIT, HIT]
        lab.redis.stop(timeout=10)
        for i in range(8):
            started = time.monotonic()
            reply = ask(client, f"outage question {i % 3}")
            assert reply.status_code == 200, reply.text
            assert reply.json()["answer"] == f"echo: outage question {i % 3}"
            assert status(reply) == BYPASS
            assert time.monotonic() - started < 1.0
        during = lab.health()
        assert during["redis_up"] is False
        assert during["bypassed"] - before["bypassed"] == 8
    finally:
        if not lab.redis.running:
            lab.redis.start(lab.redis_cfg)  # same port, empty

    # Caching resumes by itself (Redis is tried again at most every second).
    def cached_again() -> bool:
        return [status(ask(client, "after the outage")) for _ in range(2)][-1] == HIT

    assert _wait_for(cached_again, timeout=5, step=0.1)
    after = lab.health()
    assert after["redis_up"] is True and after["outages"] == before["outages"] + 1
    log = lab.proxy_log()
    assert log.count("bypassing the cache until it answers again") == after["outages"]  # once per outage
    assert log.count("is back after") == after["outages"]


def test_a_hung_redis_times_out_into_bypass(lab, client):
    proc = lab.redis.proc
    assert proc is not None
    assert status(ask(client, "hung question")) in (MISS, BYPASS)
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        for _ in range(3):
            started = time.monotonic()
            reply = ask(client, "hung question")
            assert reply.status_code == 200 and status(reply) == BYPASS
            assert time.monotonic() - started < 1.0  # 0.2 s socket timeout + the app's 50 ms
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert _wait_for(lambda: status(ask(client, "hung question")) == HIT, timeout=5, step=0.1)


def test_purge_deletes_the_answers_and_nothing_else(lab, client):
    for q in ("purge one", "purge two"):
        ask(client, q)
        assert status(ask(client, q)) == HIT
    with redis.Redis.from_url(lab.redis_url) as r:
        r.set("ragperf:ask:v2:other-version", "x")
        r.set("unrelated:key", "keep me")
        assert cachekeys.purge(lab.redis_url, key_version="v2") == 1
        deleted = cachekeys.purge(lab.redis_url)
        assert deleted >= 2
        assert list(r.scan_iter(match="ragperf:ask:*")) == []
        assert r.get("unrelated:key") == b"keep me"
    assert status(ask(client, "purge one")) == MISS
    assert status(ask(client, "purge one")) == HIT
    reply = client.post("/__cache/purge")
    assert reply.status_code == 200 and reply.json()["deleted"] >= 1
    assert status(ask(client, "purge one")) == MISS
    assert client.post("/__cache/purge", params={"key_version": "bad*"}).status_code == 400


def test_health_counts(lab):
    health = lab.health()
    for name in ("hits", "misses", "coalesced", "bypassed", "stored", "errors_not_cached", "redis_up"):
        assert name in health
    assert health["hits"] > 0 and health["misses"] > 0 and health["stored"] > 0
    assert health["errors_not_cached"] >= 4


def test_hit_overhead(lab, capsys):
    result = cacheapp.hit_overhead(lab.url, n=200)
    assert result["hits"] == 200
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["max_ms"]
    with capsys.disabled():
        print(f"\nhit overhead through the proxy: {result}")


def test_the_application_in_process(lab):
    """The same application without a server: in one event loop through httpx's ASGI transport."""

    async def run() -> list[str | None]:
        app = cacheapp.CacheProxy(f"http://127.0.0.1:{lab.up_port}", lab.redis_url, ttl=30, key_version="inproc")
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as c:
                return [
                    (await c.post("/ask", json={"question": "in process"})).headers.get(STATUS_HEADER) for _ in range(2)
                ]
        finally:
            await app.aclose()

    assert asyncio.run(run()) == [MISS, HIT]
    assert cachekeys.purge(lab.redis_url, key_version="inproc") == 1


# -- the status header ------------------------------------------------------------------------------


def test_the_status_header_is_the_shared_layers_own(client):
    """nginx in front adds X-Cache-Status for its own cache: the add-on's header must not be confused with it."""
    assert STATUS_HEADER == "x-shared-cache-status"
    first, second = ask(client, "which layer answered?"), ask(client, "which layer answered?")
    assert (first.headers["X-Shared-Cache-Status"], second.headers["X-Shared-Cache-Status"]) == (MISS, HIT)
    assert "x-cache-status" not in first.headers and "x-cache-status" not in second.headers


# -- the add-on as a process ragperf starts and stops -----------------------------------------------

GOOD = {
    "listen_port": 18080,
    "upstream": "http://127.0.0.1:8000",
    "redis_url": "redis://127.0.0.1:6380/0",
    "state_dir": "/var/tmp/ragperf-test-never-created",
}


def proxy_config(lab: Lab, name: str, **settings) -> ProxyConfig:
    """A configuration of a second add-on in front of the lab's upstream and Redis, on a free port."""
    return ProxyConfig(
        listen_port=procs.free_port(),
        upstream=f"http://127.0.0.1:{lab.up_port}",
        redis_url=lab.redis_url,
        state_dir=lab.base / name,
        **settings,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("listen_port", 0),
        ("listen_port", 65536),
        ("listen_port", True),
        ("listen_port", "8080"),
        ("listen_host", "localhost"),
        ("upstream", "127.0.0.1:8000"),
        ("upstream", "https://127.0.0.1:8000"),
        ("upstream", "http://app"),
        ("upstream", "http://app:8000/api"),
        ("upstream", "http://127.0.0.1:18080"),  # the add-on itself
        ("redis_url", "http://127.0.0.1:6380"),
        ("redis_url", "redis://:secret@127.0.0.1:6380/0"),
        ("redis_url", "redis://127.0.0.1"),
        ("ttl_s", 0),
        ("ttl_s", 1.5),
        ("key_version", "v*"),
        ("key_version", ""),
        ("timeout_s", 0),
        ("timeout_s", "60"),
        ("redis_timeout_s", -1),
        ("max_connections", 0),
    ],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        ProxyConfig(**{**GOOD, field: value})


def test_config_round_trips_and_rejects_unknown_keys():
    cfg = ProxyConfig(**{**GOOD, "upstream": "http://127.0.0.1:8000/"})
    assert cfg.upstream == "http://127.0.0.1:8000" and cfg.state_dir == Path(GOOD["state_dir"])
    assert (cfg.ttl_s, cfg.key_version, cfg.timeout_s, cfg.redis_timeout_s, cfg.max_connections) == (
        600, "v1", 60.0, 0.2, 200,
    )  # fmt: skip
    data = json.loads(json.dumps(cfg.to_dict()))
    assert ProxyConfig.from_dict(data) == cfg
    with pytest.raises(ValueError, match="unknown ProxyConfig field.*colour"):
        ProxyConfig.from_dict({**data, "colour": "blue"})
    assert ProxyConfig(**{**GOOD, "state_dir": "relative/dir"}).state_dir.is_absolute()


def test_plan_is_pure_and_minimal(tmp_path):
    cfg = ProxyConfig(**{**GOOD, "state_dir": tmp_path / "proxy"})
    assert cacheproxy.plan(cfg, cfg) == []
    assert cacheproxy.plan(cfg, ProxyConfig.from_dict(cfg.to_dict())) == []
    [start] = cacheproxy.plan(None, cfg)
    assert (start.kind, start.name, start.key, start.before, start.after) == (
        "cacheproxy", "cache", "cacheproxy:cache", None, cfg.to_dict(),
    )  # fmt: skip
    assert start.reason.startswith("start the cache add-on on http://127.0.0.1:18080")
    new = replace(cfg, ttl_s=60, key_version="v2")
    [change] = cacheproxy.plan(cfg, new)
    assert (change.before, change.after) == (cfg.to_dict(), new.to_dict())
    assert change.details["diff"] == {"ttl_s": [600, 60], "key_version": ["v1", "v2"]}  # only what differs
    assert "ttl_s 600 -> 60" in change.reason and "key_version v1 -> v2" in change.reason
    assert cacheproxy.plan(cfg, new) == [change]  # same inputs, same plan
    assert Change.from_json(json.loads(json.dumps(change.to_json()))) == change  # fits the journal
    assert not (tmp_path / "proxy").exists()  # nothing was started or written


def test_server_starts_answers_and_is_stopped_by_its_record_from_another_process(lab):
    cfg = proxy_config(lab, "lifecycle", key_version="lifecycle")
    server = ProxyServer(cfg.state_dir)
    try:
        proc = server.start(cfg)
        fresh = ProxyServer(cfg.state_dir)  # knows only the state directory
        assert fresh.running and fresh.proc == proc and fresh.config == cfg and fresh.url == cfg.url
        record = json.loads(fresh.record_path.read_text())
        assert record["proc"]["pid"] == proc.pid and record["config"] == cfg.to_dict()
        assert fresh.start(cfg) == proc  # already running with this configuration: left alone
        with httpx.Client(base_url=fresh.url, timeout=10) as c:
            assert [status(ask(c, "lifecycle question")) for _ in range(2)] == [MISS, HIT]
        now = fresh.status()
        assert (now["running"], now["pid"], now["port"], now["config"]) == (
            True,
            proc.pid,
            cfg.listen_port,
            record["config"],
        )
        assert (now["health"]["misses"], now["health"]["hits"], now["health"]["redis_up"]) == (1, 1, True)
        assert fresh.health()["stored"] == 1

        stop = "import sys; from ragperf.systems.cacheproxy import ProxyServer; print(ProxyServer(sys.argv[1]).stop())"
        done = subprocess.run(
            [sys.executable, "-c", stop, str(cfg.state_dir)], capture_output=True, text=True, timeout=30
        )
        assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr
        assert not procs.is_alive(proc) and procs.port_is_free(cfg.listen_port)
        assert not server.running and server.proc is None and server.config is None
        assert not server.record_path.exists()
        assert server.stop() is False  # idempotent
        gone = server.status()
        assert (gone["running"], gone["pid"], gone["health"]) == (False, None, None)
        with pytest.raises(ProxyError, match="no cache add-on runs"):
            server.health()
    finally:
        server.stop(timeout=5)
        cachekeys.purge(lab.redis_url, key_version="lifecycle")


def test_a_taken_port_is_reported_before_anything_starts(lab):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = replace(proxy_config(lab, "taken"), listen_port=taken.getsockname()[1])
        server = ProxyServer(cfg.state_dir)
        with pytest.raises(ProxyError, match=rf"^listen_port: port {cfg.listen_port} on 127.0.0.1 is taken"):
            server.start(cfg)
    assert not server.running and server.proc is None


def test_a_server_that_does_not_come_up_in_time_is_stopped_with_its_log(lab):
    cfg = proxy_config(lab, "slow")
    server = ProxyServer(cfg.state_dir, timeout=0.0)
    with pytest.raises(ProxyError, match="did not answer .*/__cache/health within 0 s") as failed:
        server.start(cfg)
    # the log's tail
    assert "ragperf starts:" in str(failed.value) and "-m ragperf.systems.cacheapp" in str(failed.value)
    assert not server.running and not server.record_path.exists()
    assert procs.port_is_free(cfg.listen_port)


def test_applier_is_idempotent_restarts_on_change_and_undo_leaves_nothing_running(lab):
    cfg = proxy_config(lab, "applied", key_version="applied")
    server, applier = ProxyServer(cfg.state_dir), ProxyApplier()
    [start] = cacheproxy.plan(None, cfg)
    try:
        applier.apply([start])
        first = server.proc
        assert first is not None and server.config == cfg
        applier.apply([start])  # again: the same process keeps running
        assert server.proc == first and procs.is_alive(first)

        changed = replace(cfg, ttl_s=30)
        [restart] = cacheproxy.plan(cfg, changed)
        applier.apply([restart])
        assert server.config == changed and not procs.is_alive(first)
        applier.undo([restart])
        back = server.proc
        assert server.config == cfg and back is not None
        applier.undo([restart])  # again: no second restart
        assert server.proc == back and procs.is_alive(back)

        applier.undo([start])
        assert not server.running and server.proc is None and procs.port_is_free(cfg.listen_port)
        applier.undo([start])  # undo of a stopped add-on does nothing
        assert not server.running

        with pytest.raises(ChangeError, match="makes only 'cacheproxy' changes, not redis:cache"):
            applier.apply([replace(start, kind="redis")])
        assert not server.running
    finally:
        server.stop(timeout=5)


def test_undo_is_safe_after_a_failed_apply(lab):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cfg = replace(proxy_config(lab, "failed"), listen_port=taken.getsockname()[1])
        [start] = cacheproxy.plan(None, cfg)
        applier = ProxyApplier()
        with pytest.raises(ProxyError, match="is taken"):
            applier.apply([start])
        applier.undo([start])
    assert not ProxyServer(cfg.state_dir).running
