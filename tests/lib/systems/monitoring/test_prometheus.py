"""Our own Prometheus: the configuration, promtool, a real server scraping itself and a tiny exporter, the reads,
reloads and the applier. Nothing is mocked: the exporter is an http.server thread serving prometheus_client's
``generate_latest``."""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError
from ragperf.systems.monitoring import prometheus
from ragperf.systems.monitoring.prometheus import (
    PrometheusApplier,
    PrometheusConfig,
    PrometheusError,
    PrometheusQueryError,
    PrometheusServer,
    ScrapeTarget,
    plan,
    render,
)

pytestmark = pytest.mark.skipif(
    not Path(prometheus.prometheus_binary()).exists() or not Path(prometheus.promtool_binary()).exists(),
    reason="prometheus and promtool are not installed",
)

RULES = """groups:
- name: test
  rules:
  - record: test:value:doubled
    expr: ragperf_test_value * 2
  - alert: TestValueHigh
    expr: ragperf_test_value > 1
    labels:
      severity: ticket
"""


@pytest.fixture
def base() -> Iterator[Path]:
    """A throwaway directory under /var/tmp (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="ragperf-test-prometheus-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Exporter:
    """A tiny exporter on a free loopback port: a gauge ragperf_test_value = 2.5 and a counter."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        Gauge("ragperf_test_value", "a test gauge", registry=self.registry).set(2.5)
        Counter("ragperf_test_requests", "a test counter", ["code"], registry=self.registry).labels("200").inc(7)
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", procs.free_port()), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    exp = Exporter()
    try:
        yield exp
    finally:
        exp.close()


@pytest.fixture(scope="module")
def running(exporter: Exporter) -> Iterator[tuple[PrometheusServer, PrometheusConfig]]:
    """One Prometheus for the module, scraping itself and the exporter every second."""
    base = Path(tempfile.mkdtemp(prefix="ragperf-test-prometheus-", dir="/var/tmp"))
    cfg = PrometheusConfig(
        listen_port=procs.free_port(),
        state_dir=base / "prom",
        scrape_interval_s=1,
        targets=(f"app={exporter.address}",),
        retention_time_h=1,
        retention_size_mb=64,
    )
    server = PrometheusServer(cfg.state_dir)
    try:
        server.start(cfg)
        prometheus.wait_for_targets(cfg.url, ["prometheus", "app"], timeout=60)
        yield server, cfg
    finally:
        try:
            server.stop(timeout=10)
        finally:
            shutil.rmtree(base, ignore_errors=True)


# -- configuration -------------------------------------------------------------------------------------


def test_scrape_target_parses_and_prints():
    target = ScrapeTarget.parse("node=127.0.0.1:9100")
    assert (target.job, target.address, target.path) == ("node", "127.0.0.1:9100", "/metrics")
    assert str(target) == "node=127.0.0.1:9100/metrics"
    other = ScrapeTarget.parse("cache=localhost:8081/__cache/metrics")
    assert other.path == "/__cache/metrics" and ScrapeTarget.parse(str(other)) == other


@pytest.mark.parametrize(
    "text, words",
    [
        ("127.0.0.1:9100", "job=host:port"),
        ("Node=127.0.0.1:9100", "job"),
        ("node=127.0.0.1", "address"),
        ("node=127.0.0.1:70000", "address"),
        ("node=:9100", "address"),
        ("node=127.0.0.1:9100/a b", "path"),
        ("node=127.0.0.1:9100/metrics?x=1", "path"),
    ],
)
def test_bad_targets_name_the_part(text, words):
    with pytest.raises(ValueError, match=words):
        ScrapeTarget.parse(text)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"listen_port": 0}, "listen_port"),
        ({"listen_port": True}, "listen_port"),
        ({"listen_host": "localhost"}, "listen_host"),
        ({"scrape_interval_s": 0.5}, "scrape_interval_s"),
        ({"scrape_interval_s": 301}, "scrape_interval_s"),
        ({"targets": "a=127.0.0.1:1"}, "targets"),
        ({"targets": ("a=127.0.0.1:1/x", "a=127.0.0.1:2/y")}, "two metrics paths"),
        ({"targets": ("a=127.0.0.1:1", "a=127.0.0.1:1")}, "twice"),
        ({"targets": ("prometheus=127.0.0.1:1",)}, "own scrape"),
        ({"alertmanager": "127.0.0.1"}, "alertmanager"),
        ({"rules_yaml": None}, "rules_yaml"),
        ({"retention_time_h": 0}, "retention_time_h"),
        ({"retention_size_mb": 8}, "retention_size_mb"),
    ],
)
def test_bad_config_names_the_field(changes, words):
    with pytest.raises(ValueError, match=words):
        PrometheusConfig(**{"listen_port": 9090, "state_dir": Path("/var/tmp/p"), **changes})


def test_config_round_trips_through_json_lists():
    cfg = PrometheusConfig(
        listen_port=9090, state_dir=Path("/var/tmp/p"), targets=("a=127.0.0.1:1", "b=127.0.0.1:2/m"), rules_yaml=RULES
    )
    data = cfg.to_dict()
    assert data["targets"] == ["a=127.0.0.1:1/metrics", "b=127.0.0.1:2/m"]
    assert PrometheusConfig.from_dict(data) == cfg
    assert cfg.url == "http://127.0.0.1:9090"


def test_render_has_one_job_per_name_the_self_scrape_and_the_alertmanager():
    cfg = PrometheusConfig(
        listen_port=9090,
        state_dir=Path("/var/tmp/p"),
        scrape_interval_s=5,
        targets=("node=127.0.0.1:9100", "app=127.0.0.1:8001", "app=127.0.0.1:8002", "cache=127.0.0.1:8081/__m"),
        alertmanager="127.0.0.1:9093",
    )
    data = yaml.safe_load(render(cfg))
    assert data["global"] == {"scrape_interval": "5s", "evaluation_interval": "5s", "scrape_timeout": "5s"}
    assert data["rule_files"] == ["rules.yml"]
    assert data["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:9093"]
    jobs = {job["job_name"]: job for job in data["scrape_configs"]}
    assert list(jobs) == ["prometheus", "node", "app", "cache"]
    assert jobs["prometheus"]["static_configs"][0]["targets"] == ["127.0.0.1:9090"]
    assert jobs["app"]["static_configs"][0]["targets"] == ["127.0.0.1:8001", "127.0.0.1:8002"]
    assert jobs["cache"]["metrics_path"] == "/__m"
    assert not any("relabel_configs" in job for job in jobs.values())  # instance stays the address
    slow = yaml.safe_load(render(dataclasses.replace(cfg, scrape_interval_s=60, alertmanager=None)))
    assert slow["global"]["scrape_timeout"] == "10s" and "alerting" not in slow
    assert (
        yaml.safe_load(render(dataclasses.replace(cfg, scrape_interval_s=1.5)))["global"]["scrape_interval"] == "1500ms"
    )
    assert prometheus.check_config(render(cfg), "groups: []\n").ok


def test_promtool_wrappers_say_what_is_wrong():
    bad_rules = "groups:\n- name: g\n  rules:\n  - alert: X\n    expr: up ==\n"
    result = prometheus.check_rules(bad_rules)
    assert not result.ok and "parse error" in result.output
    assert prometheus.check_rules(RULES).ok
    cfg = PrometheusConfig(listen_port=9090, state_dir=Path("/var/tmp/p"))
    missing = prometheus.check_config(render(cfg))  # rules.yml is not there
    assert not missing.ok and "rules.yml" in missing.output
    assert not prometheus.check_config(render(cfg), bad_rules).ok
    tests = """rule_files: [rules.yml]
evaluation_interval: 1s
tests:
- interval: 1s
  input_series:
  - series: ragperf_test_value
    values: 2x10
  alert_rule_test:
  - eval_time: 5s
    alertname: TestValueHigh
    exp_alerts:
    - exp_labels: {severity: ticket}
"""
    assert prometheus.test_rules(RULES, tests).ok
    wrong = prometheus.test_rules(RULES, tests.replace("ticket", "page"))
    assert not wrong.ok and "FAILED" in wrong.output


def test_check_files_refuses_a_bad_config_and_writes_nothing(base):
    cfg = PrometheusConfig(
        listen_port=procs.free_port(),
        state_dir=base / "prom",
        rules_yaml="groups: [{name: g, rules: [{alert: X, expr: 'up =='}]}]",
    )
    server = PrometheusServer(cfg.state_dir)
    with pytest.raises(PrometheusError, match="promtool check config refused"):
        server.start(cfg)
    assert not server.running
    assert not (cfg.state_dir / "prometheus.yml").exists() and not (cfg.state_dir / "rules.yml").exists()


def test_range_step_keeps_under_the_point_limit():
    assert prometheus.range_step(0, 60) == 1.0
    assert prometheus.range_step(0, 60, scrape_interval_s=15) == 15.0
    assert prometheus.range_step(0, 60, step_s=0.5) == 0.5
    day = prometheus.range_step(0, 86400 * 7, step_s=1)
    assert math.floor(86400 * 7 / day) + 1 <= 11_000
    with pytest.raises(ValueError, match="before start"):
        prometheus.range_step(10, 0)


def test_plan_is_pure_and_says_reload_or_restart():
    cfg = PrometheusConfig(listen_port=9090, state_dir=Path("/var/tmp/p"))
    assert plan(cfg, cfg) == []
    [start] = plan(None, cfg)
    assert start.kind == "prometheus" and start.before is None and start.details["action"] == "start"
    [reload] = plan(cfg, dataclasses.replace(cfg, rules_yaml=RULES, targets=("a=127.0.0.1:1",)))
    assert reload.details["action"] == "reload" and "rules changed" in reload.reason
    [restart] = plan(cfg, dataclasses.replace(cfg, retention_time_h=48))
    assert restart.details["action"] == "restart" and "retention_time_h 24 -> 48" in restart.reason


# -- a real Prometheus -----------------------------------------------------------------------------------


def test_targets_and_queries_return_floats(running, exporter):
    server, cfg = running
    frame = prometheus.targets(cfg.url)
    assert set(frame["job"]) == {"prometheus", "app"} and set(frame["health"]) == {"up"}
    assert frame.loc[frame["job"] == "app", "instance"].item() == exporter.address
    value = prometheus.wait_for_sample(cfg.url, "ragperf_test_value", timeout=30)
    assert value["value"].tolist() == [2.5] and value["value"].dtype == float
    assert value["job"].item() == "app" and value["instance"].item() == exporter.address
    assert prometheus.query(cfg.url, "1 + 1")["value"].tolist() == [2.0]
    assert math.isinf(prometheus.query(cfg.url, "1 / 0")["value"].item())
    assert prometheus.query(cfg.url, "absent_metric_name").empty


def test_query_range_is_a_long_frame_in_utc(running):
    server, cfg = running
    procs.wait_until(
        lambda: None if len(prometheus.query_range(cfg.url, "up", time.time() - 30, time.time())) >= 4 else "few",
        timeout=60,
        what="Prometheus did not keep a few samples of up",
        interval=0.5,
    )
    end = time.time()
    frame = prometheus.query_range(cfg.url, 'up{job="app"}', end - 30, end, scrape_interval_s=1)
    assert list(frame.columns[:2]) == ["time", "value"] and "job" in frame.columns
    assert isinstance(frame["time"].dtype, pd.DatetimeTZDtype) and str(frame["time"].dt.tz) == "UTC"
    assert frame["value"].dtype == float and set(frame["value"]) == {1.0}
    assert frame["time"].is_monotonic_increasing
    empty = prometheus.query_range(cfg.url, "absent_metric_name", end - 30, end)
    assert empty.empty and list(empty.columns) == ["time", "value"]


def test_a_bad_expression_raises_with_prometheus_words(running):
    _, cfg = running
    with pytest.raises(PrometheusQueryError, match="bad_data") as caught:
        prometheus.query(cfg.url, "up{")
    assert caught.value.error_type == "bad_data" and "parse error" in caught.value.error
    with pytest.raises(PrometheusQueryError):
        prometheus.query_range(cfg.url, "rate(up)", time.time() - 10, time.time())


def test_wait_for_targets_names_what_is_down(running):
    _, cfg = running
    with pytest.raises(PrometheusError, match="no target"):
        prometheus.wait_for_targets(cfg.url, ["nonexistent"], timeout=0.5)


def test_reload_keeps_the_process_and_takes_rules_and_targets(running):
    server, cfg = running
    pid = server.proc.pid
    dead = f"127.0.0.1:{procs.free_port()}"
    new = dataclasses.replace(cfg, rules_yaml=RULES, targets=(*cfg.targets, f"gone={dead}"))
    assert "jobs" in prometheus.loaded_mismatch(new)  # the confirmation can tell the old configuration from the new
    try:
        server.start(new)
        assert prometheus.loaded_mismatch(new) is None
        assert server.proc.pid == pid and server.config == new
        assert (cfg.state_dir / "rules.yml").read_text() == RULES
        assert prometheus.check_config(cfg.state_dir).ok
        loaded = prometheus.rules(cfg.url)
        assert set(loaded["name"]) == {"test:value:doubled", "TestValueHigh"}
        procs.wait_until(
            lambda: None if not prometheus.alerts(cfg.url).empty else "no alert yet",
            timeout=30,
            what="TestValueHigh did not fire",
            interval=0.25,
        )
        alert = prometheus.alerts(cfg.url).iloc[0]
        assert alert["alertname"] == "TestValueHigh" and alert["state"] == "firing" and alert["value"] == 2.5
        assert alert["severity"] == "ticket" and alert["job"] == "app"

        def gone_is_down() -> str | None:
            frame = prometheus.targets(cfg.url)
            return None if "down" in set(frame.loc[frame["job"] == "gone", "health"]) else "not scraped yet"

        procs.wait_until(gone_is_down, timeout=30, what="the new target was not scraped", interval=0.25)
        with pytest.raises(PrometheusError, match=f"gone {dead} is down: .*refused"):
            prometheus.wait_for_targets(cfg.url, ["gone"], timeout=0.5)
        bad = dataclasses.replace(new, rules_yaml="groups: [{name: g, rules: [{record: 'x', expr: 'up =='}]}]")
        with pytest.raises(PrometheusError, match="promtool"):
            server.start(bad)
        assert server.config == new and (cfg.state_dir / "rules.yml").read_text() == RULES
    finally:
        server.start(cfg)
    assert server.proc.pid == pid and prometheus.rules(cfg.url).empty


def test_applier_starts_restarts_and_undo_removes_only_its_files(base):
    cfg = PrometheusConfig(listen_port=procs.free_port(), state_dir=base / "prom", scrape_interval_s=1)
    cfg.state_dir.mkdir()
    keep = cfg.state_dir / "notes.txt"
    keep.write_text("not Prometheus's")
    applier = PrometheusApplier(timeout=60)
    server = PrometheusServer(cfg.state_dir)
    try:
        [start] = plan(None, cfg)
        applier.apply([start])
        first = server.proc
        assert server.running and server.config == cfg
        applier.apply([start])  # idempotent
        assert server.proc == first
        longer = dataclasses.replace(cfg, retention_time_h=2)
        [restart] = plan(cfg, longer)
        applier.apply([restart])
        assert server.config == longer and server.proc.pid != first.pid and not procs.is_alive(first)
        assert "--storage.tsdb.retention.time=2h" in server.proc.argv
        applier.undo([restart])
        assert server.config == cfg
        proc = server.proc
        applier.undo([start])
        assert not procs.is_alive(proc) and procs.port_is_free(cfg.listen_port)
        assert sorted(p.name for p in cfg.state_dir.iterdir()) == ["notes.txt"]
        applier.undo([start])  # idempotent
    finally:
        server.stop(timeout=10)


def test_applier_refuses_other_kinds():
    with pytest.raises(ChangeError, match="prometheus"):
        PrometheusApplier().apply([Change(kind="nginx", name="x", before=None, after=None, reason="")])
