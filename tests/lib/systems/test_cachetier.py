"""The caching tier planned, not started: ports, state directories, the chain nginx → add-on → app, the order."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ragperf.core import params
from ragperf.core.params import Params
from ragperf.core.target import Target
from ragperf.systems import cachetier
from ragperf.systems.cachetier import Running

NOTHING = Running(None, None, None)
APP = "http://127.0.0.1:8000"


def _params(tmp_path: Path, **cache: object) -> Params:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"cache": cache}))
    return params.load("smoke", "lab", [path])


def _target(base_url: str = APP, lab_dir: Path | None = None) -> Target:
    return Target("lab" if lab_dir else "deployment", base_url, lab_dir=lab_dir)


def test_desired_chains_nginx_to_the_add_on_to_the_app_on_the_ports_asked(tmp_path: Path):
    p = _params(tmp_path, listen_port=18080, proxy_port=18081, redis_port=18082, state_dir=str(tmp_path / "tier"))
    tier = cachetier.desired(_target(), p, NOTHING)
    assert tier.url == "http://127.0.0.1:18080"
    assert tier.nginx.upstreams == ("127.0.0.1:18081",)  # nginx talks to the add-on, not to the app
    assert tier.proxy_url == "http://127.0.0.1:18081"
    assert tier.proxy.upstream == APP  # the add-on talks to the app
    assert tier.redis.port == 18082 and tier.proxy.redis_url == "redis://127.0.0.1:18082/0"
    base = tmp_path / "tier"
    assert (tier.redis.state_dir, tier.proxy.state_dir, tier.nginx.state_dir) == (
        base / "redis",
        base / "proxy",
        base / "nginx",
    )
    assert not tier.nginx.cache_lock  # the add-on coalesces misses; nginx's lock would add its 500 ms poll
    assert tier.nginx.ttl_s == tier.proxy.ttl_s == p.cache.ttl_s


def test_ports_of_zero_become_free_distinct_ports(tmp_path: Path):
    tier = cachetier.desired(_target(), _params(tmp_path, state_dir=str(tmp_path)), NOTHING)
    ports = {tier.nginx.listen_port, tier.proxy.listen_port, tier.redis.port}
    assert len(ports) == 3 and all(1 <= port <= 65535 for port in ports)


def test_ports_of_zero_keep_the_running_parts_ports(tmp_path: Path):
    p = _params(tmp_path, listen_port=18080, proxy_port=18081, redis_port=18082, state_dir=str(tmp_path))
    first = cachetier.desired(_target(), p, NOTHING)
    again = cachetier.desired(_target(), _params(tmp_path, state_dir=str(tmp_path)), Running(*_parts(first)))
    assert (again.nginx.listen_port, again.proxy.listen_port, again.redis.port) == (18080, 18081, 18082)
    assert cachetier.plan(Running(*_parts(first)), again) == []  # the same tier running: nothing to do


def _parts(tier: cachetier.Tier) -> tuple:
    return tier.redis, tier.proxy, tier.nginx


def test_the_lab_keeps_the_tier_in_its_own_directory(tmp_path: Path):
    tier = cachetier.desired(_target(lab_dir=tmp_path / "lab"), _params(tmp_path), NOTHING)
    assert tier.redis.state_dir == tmp_path / "lab" / "cache" / "redis"
    assert cachetier.state_dir(_target(), _params(tmp_path)) == Path.home() / ".local/state/ragperf/cache"


def test_plan_starts_redis_then_the_add_on_then_nginx(tmp_path: Path):
    tier = cachetier.desired(_target(), _params(tmp_path, state_dir=str(tmp_path)), NOTHING)
    changes = cachetier.plan(NOTHING, tier)
    assert [c.kind for c in changes] == ["redis", "cacheproxy", "nginx"]
    assert all(c.before is None for c in changes)  # nothing ran: each change starts its part
    assert not any((tmp_path / part).exists() for part in ("redis", "proxy", "nginx"))  # planning only


def test_plan_changes_only_the_part_that_differs(tmp_path: Path):
    p = _params(tmp_path, listen_port=18080, proxy_port=18081, redis_port=18082, state_dir=str(tmp_path))
    now = cachetier.desired(_target(), p, NOTHING)
    wider = cachetier.desired(
        _target(), _params(tmp_path, **_ports(), nginx_cache_mb=512, state_dir=str(tmp_path)), NOTHING
    )
    assert [c.kind for c in cachetier.plan(Running(*_parts(now)), wider)] == ["nginx"]


def _ports() -> dict:
    return {"listen_port": 18080, "proxy_port": 18081, "redis_port": 18082}


def test_an_https_upstream_is_refused_naming_what_is_allowed(tmp_path: Path):
    with pytest.raises(ValueError, match=r"upstream: .*https://app.example:443.* is not a base URL http://host:port"):
        cachetier.desired(_target("https://app.example:443"), _params(tmp_path, state_dir=str(tmp_path)), NOTHING)


def test_the_table_shows_each_part_and_what_it_talks_to(tmp_path: Path):
    tier = cachetier.desired(_target(), _params(tmp_path, **_ports(), state_dir=str(tmp_path)), NOTHING)
    table = tier.table().set_index("part")
    assert list(table.index) == ["nginx", "cache add-on", "Redis"]
    assert table.loc["nginx", "talks to"] == "127.0.0.1:18081"
    assert table.loc["cache add-on", "talks to"] == f"{APP}, Redis"


def test_counter_deltas_and_the_requests_that_reached_the_app():
    before = {"hits": 3, "misses": 2, "bypassed": 0, "passthrough": 1}
    after = {"hits": 10, "misses": 5, "bypassed": 2, "passthrough": 1, "coalesced": 4}
    delta = cachetier.delta(after, before)
    assert delta == {"hits": 7, "misses": 3, "bypassed": 2, "passthrough": 0, "coalesced": 4}
    assert cachetier.app_requests(delta) == 5  # hits and coalesced waiters never reached the app
    assert not NOTHING.any()
