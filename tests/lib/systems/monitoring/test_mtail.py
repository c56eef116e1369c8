"""mtail on nginx's JSON access log: the program, its configuration, and a real mtail reading appended lines."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragperf.core import procs
from ragperf.systems.monitoring import mtail
from ragperf.systems.monitoring.healthmon import STANDARD_BUCKETS
from ragperf.systems.monitoring.mtail import MtailApplier, MtailConfig, MtailError, MtailServer, plan, render_program

pytestmark = pytest.mark.skipif(shutil.which(mtail.mtail_binary()) is None, reason="mtail is not installed")

BUCKETS = (0.005, 0.05, 0.25, 0.5, 1.0)


def line(uri: str, status: int, request_time: str, upstream_time: str, upstream_status: str, cache: str) -> str:
    """One access log line in nginx's ragperf_json field order (request_time unquoted, as nginx writes it)."""
    q = json.dumps
    return (
        f'{{"time":"2025-01-01T00:00:00+00:00","remote":"127.0.0.1","method":"POST","uri":{q(uri)},'
        f'"status":{status},"bytes":42,"request_length":120,"request_time":{request_time},'
        f'"upstream_response_time":{q(upstream_time)},"upstream_status":{q(upstream_status)},'
        f'"upstream":"127.0.0.1:8001","cache":{q(cache)},"connection_requests":1}}\n'
    )


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page by (name, sorted labels)."""
    text = httpx.get(f"{url}/metrics", timeout=5, trust_env=False).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_sample_line_is_the_nginx_format():
    text = line("/ask?x=1", 200, "0.000", "", "", "HIT")
    assert text.startswith('{"time":"2025-01-01T00:00:00+00:00","remote":"127.0.0.1","method":"POST","uri":"/ask?x=1",')
    assert '"status":200,"bytes":42,"request_length":120,"request_time":0.000,"upstream_response_time":"",' in text
    assert text.endswith('"upstream":"127.0.0.1:8001","cache":"HIT","connection_requests":1}\n')


def test_render_program_names_the_contract_and_compiles():
    text = render_program(BUCKETS)
    for name in (
        "counter ragperf_nginx_requests_total by code, cache",
        "histogram ragperf_nginx_request_duration_seconds by cache",
        "histogram ragperf_nginx_upstream_duration_seconds buckets",
        "counter ragperf_nginx_upstream_tries_total by upstream_status",
    ):
        assert name in text
    assert "buckets -1.0, 0.005, 0.05, 0.25, 0.5, 1.0" in text
    mtail.check_program(text)
    mtail.check_program(render_program())  # the standard buckets too
    with pytest.raises(MtailError, match="refused"):
        mtail.check_program(text.replace("(?P<status>", "(?P<status"))


def test_config_refuses_what_mtail_would_misread(tmp_path):
    ok = MtailConfig(log_path=tmp_path / "access.log", listen_port=9999, state_dir=tmp_path / "mtail")
    assert ok.buckets == STANDARD_BUCKETS and ok.url == "http://127.0.0.1:9999"
    assert MtailConfig.from_dict(ok.to_dict()) == ok
    for kw, field in (
        ({"log_path": tmp_path / "a,b.log"}, "log_path"),
        ({"log_path": tmp_path / "*.log"}, "log_path"),
        ({"log_path": "access.log"}, "log_path"),
        ({"state_dir": "relative"}, "state_dir"),
        ({"listen_port": 0}, "listen_port"),
        ({"listen_host": "localhost"}, "listen_host"),
        ({"buckets": (0.5, 0.1)}, "buckets"),
        ({"buckets": ()}, "buckets"),
    ):
        with pytest.raises(ValueError, match=field):
            MtailConfig(**{**ok.__dict__, **kw})


def test_plan_says_what_and_undoes(tmp_path):
    cfg = MtailConfig(log_path=tmp_path / "access.log", listen_port=9999, state_dir=tmp_path / "mtail")
    assert plan(cfg, cfg) == []
    (change,) = plan(None, cfg)
    assert change.kind == "mtail" and change.before is None and change.after == cfg.to_dict()
    assert "current end" in change.reason and str(cfg.log_path) in change.reason
    (stop,) = plan(cfg, None)
    assert stop.after is None and "stop" in stop.reason


def test_start_refuses_a_log_folder_that_does_not_exist(tmp_path):
    cfg = MtailConfig(log_path=tmp_path / "nginx" / "access.log", listen_port=procs.free_port(),
                      state_dir=tmp_path / "mtail")  # fmt: skip
    with pytest.raises(MtailError, match="log_path"):
        MtailServer(cfg.state_dir).start(cfg)
    assert not MtailServer(cfg.state_dir).running


def test_mtail_counts_appended_lines_only(tmp_path):
    log_path = tmp_path / "nginx" / "access.log"
    log_path.parent.mkdir()
    # An earlier phase's lines: mtail must start at the end and never count them.
    log_path.write_text(line("/ask", 200, "0.100", "0.099", "200", "MISS") * 3)
    cfg = MtailConfig(log_path=log_path, listen_port=procs.free_port(), state_dir=tmp_path / "mtail", buckets=BUCKETS)
    applier = MtailApplier()
    (change,) = plan(None, cfg)
    server = MtailServer(cfg.state_dir)
    try:
        applier.apply([change])
        assert server.running and server.config == cfg
        assert server.program_path.read_text() == render_program(BUCKETS)
        applier.apply([change])  # idempotent: the same process keeps running
        pid = server.proc.pid
        with log_path.open("a") as out:
            out.write(line("/ask", 200, "0.000", "", "", "HIT"))  # an nginx hit: 0 s, no upstream
            out.write(line("/ask", 200, "0.130", "0.120", "200", "MISS"))
            out.write(line("/ask", 502, "0.310", "0.001, 0.300", "502, 200", ""))  # retried on the next upstream
            out.write(line("/health", 200, "0.002", "0.002", "200", ""))
            out.write(line("/other", 200, "0.002", "0.002", "200", ""))  # not counted
            out.write(line("/asking", 200, "0.002", "0.002", "200", ""))  # not counted
        expected = {
            ("ragperf_nginx_requests_total", (("cache", "HIT"), ("code", "200"))): 1,
            ("ragperf_nginx_requests_total", (("cache", "MISS"), ("code", "200"))): 1,
            ("ragperf_nginx_requests_total", (("cache", "-"), ("code", "502"))): 1,
            ("ragperf_nginx_requests_total", (("cache", "-"), ("code", "200"))): 1,
            ("ragperf_nginx_request_duration_seconds_count", (("cache", "HIT"),)): 1,
            ("ragperf_nginx_request_duration_seconds_bucket", (("cache", "HIT"), ("le", "0.005"))): 1,  # the 0 s hit
            ("ragperf_nginx_request_duration_seconds_bucket", (("cache", "HIT"), ("le", "+Inf"))): 1,
            ("ragperf_nginx_request_duration_seconds_count", (("cache", "MISS"),)): 1,
            ("ragperf_nginx_request_duration_seconds_bucket", (("cache", "MISS"), ("le", "0.05"))): 0,
            ("ragperf_nginx_request_duration_seconds_bucket", (("cache", "MISS"), ("le", "0.25"))): 1,
            ("ragperf_nginx_request_duration_seconds_count", (("cache", "-"),)): 2,
            ("ragperf_nginx_request_duration_seconds_bucket", (("cache", "-"), ("le", "0.005"))): 1,
            ("ragperf_nginx_request_duration_seconds_bucket", (("cache", "-"), ("le", "0.25"))): 1,
            ("ragperf_nginx_request_duration_seconds_bucket", (("cache", "-"), ("le", "0.5"))): 2,
            # the MISS (0.120), the retried one's last try (0.300), /health (0.002); never the hit's ""
            ("ragperf_nginx_upstream_duration_seconds_count", ()): 3,
            ("ragperf_nginx_upstream_duration_seconds_bucket", (("le", "0.005"),)): 1,
            ("ragperf_nginx_upstream_duration_seconds_bucket", (("le", "0.25"),)): 2,
            ("ragperf_nginx_upstream_duration_seconds_bucket", (("le", "0.5"),)): 3,
            ("ragperf_nginx_upstream_duration_seconds_bucket", (("le", "+Inf"),)): 3,
            ("ragperf_nginx_upstream_tries_total", (("upstream_status", "502"),)): 1,
            ("ragperf_nginx_upstream_tries_total", (("upstream_status", "200"),)): 1,
        }
        seen: dict = {}

        def matches() -> str | None:
            nonlocal seen
            seen = scrape(cfg.url)
            wrong = {k: seen.get(k) for k, v in expected.items() if seen.get(k) != v}
            return None if not wrong else f"not yet: {wrong}"

        procs.wait_until(matches, timeout=30, what="mtail did not count the appended lines", proc=server.proc,
                         interval=0.2)  # fmt: skip
        assert seen[("ragperf_nginx_upstream_duration_seconds_sum", ())] == pytest.approx(0.422)
        assert seen[("ragperf_nginx_request_duration_seconds_sum", (("cache", "-"),))] == pytest.approx(0.312)
        requests = {k: v for k, v in seen.items() if k[0] == "ragperf_nginx_requests_total"}
        assert sum(requests.values()) == 4  # neither the old lines nor /other nor /asking
        tries = {k: v for k, v in seen.items() if k[0] == "ragperf_nginx_upstream_tries_total"}
        assert sum(tries.values()) == 2  # requests that were not retried add no tries
        ours = [labels for name, labels in seen if name.startswith("ragperf_")]
        assert ours and not any(dict(labels).get("prog") for labels in ours)  # --emit_prog_label=false
        assert server.proc.pid == pid
    finally:
        applier.undo([change])
    assert not server.running and server.proc is None
    assert procs.port_is_free(cfg.listen_port)


def test_a_missing_log_is_created_so_mtail_tails_it_from_the_first_line(tmp_path):
    log_path = tmp_path / "access.log"
    cfg = MtailConfig(log_path=log_path, listen_port=procs.free_port(), state_dir=tmp_path / "mtail", buckets=BUCKETS)
    server = MtailServer(cfg.state_dir)
    try:
        server.start(cfg)
        assert log_path.exists() and log_path.read_text() == ""
        with log_path.open("a") as out:
            out.write(line("/ask", 200, "0.000", "", "", "HIT"))
        key = ("ragperf_nginx_requests_total", (("cache", "HIT"), ("code", "200")))
        procs.wait_until(
            lambda: None if scrape(cfg.url).get(key) == 1 else "not yet",
            timeout=30,
            what="mtail did not count the first line of a new log",
            proc=server.proc,
            interval=0.2,
        )
    finally:
        server.stop()
