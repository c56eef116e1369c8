"""Phase 2's caching tier on the smoke lab: started through the change model, checked under load, rolled back.

The tier (nginx → cache add-on → app, with Redis) runs from a state directory of this module's own; the
legacy app is the lab's.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml

from ragperf.core import changes, procs
from ragperf.core.params import Params
from ragperf.measure import metrics
from ragperf.phases import phase, phase2
from ragperf.systems import cacheproxy, cachetier, nginx, rediscache, tuning

pytestmark = pytest.mark.lab
QUICK = Path(__file__).resolve().parents[2] / "params" / "quick.yaml"


@pytest.fixture(scope="module")
def ctx(lab_up, lab_dir, tmp_path_factory) -> Iterator[phase.PhaseContext]:
    base = tmp_path_factory.mktemp("phase2")
    params = base / "tier.yaml"
    # in the lab's directory: nginx's unprivileged workers must reach it (pytest's own are private)
    tier_dir = lab_dir / "test-phase2-tier"
    params.write_text(yaml.safe_dump({"cache": {"state_dir": str(tier_dir), "workload_users": 5}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGPERF_LAB_DIR", str(lab_dir))
        mp.setenv("RAGPERF_OUTPUTS", str(base / "outputs"))
        yield phase.begin("phase2", params_files=[str(QUICK), str(params)])


@pytest.fixture(scope="module")
def applied(ctx) -> Iterator[tuple[cachetier.Tier, dict, changes.Journal]]:
    """The tier started as the notebook starts it; stopped at the end whatever the tests did."""
    now = cachetier.running(cachetier.state_dir(ctx.target, ctx.params))
    assert not now.any()
    tier = cachetier.desired(ctx.target, ctx.params, now)
    kinds, journal = tuning.appliers(ctx.target, ctx.params), changes.Journal(ctx.out)
    changes.apply(changes.groups(cachetier.plan(now, tier), kinds), journal)
    yield tier, kinds, journal
    cachetier.stop_all(cachetier.state_dir(ctx.target, ctx.params))


def _questions(ctx, n: int) -> list[str]:
    return [item.question for item in ctx.workloads.spare[:n]]


def test_the_plan_is_three_parts_in_order_and_nothing_when_running(ctx, applied):
    tier, _, _ = applied
    now = cachetier.running(cachetier.state_dir(ctx.target, ctx.params))
    assert (now.redis, now.proxy, now.nginx) == (tier.redis, tier.proxy, tier.nginx)
    assert cachetier.plan(now, cachetier.desired(ctx.target, ctx.params, now)) == []
    fresh = cachetier.plan(cachetier.Running(None, None, None), tier)
    assert [c.kind for c in fresh] == ["redis", "cacheproxy", "nginx"]
    assert tier.nginx.upstreams == (f"127.0.0.1:{tier.proxy.listen_port}",)
    assert tier.proxy.upstream == ctx.target.base_url


def test_the_live_checks_pass(ctx, applied):
    tier, _, _ = applied
    table = phase2.checks(tier, _questions(ctx, 2))
    assert table["passed"].all(), table.to_string()


def test_concurrent_questions_never_get_each_others_answer_through_every_layer(ctx, applied):
    """20 questions, each asked 6 times in several spellings, by 30 threads at once, from empty caches."""
    tier, _, _ = applied
    questions = _questions(ctx, 22)[2:]
    with httpx.Client(base_url=ctx.target.base_url, timeout=60) as app:  # the app itself, no cache
        expected = {q: app.post("/ask", json={"question": q, "mode": "fast"}).json()["answer"] for q in questions}
    assert len(set(expected.values())) == len(questions)
    spellings = [lambda q: q, lambda q: unicodedata.normalize("NFD", q), lambda q: "  " + q.upper() + " "]
    asks = [(q, spell(q)) for q in questions for spell in spellings for _ in range(2)]
    random.Random(3).shuffle(asks)
    cachetier.purge(tier)
    before = cachetier.counters(tier)

    def ask(pair: tuple[str, str]) -> tuple[str, httpx.Response]:
        with httpx.Client(base_url=tier.url, timeout=60) as client:
            return pair[0], client.post("/ask", json={"question": pair[1], "mode": "fast"})

    with ThreadPoolExecutor(30) as pool:
        answers = list(pool.map(ask, asks))
    assert all(r.status_code == 200 for _, r in answers)
    wrong = [(q, r.json()["answer"][:60]) for q, r in answers if r.json()["answer"] != expected[q]]
    assert wrong == []
    delta = cachetier.delta(cachetier.counters(tier), before)
    # every spelling of a question shares one Redis entry: the app saw each question at most once
    assert cachetier.app_requests(delta) <= len(questions), delta
    served = {phase2._layer(r) for _, r in answers}
    assert served <= {"nginx", "redis", "coalesced", "app"} and "app" in served and served & set(metrics.CACHED)


def test_redis_stopped_in_the_middle_of_a_load_test(ctx, applied):
    tier, _, _ = applied
    outage = phase2.redis_outage(ctx, tier, users=5, duration_s=9)
    summary = outage.summary()
    assert summary["success_rate"] == 100.0 and summary["requests_while_down"] > 0, summary
    assert summary["bypassed (add-on counter)"] > 0 and summary["outages the add-on saw"] >= 1, summary
    assert summary["bypassed (X-Shared-Cache-Status)"] > 0, summary
    assert "went past the cache straight to the app" in outage.text()
    # Redis is back and caching resumes by itself
    question = _questions(ctx, 30)[-1]
    with httpx.Client(base_url=tier.proxy_url, timeout=60) as client:
        statuses = [client.post("/ask", json={"question": question}).headers["x-shared-cache-status"]
                    for _ in range(3)]  # fmt: skip
    assert statuses[-1] == "HIT", statuses


def test_purge_empties_both_caches(ctx, applied):
    tier, _, _ = applied
    question = _questions(ctx, 31)[-1]
    with httpx.Client(base_url=tier.url, timeout=60) as client:
        client.post("/ask", json={"question": question})
        assert phase2._layer(client.post("/ask", json={"question": question})) == "nginx"
        done = cachetier.purge(cachetier.running(tier.nginx.state_dir.parent))
        assert done["redis_keys_deleted"] >= 1 and done["nginx_key_version"] >= 2
        assert phase2._layer(client.post("/ask", json={"question": question})) == "app"


def test_rollback_leaves_nothing_running_and_the_app_serves_as_before(ctx, applied):
    tier, kinds, journal = applied
    base = tier.nginx.state_dir.parent
    started = [nginx.Nginx(base / "nginx").proc, cacheproxy.ProxyServer(base / "proxy").proc,
               rediscache.RedisServer(base / "redis").proc]  # fmt: skip
    assert all(p is not None and procs.is_alive(p) for p in started)
    undone = changes.rollback(journal, kinds)
    assert len(undone) == 3
    assert not cachetier.running(base).any() and not any(procs.is_alive(p) for p in started)
    for port in (tier.nginx.listen_port, tier.proxy.listen_port, tier.redis.port):
        assert procs.port_is_free(port), port
    response = httpx.post(f"{ctx.target.base_url}/ask", json={"question": _questions(ctx, 1)[0]}, timeout=60)
    assert response.status_code == 200 and "x-cache-status" not in response.headers
    assert changes.rollback(journal, kinds) == []


def test_a_deployment_gets_a_plan_in_front_of_its_url(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    target = phase.Target("deployment", "http://10.0.0.5:8000")
    params = Params.model_validate({"target": {"kind": "deployment", "base_url": target.base_url}})
    assert params.effective_mode() == "plan"
    tier = cachetier.desired(target, params)
    assert tier.nginx.state_dir == tmp_path / ".local" / "state" / "ragperf" / "cache" / "nginx"
    assert tier.proxy.upstream == "http://10.0.0.5:8000" and tier.redis.url.startswith("redis://127.0.0.1:")
    planned = cachetier.plan(cachetier.Running(None, None, None), tier)
    assert [c.kind for c in planned] == ["redis", "cacheproxy", "nginx"]
    assert not cachetier.running(tier.nginx.state_dir.parent).any()  # planning starts nothing
    with pytest.raises(ValueError, match="upstream"):
        cachetier.desired(phase.Target("deployment", "https://rag.example.org"), params)


def test_expected_impact_judges_hit_rate_on_a_workload_from_empty_caches():
    result = {"hit_rate": {"value": 99.9}, "cached_p95": {"value": 0.059}}
    rates = pd.DataFrame([
        {"workload": "zipf_low", "hit_rate": 42.4, "backend_load_reduction": 43.1},
        {"workload": "zipf_high", "hit_rate": 77.9, "backend_load_reduction": 79.3},
        {"workload": "replay", "hit_rate": 45.0, "backend_load_reduction": 44.0},
    ])  # fmt: skip
    table = phase2.expected_impact(result, rates)
    assert table["met"].tolist() == ["not met", "met", "not met"]  # the replay decides, not the cycled 99.9 %
    assert "replay, from empty caches" in table["measured"][0] and "cycled Phase 0/1 scenarios: 100 %" in table[
        "measured"][0]  # fmt: skip
    unmeasured = phase2.expected_impact({}, pd.DataFrame())
    assert unmeasured["met"].tolist() == ["not met"] * 3
