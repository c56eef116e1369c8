"""Phase 3's judgement from what was measured: the drill's alert times, the monitoring's cost, the expected impact.

The phase itself runs end to end on the lab in tests/test_phases.py; these pin down what its numbers mean.
"""

from __future__ import annotations

import pandas as pd
import pytest

from ragperf.measure.loadgen import LoadResult
from ragperf.phases import phase3
from ragperf.systems.monitoring import prometheus
from ragperf.systems.postgres import pgmonitor

T0 = 1_000_000.0


def records(start: float, latencies: list[float], ok: bool = True, cache: str = "HIT") -> pd.DataFrame:
    n = len(latencies)
    return pd.DataFrame({"start": [start + i * 0.1 for i in range(n)], "latency_s": latencies, "ok": [ok] * n,
                         "status": [200 if ok else 500] * n, "cache_status": [cache] * n,
                         "shared_cache_status": [""] * n, "failure_class": [None if ok else "http_5xx"] * n,
                         "scenario": ["s"] * n, "step": ["users=10"] * n})  # fmt: skip


def result(frame: pd.DataFrame, scenario: str = "drill", duration: float = 10.0) -> LoadResult:
    return LoadResult(frame, pd.DataFrame(), "", 0, duration, 10, scenario, "users=10")


def timeline(rows: list[tuple[float, str | None, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"t": T0 + t, "alertname": a, "state": s, "severity": "page" if a else None, "sli": "entry"
                          if a else None} for t, a, s in rows])  # fmt: skip


def test_the_drill_times_the_slo_alert_from_the_fault_and_from_the_recovery():
    polls = [(t, None, "poll") for t in range(0, 60, 2)]
    alert = [(t, "SLOLatencyBudgetBurn", "pending") for t in (6, 8)] + [
        (t, "SLOLatencyBudgetBurn", "firing") for t in range(10, 40, 2)
    ]
    labels = {"alertname": "SLOLatencyBudgetBurn", "severity": "page", "sli": "entry"}
    sent = pd.DataFrame({"alertname": ["SLOLatencyBudgetBurn"] * 3, "status": ["firing", "resolved", "firing"],
                         "labels": [labels, labels, {**labels, "sli": "probe"}]})  # fmt: skip
    drill = phase3.Drill("llm", result(records(T0 - 5, [0.01] * 300, ok=False)), T0, T0 + 30,
                         timeline(polls + alert), sent)  # fmt: skip
    times = drill.alert_times().set_index("alertname").loc["SLOLatencyBudgetBurn"]
    assert (times["pending_s"], times["firing_s"], times["resolved_after_recovery_s"]) == (6.0, 10.0, 10.0)
    summary = drill.summary()
    assert summary["slo_alert"] == "SLOLatencyBudgetBurn" and summary["notified_resolved"]
    assert summary["success_rate_during_fault"] == 0.0 and "fired 10 s after the fault began" in drill.text()


def test_a_drill_whose_slo_alert_never_fired_says_so():
    polls = timeline([(t, None, "poll") for t in range(0, 20, 2)] + [(4, "CacheHitRatioCollapsed", "firing")])
    drill = phase3.Drill("postgres", result(records(T0, [0.5] * 10)), T0, T0 + 10, polls, pd.DataFrame(
        columns=["alertname", "status", "labels"]))  # fmt: skip
    assert drill.slo_alert() is None and "no SLO alert fired" in drill.text()
    assert drill.summary()["alerts_that_fired"] == ["CacheHitRatioCollapsed"]


def test_the_cost_is_noise_when_both_states_measure_alike_and_slower_when_they_do_not():
    same = [0.2 + 0.01 * (i % 7) for i in range(400)]
    slower = [x + 0.3 for x in same]
    cost = phase3.Cost([("hits", "off", result(records(T0, same))), ("hits", "on", result(records(T0, same))),
                        ("misses", "off", result(records(T0, same, cache="MISS"))),
                        ("misses", "on", result(records(T0, slower, cache="MISS")))], pd.DataFrame())  # fmt: skip
    hits, misses = cost.difference("hits"), cost.difference("misses")
    assert hits["p95_verdict"] == "noise" and hits["throughput_ratio"] == pytest.approx(1.0)
    assert misses["p95_verdict"] == "slower" and misses["p95_change_pct"] > 0
    table = cost.table()
    assert table.loc[("hits", "with monitoring"), "answered by a cache %"] == 100.0
    assert table.loc[("misses", "with monitoring"), "answered by a cache %"] == 0.0
    assert not cost.negligible() and "on misses" in cost.text() and "slower" in cost.text()
    alike = phase3.Cost([r for r in cost.results if r[0] == "hits"], pd.DataFrame())
    assert alike.negligible()
    assert phase3.Cost([], pd.DataFrame()).difference() == {} and not phase3.Cost([], pd.DataFrame()).negligible()


def test_the_cost_says_so_when_no_request_was_answered_without_the_monitoring():
    same = [0.2 + 0.01 * (i % 7) for i in range(50)]
    cost = phase3.Cost([("misses", "off", result(records(T0, same, ok=False))),
                        ("misses", "on", result(records(T0, same)))], pd.DataFrame())  # fmt: skip
    assert cost.difference("misses")["throughput_ratio"] is None
    assert "throughput could not be compared (no answer without the monitoring)" in cost.text()


def test_expected_impact_is_met_only_with_data_in_every_panel_and_an_alert_proven_end_to_end():
    coverage = pd.DataFrame({"dashboard": ["service", "node"], "panel": ["a", "b"], "points": [3, 0],
                             "has data": [True, False]})  # fmt: skip
    passed = prometheus.PromtoolResult(True, "SUCCESS")
    impact = phase3.expected_impact(coverage, None, passed, None, 24).set_index("expected (PLAN.md)")["met"]
    assert impact["Real-time performance visibility"] == "not met" and impact["Automated alerting"] == "not met"
    assert impact["Performance trend tracking"] == "met"
    full = coverage.assign(**{"has data": True})
    impact = phase3.expected_impact(full, None, passed, None, 24).set_index("expected (PLAN.md)")["met"]
    assert impact["Real-time performance visibility"] == "met"


def test_statements_delta_is_what_each_statement_did_between_two_readings():
    start = [{"queryid": "1", "query": "SELECT a", "calls": 10, "total_ms": 100.0, "rows": 10, "stats_reset": "r"}]
    end = [
        {**start[0], "calls": 15, "total_ms": 130.0, "rows": 16},
        {"queryid": "2", "query": "SELECT b", "calls": 2, "total_ms": 4.0, "rows": 0, "stats_reset": "r"},
    ]
    delta = {d["queryid"]: d for d in pgmonitor.statements_delta(start, end)}
    assert (delta["1"]["calls"], delta["1"]["total_ms"], delta["1"]["rows"]) == (5, 30.0, 6) and delta["2"][
        "calls"
    ] == 2
    reset = [{**e, "stats_reset": "later"} for e in end]
    assert pgmonitor.statements_delta(start, reset)[0]["calls"] == 15  # a reset in between: the later reading alone
