"""The caching nginx: its configuration (pure), and a real nginx in front of a tiny stand-in app."""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from ragperf.core import procs
from ragperf.core.changes import Change
from ragperf.systems import nginx, nginxconf

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")

# The stand-in app: POST /ask echoes the question with a per-request counter, "boom" is a 500,
# "slow:..." takes 0.3 s; GET /stats tells how often each question reached it.
UPSTREAM_APP = r"""
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
COUNTS = {"total": 0, "by_question": {}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/stats":
            with LOCK:
                self._send(200, COUNTS)
        else:
            self._send(404, {"detail": "not found"})

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        question = json.loads(raw or b"{}").get("question", "")
        with LOCK:
            COUNTS["total"] += 1
            COUNTS["by_question"][question] = COUNTS["by_question"].get(question, 0) + 1
            n = COUNTS["total"]
        if question == "boom":
            self._send(500, {"detail": "boom", "n": n})
            return
        if question.startswith("slow:"):
            time.sleep(0.3)
        self._send(200, {"question": question, "n": n, "body_bytes": len(raw)})


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


class Upstream:
    def __init__(self, port: int) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"

    def count(self, question: str) -> int:
        return get_json(self.port, "/stats")["by_question"].get(question, 0)


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def get_json(port: int, path: str) -> dict:
    status, _, body = request(port, "GET", path)
    assert status == 200
    return json.loads(body)


def ask(port: int, question: str, **extra: object) -> tuple[int, str | None, dict]:
    """POST /ask; the status, the cache status header, and the JSON answer."""
    body = json.dumps({"question": question, "mode": "fast", **extra}).encode()
    status, headers, data = request(port, "POST", "/ask", body)
    return status, headers.get("x-cache-status"), json.loads(data)


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def upstream():
    base = Path(tempfile.mkdtemp(prefix="ragperf-test-upstream-", dir="/var/tmp"))
    script = base / "app.py"
    script.write_text(UPSTREAM_APP)
    port = procs.free_port()
    proc = procs.start("test-upstream", [sys.executable, str(script), str(port)], base / "app.log", port=port)
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=15)
        yield Upstream(port)
    finally:
        procs.stop(proc, timeout=5)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def state_dir():
    base = Path(tempfile.mkdtemp(prefix="ragperf-test-nginx-", dir="/var/tmp"))
    base.chmod(0o755)  # the nginx workers (nobody) must reach their temp and cache directories
    try:
        yield base
    finally:
        # Whatever a test left running is stopped by its recorded PID.
        nginx.Nginx(base).stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def cfg(upstream, state_dir) -> nginx.CacheConfig:
    return nginx.CacheConfig(listen_port=procs.free_port(), upstreams=(upstream.address,), state_dir=state_dir)


@pytest.fixture
def running(cfg):
    instance = nginx.Nginx(cfg.state_dir)
    instance.start(cfg)
    try:
        yield instance
    finally:
        instance.stop()


# -- render() and CacheConfig: pure ----------------------------------------------------------------------


def test_render_handles_the_pitfalls_of_caching_post(tmp_path):
    cfg = nginx.CacheConfig(8088, ("127.0.0.1:8000",), tmp_path, ttl_s=120, max_body_kb=32)
    text = nginxconf.render(cfg, key_version=3)
    assert "proxy_cache_methods POST;" in text
    key = next(line for line in text.splitlines() if "proxy_cache_key" in line)
    assert "ragperf:v3" in key and "$request_method" in key and "$request_uri" in key and "$request_body" in key
    assert (
        f"client_body_buffer_size {nginxconf.body_buffer_bytes(32)};" in text
        and "client_body_in_single_buffer on;" in text
    )
    assert "proxy_buffer_size 44k;" in text and "proxy_busy_buffers_size 44k;" in text
    assert "client_max_body_size 1024k;" in text
    assert '"POST:" 1;' in text and "~^POST: 0;" in text  # an empty body is never cacheable
    assert "proxy_cache_bypass $ragperf_no_cache;" in text and "proxy_no_cache $ragperf_no_cache;" in text
    assert [line.strip() for line in text.splitlines() if "proxy_cache_valid" in line] == [
        "proxy_cache_valid 200 120s;"
    ]
    assert "proxy_ignore_headers Cache-Control Expires X-Accel-Expires;" in text  # Set-Cookie is honoured
    assert "proxy_cache_lock on;" in text and "proxy_cache_lock_timeout 60s;" in text
    unlocked = nginxconf.render(dataclasses.replace(cfg, cache_lock=False))
    assert "proxy_cache_lock" not in unlocked and "proxy_cache_methods POST;" in unlocked
    assert "add_header X-Cache-Status $upstream_cache_status always;" in text
    assert "proxy_http_version 1.1;" in text and 'proxy_set_header Connection "";' in text
    assert "keepalive 64;" in text and "least_conn" not in text
    health = text[text.index("location = /health") : text.index("location / {")]
    assert "proxy_cache" not in health
    for line in text.splitlines():  # every path nginx writes is inside the state directory
        if any(word in line for word in ("_path ", "pid ", "error_log ", "access_log /")):
            assert str(tmp_path) in line, line
    assert "/etc/nginx" not in text and "/var/log" not in text
    assert nginxconf.rendered_digest(text) == nginxconf.config_digest(
        text.replace(nginxconf.rendered_digest(text), nginxconf._DIGEST_PLACEHOLDER)
    )


@pytest.mark.parametrize("kb", [1, 16, 17, 100, 1024])
def test_body_buffer_keeps_exactly_max_body_kb_in_memory(kb):
    size = nginxconf.body_buffer_bytes(kb)  # nginx keeps a body in memory while it is < size + size // 4
    assert size + size // 4 > kb * 1024 >= (size - 1) + (size - 1) // 4
    assert nginxconf.key_buffer_bytes(kb) % 4096 == 0 and nginxconf.key_buffer_bytes(kb) >= kb * 1024 + 8192


def test_render_without_cache_is_a_plain_load_balancing_proxy(tmp_path):
    cfg = nginx.CacheConfig(8088, ("127.0.0.1:8000", "127.0.0.1:8001"), tmp_path, cache_enabled=False)
    text = nginxconf.render(cfg)
    assert "proxy_cache" not in text and "X-Cache-Status" not in text
    assert "least_conn;" in text and "proxy_pass http://ragperf_app;" in text
    assert "server 127.0.0.1:8001 max_fails=1 fail_timeout=10s;" in text  # the balancer's defaults
    assert nginxconf.render(cfg) == text  # pure
    assert nginxconf.rendered_digest(text) != nginxconf.rendered_digest(
        nginxconf.render(replace(cfg, cache_enabled=True))
    )


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("listen_port", 0, "1 to 65535"),
        ("upstreams", (), "at least one"),
        ("upstreams", ("localhost",), "host:port"),
        ("upstreams", ("127.0.0.1:80; evil",), "host:port"),
        ("ttl_s", 0, "1 to"),
        ("ttl_s", 1.5, "whole number"),
        ("cache_size_mb", -1, "1 to"),
        ("max_body_kb", 4096, "1 to 1024"),
        ("proxy_timeout_s", 0, "seconds"),
        ("cache_status_header", "X Cache", "header name"),
        ("cache_enabled", "yes", "True or False"),
        ("listen_host", "example.com", "IPv4"),
        ("state_dir", "/var/tmp/a b", "letters, digits"),
    ],
)
def test_bad_config_values_name_the_field(tmp_path, field, value, words):
    args = {"listen_port": 8088, "upstreams": ("127.0.0.1:8000",), "state_dir": tmp_path, field: value}
    with pytest.raises(ValueError, match=field) as info:
        nginx.CacheConfig(**args)
    assert words in str(info.value)


def test_config_round_trips_through_a_change_and_json(tmp_path):
    cfg = nginx.CacheConfig(8088, ["127.0.0.1:8000"], str(tmp_path), ttl_s=30)
    assert cfg.upstreams == ("127.0.0.1:8000",) and cfg.state_dir == tmp_path
    [change] = nginx.plan(None, cfg)
    again = Change.from_json(json.loads(json.dumps(change.to_json())))
    assert nginx.CacheConfig.from_dict(again.after) == cfg and again.before is None
    assert nginx.plan(cfg, cfg) == []
    [reload] = nginx.plan(cfg, replace(cfg, ttl_s=60))
    assert reload.details["diff"] == {"ttl_s": [30, 60]} and "ttl_s 30 -> 60" in reload.reason
    with pytest.raises(ValueError, match="unknown CacheConfig field"):
        nginx.CacheConfig.from_dict({**cfg.to_dict(), "ttl": 5})


def test_check_reports_nginx_own_message(tmp_path):
    tmp_path.chmod(0o755)
    cfg = nginx.CacheConfig(procs.free_port(), ("127.0.0.1:8000",), tmp_path)
    nginxconf.check(nginxconf.render(cfg), tmp_path)  # valid: no error
    with pytest.raises(nginxconf.NginxConfigError, match='unknown directive "bogus_directive"'):
        nginxconf.check(nginxconf.render(cfg).replace("server_tokens off;", "bogus_directive on;"), tmp_path)
    assert not list(tmp_path.glob(".check-*")), "the checked file is left behind"


# -- a real nginx ------------------------------------------------------------------------------------------


def test_same_post_is_a_miss_then_a_hit_without_reaching_the_app(upstream, cfg, running):
    question = unique("same")
    status, cache, first = ask(cfg.listen_port, question)
    assert (status, cache, first["question"]) == (200, "MISS", question)
    status, cache, second = ask(cfg.listen_port, question)
    assert (status, cache) == (200, "HIT") and second == first
    assert upstream.count(question) == 1
    other = unique("other")
    assert ask(cfg.listen_port, other)[2]["question"] == other  # a different body is a different key
    assert ask(cfg.listen_port, question, mode="quality")[1] == "MISS"
    status, headers, _ = request(cfg.listen_port, "GET", "/health")
    assert status == 200 and "x-cache-status" not in headers  # /health is never cached
    lines = [json.loads(line) for line in running.access_log.read_text().splitlines()]
    assert [entry["cache"] for entry in lines if entry["uri"] == "/ask"][:2] == ["MISS", "HIT"]
    assert {"request_time", "upstream_response_time", "status"} <= set(lines[0])


def test_concurrent_questions_each_get_their_own_answer(upstream, cfg, running):
    questions = [unique(f"slow:q{i}") for i in range(5)]
    asks = [q for q in questions for _ in range(8)]
    random.shuffle(asks)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda q: (q, ask(cfg.listen_port, q)), asks))
    for question, (status, _, answer) in answers:
        assert status == 200 and answer["question"] == question
    # proxy_cache_lock: the concurrent misses of one key waited for a single request to the app.
    assert [upstream.count(q) for q in questions] == [1] * len(questions)


def test_an_error_is_never_cached(upstream, cfg, running):
    before = upstream.count("boom")
    assert ask(cfg.listen_port, "boom")[:2] == (500, "MISS")
    assert ask(cfg.listen_port, "boom")[:2] == (500, "MISS")
    assert upstream.count("boom") == before + 2


def body_of_size(question: str, size: int) -> bytes:
    head = json.dumps({"question": question, "mode": "fast", "padding": ""}).encode()[:-2]
    body = head + b"x" * (size - len(head) - 2) + b'"}'
    assert len(body) == size
    return body


def test_a_body_of_max_body_kb_is_cached_and_a_larger_one_passes_through(upstream, cfg, running):
    limit = cfg.max_body_kb * 1024
    largest = unique("largest")
    statuses = [request(cfg.listen_port, "POST", "/ask", body_of_size(largest, limit))[1] for _ in range(2)]
    # A body of max_body_kb is cached: its key fits proxy_buffer_size (with nginx's 4k default it would not).
    assert [h.get("x-cache-status") for h in statuses] == ["MISS", "HIT"]
    assert upstream.count(largest) == 1

    too_large = unique("too-large")
    body = body_of_size(too_large, limit + 2048)  # beyond what nginx may still read along with the headers
    for _ in range(2):
        status, headers, answer = request(cfg.listen_port, "POST", "/ask", body)
        assert (status, headers.get("x-cache-status"), json.loads(answer)["question"]) == (200, "BYPASS", too_large)
    assert upstream.count(too_large) == 2
    # A body that is not there at all is not cached either (it would share the key of every such request).
    status, headers, _ = request(cfg.listen_port, "POST", "/ask", b"")
    assert headers.get("x-cache-status") == "BYPASS"
    assert "not enough for cache key" not in running.error_log.read_text()


def test_a_reload_that_nginx_rejects_changes_nothing(upstream, cfg, running, monkeypatch):
    question = unique("reload")
    assert ask(cfg.listen_port, question)[1] == "MISS"
    pid, conf = running.proc.pid, running.conf_path.read_text()
    good = nginxconf.render
    monkeypatch.setattr(nginxconf, "render", lambda *a, **k: good(*a, **k).replace("server_tokens off;", "no_such x;"))
    with pytest.raises(nginxconf.NginxConfigError, match='unknown directive "no_such"'):
        running.reload(replace(cfg, ttl_s=5))
    monkeypatch.undo()
    assert running.conf_path.read_text() == conf and not (cfg.state_dir / nginx.CONF_PREV).exists()
    assert running.running and running.proc.pid == pid
    assert ask(cfg.listen_port, question)[:2] == (200, "HIT")  # the old configuration still serves
    assert running.status()["serving_digest"] == nginxconf.rendered_digest(conf)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(nginxconf.NginxError, match="in use"):
            running.reload(replace(cfg, listen_port=taken.getsockname()[1]))
    assert running.conf_path.read_text() == conf

    running.reload(replace(cfg, ttl_s=5))  # a good one takes, same master
    assert running.proc.pid == pid and running.config.ttl_s == 5
    assert (cfg.state_dir / nginx.CONF_PREV).read_text() == conf
    assert running.status()["serving_digest"] == running.status()["digest"] != nginxconf.rendered_digest(conf)


def test_purge_turns_a_hit_into_a_miss(upstream, cfg, running):
    question = unique("purge")
    ask(cfg.listen_port, question)
    assert ask(cfg.listen_port, question)[1] == "HIT"
    pid = running.proc.pid
    assert running.purge() == 2
    assert ask(cfg.listen_port, question)[1] == "MISS"
    assert ask(cfg.listen_port, question)[1] == "HIT"
    assert running.proc.pid == pid and upstream.count(question) == 2


def test_applier_apply_then_undo_leaves_nothing_running(upstream, cfg):
    applier = nginx.NginxApplier()
    [start] = nginx.plan(None, cfg)
    applier.apply([start])
    instance = nginx.Nginx(cfg.state_dir)
    proc = instance.proc
    assert instance.running and ask(cfg.listen_port, unique("applied"))[0] == 200
    applier.apply([start])  # idempotent: already serves it
    assert instance.proc.pid == proc.pid

    [plain] = nginx.plan(instance.config, replace(cfg, cache_enabled=False))
    applier.apply([plain])
    assert ask(cfg.listen_port, unique("plain"))[1] is None
    applier.undo([plain])
    assert ask(cfg.listen_port, unique("cached"))[1] == "MISS" and instance.proc.pid == proc.pid

    applier.undo([start])
    assert not procs.is_alive(proc) and procs.start_ticks(proc.pid) is None
    assert nginx._group_members(proc.pid) == []  # no worker left behind
    assert not instance.record_path.exists() and not instance.running
    applier.undo([start])  # idempotent


def test_a_start_that_fails_half_way_is_undone_cleanly(cfg):
    applier = nginx.NginxApplier()
    [start] = nginx.plan(None, cfg)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", cfg.listen_port))
        taken.listen()
        with pytest.raises(nginxconf.NginxError, match="in use"):
            applier.apply([start])
    applier.undo([start])
    assert not nginx.Nginx(cfg.state_dir).running and not nginx.Nginx(cfg.state_dir).record_path.exists()


def test_another_process_can_stop_it_from_the_record(cfg, running):
    master = running.proc
    stranger = nginx.Nginx(cfg.state_dir)  # knows only the directory
    assert stranger.status()["pid"] == master.pid
    with pytest.raises(nginxconf.NginxError, match="already runs"):
        stranger.start(cfg)
    assert stranger.stop() is True
    assert not procs.is_alive(master) and stranger.status()["running"] is False
    assert stranger.stop() is False


def test_a_dead_master_is_restarted_by_apply(cfg, running):
    master = running.proc
    procs.stop(master, sig=signal.SIGKILL, timeout=5)  # a crash: the workers outlive their master
    time.sleep(0.1)
    assert not running.running
    nginx.Nginx(cfg.state_dir).stop()  # clears the record and kills the orphaned workers
    assert nginx._group_members(master.pid) == []
    nginx.NginxApplier().apply(nginx.plan(None, cfg))
    assert running.running and running.proc.pid != master.pid


def test_a_reload_adds_the_stub_status_page_on_its_own_loopback_port(upstream, cfg, running):
    """Phase 3 reloads Phase 2's nginx with ``status_port``: stub_status answers there, and nowhere else."""
    assert cfg.status_url is None
    pid = running.proc.pid
    with_status = dataclasses.replace(cfg, status_port=procs.free_port())
    running.reload(with_status)
    ask(cfg.listen_port, unique("status"))
    status, _, body = request(with_status.status_port, "GET", nginxconf.STATUS_PATH)
    assert status == 200 and b"Active connections:" in body and b"Reading:" in body
    assert b"Active connections" not in request(cfg.listen_port, "GET", nginxconf.STATUS_PATH)[2]  # the app's
    assert request(with_status.status_port, "GET", "/ask")[0] == 404
    assert running.proc.pid == pid and with_status.status_url.endswith(f":{with_status.status_port}/stub_status")
    with pytest.raises(ValueError, match="status_port"):
        dataclasses.replace(cfg, status_port=cfg.listen_port)


# -- Phase 4: nginx as the load balancer ----------------------------------------------------------------------

# Digests (sha256) of what render() wrote for one upstream before the balancer's fields existed: with one
# upstream Phase 2's nginx.conf, and so the digest its ping location answers with, must never change.
ONE_UPSTREAM_RENDERS = {
    "default": "da1183bf3c6eb0cf1a2a2d8d3eaec8232c54c5f8b8e2d7811804df293c641a4b",
    "plain": "73b2339bdd75f48f89d3a53ae6e2a18fbae090f0bebdf496a5f7bfc810f0bfc7",
    "rooted": "19bad0ff7fa16749c3f7ae7f4cec4b47a9a89dd29c5919b8ffe1bec791a9c5e5",
}


def test_one_upstream_renders_byte_for_byte_as_before():
    pin = Path("/var/tmp/ragperf-pin")
    cases = {
        "default": (nginx.CacheConfig(8088, ("127.0.0.1:8000",), pin), {}),
        "plain": (
            nginx.CacheConfig(8088, ("127.0.0.1:8000",), pin, cache_enabled=False, status_port=9113),
            {},
        ),
        "rooted": (
            nginx.CacheConfig(8089, ("app.lab:8000",), pin, cache_lock=False, max_body_kb=64, proxy_timeout_s=2.5),
            {"user": "nobody nogroup", "key_version": 4},
        ),
    }
    for name, (cfg, kwargs) in cases.items():
        text = nginxconf.render(cfg, **kwargs)
        assert hashlib.sha256(text.encode()).hexdigest() == ONE_UPSTREAM_RENDERS[name], name
        # The balancer's fields do not reach a one-upstream configuration.
        tuned = replace(cfg, max_fails=5, fail_timeout_s=60, next_upstream_tries=7, next_upstream_timeout_s=2.0)
        assert nginxconf.render(tuned, **kwargs) == text, name
        assert "zone ragperf_app" not in text and "max_fails" not in text and "least_conn" not in text


def lb_config(upstreams: tuple[str, ...], state_dir: Path, **extra: object) -> nginx.CacheConfig:
    return nginx.CacheConfig(procs.free_port(), upstreams, state_dir, cache_enabled=False, **extra)


def test_the_balancer_config_passes_nginx_t_with_zone_and_retries(state_dir):
    cfg = lb_config(("127.0.0.1:8001", "127.0.0.1:8002", "localhost:8003"), state_dir, max_fails=2,
                    fail_timeout_s=5, next_upstream_tries=2, next_upstream_timeout_s=1.5)  # fmt: skip
    text = nginxconf.render(cfg)
    nginxconf.check(text, state_dir)
    upstream = text[text.index("upstream ragperf_app {") : text.index("    server {")]
    assert "zone ragperf_app 256k;" in upstream and "least_conn;" in upstream
    assert upstream.index("least_conn;") < upstream.index("keepalive 64;")  # nginx wants the balancer first
    for address in cfg.upstreams:
        assert f"server {address} max_fails=2 fail_timeout=5s;" in upstream
    for location in (text[text.index("location = /health") :].split("}")[0], text[text.index("location / {") :]):
        assert "proxy_next_upstream error timeout http_503 non_idempotent;" in location
        assert "proxy_next_upstream_tries 2;" in location and "proxy_next_upstream_timeout 1500ms;" in location
    assert "retrying one nginx has already sent is safe" in text  # says why non_idempotent is allowed
    cached = nginxconf.render(replace(cfg, cache_enabled=True))  # a caching balancer is a valid one too
    nginxconf.check(cached, state_dir)
    assert "zone ragperf_app 256k;" in cached and cached.count("non_idempotent;") == 2


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("max_fails", 0, "1 to 100"),
        ("max_fails", 101, "1 to 100"),
        ("fail_timeout_s", 0, "1 to 3600"),
        ("fail_timeout_s", 2.5, "whole number"),
        ("next_upstream_tries", 21, "1 to 20"),
        ("next_upstream_tries", 0, "1 to 20"),
        ("next_upstream_timeout_s", 0, "seconds"),
        ("next_upstream_timeout_s", True, "seconds"),
        ("next_upstream_tries", 4, "give 1 to 3"),  # two upstreams: at most one more than two
    ],
)
def test_bad_balancer_values_name_the_field(tmp_path, field, value, words):
    with pytest.raises(ValueError, match=field) as info:
        lb_config(("127.0.0.1:8001", "127.0.0.1:8002"), tmp_path, **{field: value})
    assert words in str(info.value)
    assert lb_config(("127.0.0.1:8001", "127.0.0.1:8002"), tmp_path).next_upstream_tries == 3  # the default fits


def log_line(time_iso: str, upstream: str, upstream_status: str, status: int = 200, **extra: object) -> str:
    entry = {"time": time_iso, "method": "POST", "uri": "/ask", "status": status, "request_time": 0.012,
             "upstream_status": upstream_status, "upstream": upstream, "cache": "", **extra}  # fmt: skip
    return json.dumps(entry)


def test_retried_reads_both_separators_and_filters_by_time(tmp_path):
    log_file = tmp_path / "access.log"
    assert nginx.retried(log_file).empty and list(nginx.retried(log_file).columns) == list(nginx.RETRIED_COLUMNS)
    lines = [
        log_line("2024-05-01T10:00:00+00:00", "127.0.0.1:8001", "200"),
        log_line("2024-05-01T10:00:01+00:00", "127.0.0.1:8001, 127.0.0.1:8002", "502, 200"),
        log_line("2024-05-01T12:00:02+02:00", "", "", cache="HIT"),  # served without an upstream
        log_line("2024-05-01T10:00:03+00:00", "127.0.0.1:8001, 127.0.0.1:8002 : 127.0.0.1:9000", "502, 404 : 200"),
        log_line("2024-05-01T10:00:04+00:00", "127.0.0.1:8003, ragperf_app", "504, 502", status=502),
    ]
    log_file.write_text("\n".join(lines) + "\n" + lines[1][:40])  # the last line is still being written
    rows = nginx.retried(log_file)
    start = 1714557600.0  # 2024-05-01T10:00:00Z
    assert list(rows["time"]) == [start + 1, start + 3, start + 4]
    assert list(rows["upstreams"]) == [
        ["127.0.0.1:8001", "127.0.0.1:8002"],
        ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:9000"],
        ["127.0.0.1:8003", "ragperf_app"],
    ]
    assert list(rows["upstream_statuses"]) == [[502, 200], [502, 404, 200], [504, 502]]
    assert list(rows["status"]) == [200, 200, 502] and list(rows["request_time"]) == [0.012] * 3
    assert list(nginx.retried(log_file, since=start + 2, until=start + 3)["time"]) == [start + 3]
    assert list(nginx.retried(log_file, until=start + 1)["time"]) == [start + 1]
    assert nginx.retried(log_file, since=start + 5).empty
    log_file.write_text(lines[0] + "\nnot json\n")
    with pytest.raises(ValueError, match="line 2 is not a JSON access-log entry"):
        nginx.retried(log_file)


# Each instance answers POST /ask with its own name; one asked to {"crash": <its name>} kills itself with the
# request read and unanswered (nginx has sent it: only non_idempotent lets nginx pass it on).
NAMED_APP = r"""
import json, os, signal, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[2]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, payload):
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send({"status": "ok", "name": NAME})

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        asked = json.loads(raw or b"{}")
        if asked.get("crash") == NAME:
            os.kill(os.getpid(), signal.SIGKILL)
        if asked.get("fail") == NAME:  # as the app does when its LLM provider answers 429
            body = b'{"detail": "LLM provider answered 429"}'
            self.send_response(502)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._send({"name": NAME})


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@pytest.fixture
def instances(state_dir):
    """Three named instances of a stand-in app, ``{name: (address, Proc)}``; all stopped by their PID afterwards."""
    base = state_dir / "instances"
    base.mkdir()
    script = base / "named_app.py"
    script.write_text(NAMED_APP)
    started = {}
    try:
        for name in ("a", "b", "c"):
            port = procs.free_port()
            proc = procs.start(f"test-app-{name}", [sys.executable, str(script), str(port), name],
                               base / f"{name}.log", port=port)  # fmt: skip
            started[name] = (f"127.0.0.1:{port}", proc)
            procs.wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=15)
        yield started
    finally:
        for _, proc in started.values():
            procs.stop(proc, timeout=5)


@pytest.fixture
def balancer(instances, state_dir):
    cfg = lb_config(tuple(address for address, _ in instances.values()), state_dir)
    instance = nginx.Nginx(state_dir)
    instance.start(cfg)
    try:
        yield instance
    finally:
        instance.stop()


def answered_by(port: int, **extra: str) -> str:
    status, _, body = request(port, "POST", "/ask", json.dumps({"question": "who?", **extra}).encode())
    assert status == 200, body
    return json.loads(body)["name"]


def test_the_balancer_spreads_requests_and_fails_over_a_dead_instance(instances, balancer):
    port = balancer.config.listen_port
    assert {answered_by(port) for _ in range(30)} == {"a", "b", "c"}
    assert nginx.retried(balancer.access_log).empty  # every instance answered at the first try

    # b is killed while it holds a POST nginx has sent: the request goes on to another instance.
    crashed = instances["b"][0]
    killed_at = time.time()
    assert set(answered_by(port, crash="b") for _ in range(50)) == {"a", "c"}  # each asserts a 200
    assert not procs.is_alive(instances["b"][1])
    rows = nginx.retried(balancer.access_log)
    assert len(rows) >= 1
    assert_failed_over(rows, crashed)

    # c is killed from outside between requests: connections to it are refused, and passed on as well.
    dead, proc = instances["c"]
    procs.stop(proc, sig=signal.SIGKILL, timeout=5)
    assert [answered_by(port) for _ in range(50)] == ["a"] * 50
    rows_now = nginx.retried(balancer.access_log)
    assert len(rows_now) > len(rows)
    assert_failed_over(rows_now[len(rows) :], dead)
    assert len(nginx.retried(balancer.access_log, since=int(killed_at))) == len(rows_now)
    assert nginx.retried(balancer.access_log, until=int(killed_at) - 3600).empty


def assert_failed_over(rows, dead: str) -> None:
    """Each row went to ``dead`` first, which did not answer (502), then to another instance, which did."""
    for upstreams, statuses, status in zip(rows["upstreams"], rows["upstream_statuses"], rows["status"], strict=True):
        assert len(upstreams) == 2 and upstreams[0] == dead and upstreams[1] != dead
        assert statuses == [502, 200] and status == 200


def test_a_balancer_naming_an_unknown_host_is_never_loaded(instances, balancer):
    cfg, pid = balancer.config, balancer.proc.pid
    digest, conf = running_digest(cfg), balancer.conf_path.read_text()
    assert digest == nginxconf.rendered_digest(conf)
    broken = replace(cfg, upstreams=(*cfg.upstreams[:2], "nosuchhost.invalid:80"))
    with pytest.raises(nginxconf.NginxConfigError, match="host not found") as info:
        balancer.reload(broken)
    assert "nosuchhost.invalid" in str(info.value)
    assert balancer.conf_path.read_text() == conf and not (cfg.state_dir / nginx.CONF_PREV).exists()
    assert balancer.proc.pid == pid and balancer.config == cfg
    assert running_digest(cfg) == digest  # the previous configuration still serves
    assert {answered_by(cfg.listen_port) for _ in range(12)} == {"a", "b", "c"}


def running_digest(cfg: nginx.CacheConfig) -> str | None:
    status, headers, _ = request(cfg.listen_port, "GET", nginxconf.PING_PATH)
    assert status == 200
    return headers.get(nginxconf.CONFIG_HEADER.lower())


def test_an_apps_own_502_is_passed_back_not_retried_and_takes_no_instance_out(instances, balancer):
    port = balancer.config.listen_port
    failed = [request(port, "POST", "/ask", json.dumps({"question": "q", "fail": "a"}).encode())[0] for _ in range(30)]
    assert set(failed) == {200, 502} and failed.count(502) >= 5  # a's answers reach the client as they are
    assert nginx.retried(balancer.access_log).empty  # none was sent to another instance as well
    assert {answered_by(port) for _ in range(30)} == {"a", "b", "c"}  # a is still in (max_fails counts no 502)
    retrying = nginx.CacheConfig(**{**balancer.config.to_dict(), "next_upstream": ["error", "http_502"]})
    assert "proxy_next_upstream error http_502 non_idempotent;" in nginxconf.render(retrying)
    with pytest.raises(ValueError, match="next_upstream: .* must name one or more of error, timeout"):
        nginx.CacheConfig(**{**balancer.config.to_dict(), "next_upstream": ["http_999"]})
