"""Scenario logic without a server: ``run_load`` is replaced by a model of a service that slows with users."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ragperf.core import params
from ragperf.measure import scenarios
from ragperf.measure.loadgen import LoadResult
from ragperf.measure.loadgen.engine import records_frame
from ragperf.measure.workload import WorkItem

ITEMS = [WorkItem(f"câu hỏi số {i}", "fast", i) for i in range(50)]


def _fake_service(latency_per_user: float, calls: list[dict]):
    """A run_load stand-in: each user makes 10 requests of latency ``users * latency_per_user``."""

    def run_load(base_url, items, *, users, duration_s, out_dir, scenario, step, cycle=True, **kwargs):
        calls.append({"users": users, "duration_s": duration_s, "scenario": scenario, "step": step,
                      "cycle": cycle, "items": list(items), **kwargs})  # fmt: skip
        count = len(items) if not cycle else users * 10
        rows = [
            {"scenario": scenario, "step": step, "users_target": users, "worker": "local", "start": 1000.0 + i,
             "latency_s": users * latency_per_user, "status": 200, "ok": True, "error": "", "response_bytes": 100,
             "cache_status": "", "active_users": users, "question_id": items[i % len(items)].id,
             "mode": items[i % len(items)].mode}
            for i in range(count)
        ]  # fmt: skip
        return LoadResult(records_frame(rows), pd.DataFrame(), "", 0, float(count), users, scenario, step)

    return run_load


@pytest.fixture
def p() -> params.Params:
    return params.load("smoke", "lab")


def test_the_ladder_stops_at_the_first_step_that_breaks_the_slo(monkeypatch, p, tmp_path: Path):
    calls: list[dict] = []
    monkeypatch.setattr(scenarios, "run_load", _fake_service(0.3, calls))  # p95 = 0.3 s x users; SLO p95 < 5 s
    ladder = scenarios.step_ladder("http://x", ITEMS, p, tmp_path)
    assert [c["users"] for c in calls] == [5, 10, 25]  # 25 users -> 7.5 s breaks; 40 never runs
    assert ladder.max_concurrent_users == 10
    assert ladder.breaking_step == "users=25"


def test_a_ladder_where_every_step_holds_reports_the_top_step(monkeypatch, p, tmp_path: Path):
    monkeypatch.setattr(scenarios, "run_load", _fake_service(0.01, []))
    ladder = scenarios.step_ladder("http://x", ITEMS, p, tmp_path)
    assert (ladder.max_concurrent_users, ladder.breaking_step) == (p.load.ladder_users[-1], None)


def test_a_first_step_that_breaks_gives_zero_users(monkeypatch, p, tmp_path: Path):
    monkeypatch.setattr(scenarios, "run_load", _fake_service(2.0, []))
    assert scenarios.step_ladder("http://x", ITEMS, p, tmp_path).max_concurrent_users == 0


def test_query_latency_asks_the_set_once_in_order_within_the_limit(monkeypatch, p, tmp_path: Path):
    calls: list[dict] = []
    monkeypatch.setattr(scenarios, "run_load", _fake_service(0.1, calls))
    scenarios.query_latency_test("http://x", ITEMS, p, tmp_path)
    (call,) = calls
    assert call["users"] == 1 and call["cycle"] is False
    assert call["items"] == ITEMS[: p.load.query_latency_questions]
    assert call["duration_s"] == p.load.query_latency_time_limit_s
    assert call["timeout_s"] == p.load.timeout_s


def test_fixed_concurrency_runs_each_user_level_for_the_set_duration(monkeypatch, p, tmp_path: Path):
    calls: list[dict] = []
    monkeypatch.setattr(scenarios, "run_load", _fake_service(0.1, calls))
    results = scenarios.fixed_concurrency("http://x", ITEMS, p, tmp_path)
    assert [(c["users"], c["duration_s"]) for c in calls] == [(u, p.load.fixed_duration_s) for u in p.load.fixed_users]
    assert [r.step for r in results] == [f"users={u}" for u in p.load.fixed_users]


def test_cache_speedup_asks_the_same_questions_twice_and_labels_the_asks(monkeypatch, p, tmp_path: Path):
    calls: list[dict] = []
    monkeypatch.setattr(scenarios, "run_load", _fake_service(0.1, calls))
    result = scenarios.cache_speedup("http://x", ITEMS, p, tmp_path)
    n = p.load.cache_speedup_questions
    assert calls[0]["items"] == ITEMS[:n] + ITEMS[:n]
    assert result.records["ask"].tolist() == ["first"] * n + ["second"] * n


def test_all_records_concatenates_single_results_and_lists(monkeypatch, p, tmp_path: Path):
    monkeypatch.setattr(scenarios, "run_load", _fake_service(0.1, []))
    one = scenarios.query_latency_test("http://x", ITEMS, p, tmp_path)
    several = scenarios.fixed_concurrency("http://x", ITEMS, p, tmp_path)
    assert len(scenarios.all_records(one, several)) == len(one.records) + sum(len(r.records) for r in several)
    assert scenarios.all_records().empty
