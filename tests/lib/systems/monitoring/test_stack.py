"""The monitoring as one system: what the parameters ask for around a target, in which order, and its files.

Started on the lab and proven live (every target up, every panel with data, the drill's alert end to end) by the
Phase 3 notebook in tests/test_phases.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ragperf.core import procs
from ragperf.core.params import Params
from ragperf.core.target import Target
from ragperf.systems import cacheproxy, cachetier, nginx, rediscache
from ragperf.systems.monitoring import prometheus, stack

NOTHING = cachetier.Running(None, None, None)
DB = stack.Database("127.0.0.1", 5432, "rag", 180006)


def tier(base: Path) -> cachetier.Running:
    redis = rediscache.RedisConfig(port=procs.free_port(), state_dir=base / "cache" / "redis")
    proxy = cacheproxy.ProxyConfig(listen_port=procs.free_port(), upstream="http://127.0.0.1:8000",
                                   redis_url=redis.url, state_dir=base / "cache" / "proxy")  # fmt: skip
    front = nginx.CacheConfig(listen_port=procs.free_port(), upstreams=(f"127.0.0.1:{proxy.listen_port}",),
                              state_dir=base / "cache" / "nginx")  # fmt: skip
    return cachetier.Running(redis, proxy, front)


@pytest.fixture
def target(tmp_path) -> Target:
    return Target("lab", "http://127.0.0.1:8000", "host=127.0.0.1 port=5432 dbname=rag user=postgres",
                  lab_dir=tmp_path)  # fmt: skip


def test_with_phase2s_tier_every_layer_is_scraped_and_nginx_gets_a_status_port(tmp_path, target):
    running = tier(tmp_path)
    stk = stack.desired(target, Params(), tmp_path / "run" / "phase3", running, DB)
    jobs = set(stk.scrape_targets()["job"])
    assert jobs == {"node", "alertmanager", "healthmon", "postgres", "nginx", "redis", "mtail", "cache"}
    assert stk.nginx.status_port and stk.nginx.status_port != running.nginx.listen_port
    assert stk.nginx_exporter.target == stk.nginx.status_url and stk.redis_exporter.target.startswith("redis://")
    assert [s.name for s in stk.slis] == ["entry", "probe"] and stk.base == tmp_path / "monitor"
    assert stk.sink.out_dir == (tmp_path / "run" / "phase3" / "alerts").absolute()
    planned = stack.plan(stack.running(stk.base), stk, running)
    kinds = [c.kind for c in planned]
    # nginx is reloaded before its exporter reads stub_status; Prometheus starts last, once its targets exist
    assert kinds.index("nginx") < kinds.index("exporter", kinds.index("nginx"))
    assert kinds[-3:] == ["alertsink", "alertmanager", "prometheus"] and kinds[0] == "pgexporter"
    nginx_change = next(c for c in planned if c.kind == "nginx")
    assert nginx_change.before == running.nginx.to_dict() and nginx_change.after["status_port"]
    assert prometheus.check_config(prometheus.render(stk.prometheus), stk.prometheus.rules_yaml).ok


def test_without_the_tier_or_a_database_the_service_is_still_probed_and_the_notes_say_what_is_missing(tmp_path):
    bare = Target("deployment", "http://10.0.0.5:8000")
    stk = stack.desired(bare, Params.model_validate({"monitor": {"state_dir": str(tmp_path / "m")}}),
                        tmp_path / "out", NOTHING, None)  # fmt: skip
    assert set(stk.scrape_targets()["job"]) == {"node", "alertmanager", "healthmon"}
    assert stk.pgexporter is None and stk.nginx is None and stk.mtail is None
    assert [s.name for s in stk.slis] == ["probe"] and len(stk.notes) == 2 and "target.dsn" in stk.notes[0]
    planned = stack.plan(stack.running(stk.base), stk, NOTHING)
    assert [c.kind for c in planned] == ["exporter", "alertsink", "alertmanager", "prometheus"]


def test_rendered_files_hold_no_password_and_the_health_monitor_uses_the_scraped_port(tmp_path, target):
    stk = stack.desired(target, Params(), tmp_path / "out", tier(tmp_path), DB)
    files = stack.rendered_files(stk)
    assert set(files) >= {"prometheus.yml", "rules.yml", "alertmanager.yml", "postgres_exporter_queries.yaml",
                          "nginx.mtail", "nginx.conf"}  # fmt: skip
    assert "stub_status" in files["nginx.conf"] and str(stk.pgexporter.password_file) not in "".join(files.values())
    monitor = stack.health_monitor(stk, Params(), "http://127.0.0.1:8000", tmp_path / "q.jsonl", tmp_path, 60)
    assert f"healthmon=127.0.0.1:{monitor.listen_port}/metrics" in stk.prometheus.targets
    assert Params().slo.p95_s in monitor.buckets
