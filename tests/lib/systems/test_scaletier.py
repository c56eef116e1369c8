"""Phase 4's tier as planned: instances, PgBouncer, the balancer and the add-on's new upstream, on the lab and on a
deployment of several hosts; the secrets' files. Pure: nothing is started here (the end-to-end run starts it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ragperf.core.params import Params
from ragperf.core.target import Target
from ragperf.systems import cacheproxy, cachetier, scaletier

APP = scaletier.App((sys.executable, "-m", "uvicorn", "app:app", "--port", "{port}"), (("COLLECTION_NAME", "c"),))
DB = scaletier.Database("127.0.0.1", 5432, "rag", "sakana")


def _params(tmp_path: Path, **scale) -> Params:
    return Params.model_validate({"scale": {"state_dir": str(tmp_path / "scale"), "instance_port": 18001,
                                            "balancer_port": 18100, "pgbouncer_port": 16432, **scale}})  # fmt: skip


def _cache(tmp_path: Path) -> cachetier.Running:
    proxy = cacheproxy.ProxyConfig(listen_port=18200, upstream="http://127.0.0.1:8000", redis_url="redis://127.0.0.1:6390",
                                   state_dir=tmp_path / "cache" / "proxy")  # fmt: skip
    return cachetier.Running(None, proxy, None)


def _nothing() -> scaletier.Running:
    return scaletier.Running(None, None, None)


def test_the_lab_gets_instances_behind_the_balancer_through_pgbouncer_and_the_add_on_points_at_it(tmp_path):
    tier = scaletier.desired(Target("lab", "http://127.0.0.1:8000"), _params(tmp_path), APP, DB, _cache(tmp_path),
                             now=_nothing())  # fmt: skip
    assert [p.port for p in tier.instances.programs] == [18001, 18002, 18003]
    assert tier.balancer.upstreams == ("127.0.0.1:18001", "127.0.0.1:18002", "127.0.0.1:18003")
    assert not tier.balancer.cache_enabled and tier.balancer.next_upstream_tries == 3
    env = dict(tier.instances.programs[0].env)
    assert env["DATABASE_URL"].startswith("host=127.0.0.1 port=16432 dbname=rag user=sakana passfile=")
    assert "password" not in env["DATABASE_URL"] and env["COLLECTION_NAME"] == "c"
    assert tier.instances.programs[0].argv[-1] == "18001"
    assert tier.instances.programs[0].secret_files == (str(tier.secrets_dir / scaletier.PASSFILE),)
    assert tier.proxy.upstream == tier.url == "http://127.0.0.1:18100"
    planned = scaletier.plan(_nothing(), tier, _cache(tmp_path).proxy)
    assert [c.key for c in planned] == ["pgbouncer:pooler", "supervisor:instances", "nginx:balancer",
                                        "cacheproxy:cache"]  # fmt: skip
    assert "upstream http://127.0.0.1:8000 -> http://127.0.0.1:18100" in planned[-1].reason


def test_the_curve_balances_a_few_of_the_instances_and_goes_direct_without_stopping_pgbouncer(tmp_path):
    lab = Target("lab", "http://127.0.0.1:8000")
    tier = scaletier.desired(lab, _params(tmp_path), APP, DB, _cache(tmp_path), instances=4, balanced=1, pooled=False,
                             now=_nothing())  # fmt: skip
    assert len(tier.instances.programs) == 4 and tier.balancer.upstreams == ("127.0.0.1:18001",)
    assert tier.balancer.next_upstream_tries == 1
    assert "port=5432" in dict(tier.instances.programs[0].env)["DATABASE_URL"] and not tier.pooled
    assert tier.pgbouncer.listen_port == 16432  # still there, idle


def test_a_deployment_of_several_hosts_gets_each_hosts_supervisord_and_only_the_balancer_here(tmp_path):
    addresses = ["10.0.0.5:8000", "10.0.0.5:8001", "10.0.0.6:8000"]
    params = _params(tmp_path, instance_addresses=addresses, app_command="/srv/bin/uvicorn app:app --port {port}")
    app = scaletier.app_of_command(params.scale.app_command)
    tier = scaletier.desired(Target("deployment", "http://10.0.0.5:8000"), params, app, DB,
                             cachetier.Running(None, None, None), now=_nothing())  # fmt: skip
    assert tier.remote and tier.instances is None and tier.proxy is None
    assert tier.balancer.upstreams == tuple(addresses)
    assert {h: [p.port for p in c.programs] for h, c in tier.hosts.items()} == {"10.0.0.5": [8000, 8001],
                                                                                 "10.0.0.6": [8000]}  # fmt: skip
    assert tier.hosts["10.0.0.5"].programs[1].argv == ("/srv/bin/uvicorn", "app:app", "--port", "8001")
    assert [c.key for c in scaletier.plan(_nothing(), tier, None)] == ["nginx:balancer"]


def test_the_secrets_are_written_0600_in_a_0700_directory_and_pgbouncer_gets_the_verifier_only(tmp_path):
    tier = scaletier.desired(Target("lab", "http://127.0.0.1:8000"), _params(tmp_path), APP, DB, _cache(tmp_path),
                             now=_nothing())  # fmt: skip
    key = "c3RvcmVka2V5c3RvcmVka2V5c3RvcmVka2V5c3RvcmVkaz0="
    verifier = f"SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0${key}:{key}"
    written = scaletier.write_secrets(tier, password="pa:ss\\word", verifier=verifier, api_key="sk-test")
    assert {p.name for p in written} == {scaletier.PASSFILE, scaletier.API_KEY_FILE, "userlist.txt"}
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in written)
    assert tier.secrets_dir.stat().st_mode & 0o777 == 0o700
    assert (tier.secrets_dir / scaletier.PASSFILE).read_text() == "*:*:*:sakana:pa\\:ss\\\\word\n"
    assert "pa:ss" not in (tier.pgbouncer.state_dir / "userlist.txt").read_text()


def test_stop_all_of_a_tier_that_never_ran_stops_nothing_and_removes_its_secrets(tmp_path):
    base = tmp_path / "scale"
    (base / "secrets").mkdir(parents=True)
    (base / "secrets" / "pgpass").write_text("x")
    assert scaletier.stop_all(base) == [] and not (base / "secrets").exists()
    assert not any(part["running"] for part in scaletier.status(base).values())


@pytest.mark.parametrize("addresses", [["10.0.0.5"], ["10.0.0.5:0"], [":8000"]])
def test_instance_addresses_must_be_host_and_port(tmp_path, addresses):
    with pytest.raises(ValueError, match="scale.instance_addresses"):
        _params(tmp_path, instance_addresses=addresses)
