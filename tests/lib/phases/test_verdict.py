"""The plan's final verdict from each phase's metrics and requests: tables, criteria, impacts, misses, words (the
tables are ``ragperf.measure.verdicts``'; the verdict, which reads runs, is ``ragperf.phases.verdict``)."""

from __future__ import annotations

import pandas as pd

from ragperf.measure import verdicts
from ragperf.phases import verdict


def _metrics(p95_10: float, success_10: float, users: float) -> dict:
    return {
        "response_time_10_users": {"value": p95_10, "unit": "s"},
        "success_rate_10_users": {"value": success_10, "unit": "%"},
        "max_concurrent_users": {"value": users, "unit": "users"},
        "response_time_5_users": {"value": p95_10 / 2, "unit": "s"},
    }


def _records(latencies: list[float], statuses: list[str], ok: list[bool] | None = None) -> pd.DataFrame:
    n = len(latencies)
    return pd.DataFrame({
        "scenario": [verdicts.FIXED_SCENARIO] * n, "step": ["users=10"] * n, "users_target": [10] * n,
        "start": [1000.0 + i for i in range(n)], "latency_s": latencies, "ok": ok or [True] * n,
        "cache_status": statuses, "shared_cache_status": ["MISS" if s == "MISS" else "" for s in statuses],
    })  # fmt: skip


def _found() -> verdicts.Found:
    return {
        "phase0": (_metrics(9.0, 40.0, 5), None, "r:phase0"),
        "phase1": (_metrics(1.2, 99.0, 40), None, "r:phase1"),
        "phase4": (_metrics(0.3, 100.0, 150), _records([0.05] * 8 + [2.0, 2.2], ["HIT"] * 8 + ["MISS"] * 2),
                   "r:phase4"),
    }  # fmt: skip


def test_the_metrics_table_sets_every_phase_beside_the_plans_final_targets():
    table = verdicts.metrics_table(_found()).set_index("metric")
    p95 = table.loc["Response time (p95) at 10 users"]
    assert p95["phase0"] == 9.0 and p95["phase4"] == 0.3 and p95["plan's target"] == "< 1.5 s" and p95["met"] == "met"
    assert table.loc["Cache speed-up (second ask vs first)", "plan's target"] == "—"
    worse = _found()
    worse["phase4"] = (_metrics(2.0, 100.0, 150), None, "r:phase4")
    assert verdicts.metrics_table(worse).set_index("metric").loc["Response time (p95) at 10 users", "met"] == "not met"


def test_each_phase_is_judged_on_its_own_criteria_and_phase0_on_none():
    summary = verdicts.criteria_summary(_found()).set_index("phase")
    assert "phase0" not in summary.index
    assert summary.loc["phase1", "verdict"] == "met" and summary.loc["phase1", "met"] == "3 of 3"
    assert summary.loc["phase4", "verdict"] == "met"


def test_misses_are_judged_apart_so_a_warm_cache_cannot_pass_for_capacity():
    misses = verdicts.misses_table(_found())
    row = misses.set_index("phase").loc["phase4"]
    assert row["missed_pct"] == 20.0 and row["p95_s"] < 2.2 and row["misses_p95_s"] > 2.0
    assert not row["misses_meet_final_target"]
    final = verdict.final(_found(), pd.DataFrame([{"expected (PLAN.md)": "x", "measured": "y", "met": "met"}]), misses)
    assert final["all_targets_met"]
    text = verdict.text(final)
    assert "final target is met" in text and "the target rests on the caches" in text


def test_expected_impacts_need_the_failover_and_the_spread_to_be_met():
    good = verdict.expected_impact(
        baseline_users=40, backend_users=60, stack_users=200,
        failover={"success_rate": 100.0, "instances": 3, "recovered_s": 2.5, "requests_retried": 4,
                  "rolling_failed": 0},
        spread={"127.0.0.1:1": 100, "127.0.0.1:2": 90, "127.0.0.1:3": 95},
    )  # fmt: skip
    assert list(good["met"]) == ["met"] * 4
    bad = verdict.expected_impact(baseline_users=None, backend_users=None, stack_users=120,
                                  failover={"success_rate": 99.5, "instances": 3, "recovered_s": 2.5,
                                            "requests_retried": 0, "rolling_failed": 2},
                                  spread={"127.0.0.1:1": 100, "127.0.0.1:2": 10})  # fmt: skip
    assert list(bad["met"]) == ["not met", "met", "not met", "not met"]
    assert list(verdict.expected_impact(baseline_users=None, backend_users=None, stack_users=None, failover=None,
                                        spread=None)["measured"]).count("not measured") == 4  # fmt: skip


def test_capacity_before_is_the_newest_earlier_phase():
    assert verdict.capacity_before(_found()) == 40
    assert verdict.capacity_before({"phase4": _found()["phase4"]}) is None
