"""The node, nginx and Redis exporters: configuration, command lines, and real exporters in front of a real nginx
(stub_status) and a real redis-server, started and stopped by PID."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ragperf.core import procs
from ragperf.core.changes import Change
from ragperf.systems import nginx, rediscache
from ragperf.systems.monitoring import exporters
from ragperf.systems.monitoring.exporters import (
    ExporterApplier,
    ExporterConfig,
    ExporterError,
    ExporterServer,
    plan,
    samples,
    scrape,
)

pytestmark = pytest.mark.skipif(
    not all(Path(b).exists() for b in exporters.BINARIES.values()), reason="the Debian exporters are not installed"
)


@pytest.fixture
def base():
    """A throwaway directory under /var/tmp that nginx's unprivileged workers can enter (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="ragperf-test-exporters-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def redis_server(base):
    server = rediscache.RedisServer(base / "redis")
    cfg = rediscache.RedisConfig(port=procs.free_port(), state_dir=base / "redis")
    server.start(cfg)
    try:
        yield cfg
    finally:
        server.stop(timeout=5)


@pytest.fixture
def nginx_status(base):
    """A real nginx with stub_status on a loopback port (its upstream is never asked)."""
    cfg = nginx.CacheConfig(
        listen_port=procs.free_port(),
        upstreams=(f"127.0.0.1:{procs.free_port()}",),
        state_dir=base / "nginx",
        cache_enabled=False,
        status_port=procs.free_port(),
    )
    server = nginx.Nginx(cfg.state_dir)
    server.start(cfg)
    try:
        yield cfg
    finally:
        server.stop(timeout=5)


def _cfg(base: Path, which: str, target: str = "") -> ExporterConfig:
    return ExporterConfig(which=which, listen_port=procs.free_port(), state_dir=base / which, target=target)


# -- pure ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"which": "mysql"}, "which: must be one of node, nginx, redis"),
        ({"listen_port": 0}, "listen_port"),
        ({"listen_host": "0.0.0.0"}, "listen_host: 0.0.0.0 is not a loopback address"),
        ({"listen_host": "localhost"}, "listen_host: 'localhost' is not an IPv4 address"),
        ({"state_dir": "relative"}, "state_dir: must be an absolute path"),
        ({"target": "http://127.0.0.1:80/stub_status"}, "target: the node exporter"),
        ({"which": "redis", "target": "redis://:secret@127.0.0.1:6379"}, "target: .* without a password"),
        ({"which": "redis", "target": ""}, "target: '' is not redis://host:port"),
        ({"which": "nginx", "target": "127.0.0.1:80"}, "target: .* stub_status"),
        ({"which": "nginx", "target": "http://127.0.0.1:99999/stub_status"}, "target"),
    ],
)
def test_bad_values_name_the_field(changes, words):
    fields = {"which": "node", "listen_port": 9100, "state_dir": "/var/tmp/x", "target": ""} | changes
    with pytest.raises(ValueError, match=words):
        ExporterConfig(**fields)


def test_command_lines_use_each_binary_s_own_flag_style():
    node = ExporterConfig("node", 9100, Path("/var/tmp/n"))
    ngx = ExporterConfig("nginx", 9113, Path("/var/tmp/g"), "http://127.0.0.1:8081/stub_status")
    red = ExporterConfig("redis", 9121, Path("/var/tmp/r"), "redis://127.0.0.1:6390")
    node_argv = exporters.argv(node)
    assert node_argv[0] == "/usr/bin/prometheus-node-exporter"
    assert "--web.listen-address=127.0.0.1:9100" in node_argv and "--collector.disable-defaults" in node_argv
    assert "--collector.cpu" in node_argv and "--collector.systemd" not in node_argv
    assert exporters.argv(ngx)[1:] == ["-web.listen-address=127.0.0.1:9113",
                                       "-nginx.scrape-uri=http://127.0.0.1:8081/stub_status"]  # fmt: skip
    red_argv = exporters.argv(red)
    assert "-redis.addr=redis://127.0.0.1:6390" in red_argv and "-check-keys=" in red_argv
    assert node.metrics_url == "http://127.0.0.1:9100/metrics" and red.scrape_address == "127.0.0.1:9121"


def test_the_environment_drops_flag_defaults_of_that_exporter_only():
    env = {"PATH": "/usr/bin", "TIMEOUT": "x", "SCRAPE_URI": "y", "REDIS_EXPORTER_CHECK_KEYS": "*", "REDIS_ADDR": "z"}
    assert exporters.environment("nginx", env) == {"PATH": "/usr/bin", "REDIS_EXPORTER_CHECK_KEYS": "*",
                                                   "REDIS_ADDR": "z"}  # fmt: skip
    assert exporters.environment("redis", env) == {"PATH": "/usr/bin", "TIMEOUT": "x", "SCRAPE_URI": "y"}
    assert exporters.environment("node", env) == env


def test_plan_names_the_change_after_the_exporter(tmp_path):
    desired = _cfg(tmp_path, "redis", "redis://127.0.0.1:6390")
    [change] = plan(None, desired)
    assert (change.kind, change.name, change.before, change.after) == ("exporter", "redis", None, desired.to_dict())
    assert "start the redis exporter" in change.reason
    assert Change.from_json(json.loads(json.dumps(change.to_json()))) == change
    assert plan(desired, desired) == []
    moved = dataclasses.replace(desired, listen_port=desired.listen_port + 1)
    [restart] = plan(desired, moved)
    assert restart.before == desired.to_dict() and "listen_port" in restart.reason
    with pytest.raises(ValueError, match="which"):
        plan(_cfg(tmp_path, "node"), desired)


def test_samples_reads_names_as_written_labels_and_values():
    text = (
        '# TYPE x_up gauge\nx_up 1\n# TYPE y counter\ny_total{a="b"} 3\n'
        "# TYPE pg_statements_calls counter\n"
        'pg_statements_calls{query="SELECT \\"a\\" FROM t WHERE x = \'}\' ",queryid="-42"} 7 1700000000000\n'
        "z NaN\n"
    )
    assert samples(text, "x_up") == [({}, 1.0)]
    assert samples(text, "y_total") == [({"a": "b"}, 3.0)]
    assert samples(text, "pg_statements_calls") == [
        ({"query": "SELECT \"a\" FROM t WHERE x = '}' ", "queryid": "-42"}, 7.0)
    ]
    assert samples(text, "nope") == [] and "z" in exporters.metric_names(text)


# -- real processes --------------------------------------------------------------------------------------------


def test_node_exporter_serves_the_machine_with_no_failing_collector(base):
    cfg = _cfg(base, "node")
    server = ExporterServer(cfg.state_dir)
    try:
        proc = server.start(cfg)
        assert server.running and proc.port == cfg.listen_port
        text = scrape(cfg.metrics_url)
        for name in ("node_cpu_seconds_total", "node_memory_MemAvailable_bytes", "node_load1",
                     "node_network_receive_bytes_total", "node_filesystem_avail_bytes"):  # fmt: skip
            assert samples(text, name), name
        failed = [labels["collector"] for labels, v in samples(text, "node_scrape_collector_success") if v != 1]
        assert failed == []
        assert "collector failed" not in server.log_path.read_text()
        assert server.start(cfg).pid == proc.pid  # the same configuration: kept
    finally:
        server.stop(timeout=5)
    assert not server.running and not server.record_path.exists()


def test_nginx_exporter_reads_stub_status(base, nginx_status):
    cfg = _cfg(base, "nginx", nginx_status.status_url)
    server = ExporterServer(cfg.state_dir)
    try:
        server.start(cfg)
        text = server.metrics()
        assert samples(text, "nginx_up") == [({}, 1.0)]
        assert samples(text, "nginx_connections_accepted") and samples(text, "nginx_http_requests_total")
    finally:
        server.stop(timeout=5)


def test_nginx_exporter_without_nginx_fails_with_its_own_message(base):
    cfg = _cfg(base, "nginx", f"http://127.0.0.1:{procs.free_port()}/stub_status")
    server = ExporterServer(cfg.state_dir, timeout=10)
    with pytest.raises(ExporterError, match="Could not create Nginx Client"):
        server.start(cfg)
    assert not server.running and not server.record_path.exists()


def test_redis_exporter_reports_redis_up_and_waits_for_it(base, redis_server):
    cfg = _cfg(base, "redis", f"redis://127.0.0.1:{redis_server.port}")
    server = ExporterServer(cfg.state_dir)
    try:
        server.start(cfg)
        text = server.metrics()
        assert samples(text, "redis_up") == [({}, 1.0)]
        assert samples(text, "redis_keyspace_hits_total") and samples(text, "redis_memory_used_bytes")
        environ = Path(f"/proc/{server.proc.pid}/environ").read_bytes().split(b"\0")
        assert not any(entry.startswith(b"REDIS_EXPORTER_") for entry in environ)
    finally:
        server.stop(timeout=5)
    nothing = _cfg(base, "redis", f"redis://127.0.0.1:{procs.free_port()}")
    with pytest.raises(ExporterError, match="redis_up is 0"):
        ExporterServer(nothing.state_dir, timeout=3).start(nothing)


def test_a_state_directory_holds_one_exporter(base):
    node = _cfg(base, "node")
    server = ExporterServer(node.state_dir)
    try:
        server.start(node)
        other = dataclasses.replace(node, which="redis", target="redis://127.0.0.1:6390")
        with pytest.raises(ExporterError, match="state_dir: the node exporter runs from"):
            server.start(other)
        assert server.running
    finally:
        server.stop(timeout=5)


def test_applier_applies_a_group_and_undo_stops_them_all(base, redis_server, nginx_status, monkeypatch):
    monkeypatch.setenv("REDIS_EXPORTER_CHECK_KEYS", "*")  # would make it SCAN every key if inherited
    wanted = [
        _cfg(base, "node"),
        _cfg(base, "nginx", nginx_status.status_url),
        _cfg(base, "redis", f"redis://127.0.0.1:{redis_server.port}"),
    ]
    changes = [c for cfg in wanted for c in plan(None, cfg)]
    assert [c.name for c in changes] == ["node", "nginx", "redis"]
    applier = ExporterApplier()
    try:
        applier.apply(changes)
        assert all(ExporterServer(cfg.state_dir).running for cfg in wanted)
        applier.apply(changes)  # idempotent
        pids = {cfg.which: ExporterServer(cfg.state_dir).proc.pid for cfg in wanted}
        redis_env = Path(f"/proc/{pids['redis']}/environ").read_bytes()
        assert b"REDIS_EXPORTER_CHECK_KEYS" not in redis_env and b"PATH=" in redis_env
        moved = dataclasses.replace(wanted[0], state_dir=base / "node2")
        [move] = plan(wanted[0], moved)
        applier.apply([move])
        assert not ExporterServer(wanted[0].state_dir).running and ExporterServer(moved.state_dir).running
        applier.undo([move])
        assert ExporterServer(wanted[0].state_dir).running and not ExporterServer(moved.state_dir).running
    finally:
        applier.undo(list(reversed(changes)))
    assert not any(ExporterServer(cfg.state_dir).running for cfg in wanted)
    assert not any(os.path.exists(cfg.state_dir / exporters.RECORD) for cfg in wanted)
    applier.undo(changes)  # idempotent
