import json
import math

import numpy as np
import pandas as pd
import pytest

from ragperf.core import criteria
from ragperf.measure import metrics, verdicts
from ragperf.measure.metrics import Slo


def make_records(
    latencies,
    *,
    ok=None,
    errors=None,
    scenario="fixed",
    users=5,
    starts=None,
    cache_status=None,
    question_ids=None,
    **columns,
) -> pd.DataFrame:
    """Synthetic request records: one row per latency, 1 s apart unless ``starts`` is given."""
    n = len(latencies)
    errors = list(errors) if errors is not None else ["" if ok is None or ok[i] else "timeout" for i in range(n)]
    ok = list(ok) if ok is not None else [e == "" for e in errors]
    frame = pd.DataFrame({
        "scenario": scenario,
        "step": f"users={users}",
        "users_target": users,
        "worker": "w0",
        "start": 1_000.0 + (np.arange(n, dtype=float) if starts is None else np.asarray(starts, float)),
        "latency_s": np.asarray(latencies, float),
        "status": [200 if o else 0 for o in ok],
        "ok": ok,
        "error": errors,
        "response_bytes": 100,
        "cache_status": cache_status if cache_status is not None else "",
        "active_users": users,
        "question_id": question_ids if question_ids is not None else np.arange(n),
        "mode": "fast",
    })  # fmt: skip
    for name, values in columns.items():
        frame[name] = values
    return frame


def test_percentiles_are_exact_over_all_requests():
    s = metrics.summarize(make_records(np.arange(1, 101)))
    assert s["count"] == 100 and s["ok_count"] == 100 and s["success_rate"] == 100.0
    assert s["p50"] == pytest.approx(50.5)
    assert s["p95"] == pytest.approx(95.05)  # numpy linear: 95 + 0.05 * (96 - 95)
    assert s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5) and s["max"] == 100.0


def test_failures_count_in_latency_success_rate_and_classes():
    latencies = [1.0] * 7 + [30.0, 30.0, 0.1]
    errors = [""] * 7 + ["timeout", "timeout", "http_5xx"]
    s = metrics.summarize(make_records(latencies, errors=errors))
    assert s["success_rate"] == pytest.approx(70.0)
    assert s["failures"] == 3
    assert s["failures_by_class"]["timeout"] == 2 and s["failures_by_class"]["http_5xx"] == 1
    assert sum(s["failures_by_class"].values()) == 3
    assert s["p95"] == pytest.approx(30.0)  # the timeouts dominate the tail of all requests
    assert s["p95_ok"] == pytest.approx(1.0)


def test_throughput_is_ok_requests_over_the_wall_span():
    # starts 0..9 s, each 1 s long: the span is 10 s; 7 of 10 are OK.
    s = metrics.summarize(make_records([1.0] * 10, errors=[""] * 7 + ["timeout"] * 3))
    assert s["wall_s"] == pytest.approx(10.0)
    assert s["throughput_rps"] == pytest.approx(0.7)
    assert s["request_rps"] == pytest.approx(1.0)


def test_hit_rate_only_counts_requests_with_a_cache_status():
    s = metrics.summarize(make_records([1, 1, 1, 1], cache_status=["HIT", "MISS", "hit", ""]))
    assert s["hit_rate"] == pytest.approx(100 * 2 / 3)
    assert metrics.summarize(make_records([1, 1]))["hit_rate"] is None


def test_empty_records_summarize_to_nan_and_never_hold():
    s = metrics.summarize(make_records([]))
    assert s["count"] == 0 and math.isnan(s["p95"]) and math.isnan(s["success_rate"])
    assert not metrics.holds(s, Slo(5.0, 70.0))


def test_summarize_steps_one_row_per_step_ordered_by_users():
    records = pd.concat(
        [make_records([2.0] * 4, users=10), make_records([1.0] * 4, users=5, errors=["", "", "", "bad_body"])]
    )
    steps = metrics.summarize_steps(records)
    assert list(steps["users_target"]) == [5, 10]
    assert list(steps["step"]) == ["users=5", "users=10"]
    assert list(steps["success_rate"]) == [75.0, 100.0]
    assert list(steps["failures_bad_body"]) == [1, 0]


def test_holds_is_strict_on_latency_and_inclusive_on_success_rate():
    slo = Slo(p95_s=5.0, success_rate_pct=70.0)
    assert metrics.holds({"count": 10, "p95": 4.99, "success_rate": 70.0}, slo)
    assert not metrics.holds({"count": 10, "p95": 5.0, "success_rate": 99.0}, slo)
    assert not metrics.holds({"count": 10, "p95": 1.0, "success_rate": 69.9}, slo)


def _ladder_steps(p95s, rates, users=(5, 10, 25, 40)):
    return pd.DataFrame({
        "scenario": "ladder", "step": [f"users={u}" for u in users], "users_target": list(users), "count": 100,
        "p95": p95s, "success_rate": rates,
    })  # fmt: skip


def test_ladder_verdict_is_the_last_step_before_the_first_break():
    slo = Slo(5.0, 70.0)
    # users=25 breaks the p95; users=40 holding afterwards does not count.
    assert metrics.ladder_verdict(_ladder_steps([1, 2, 6, 1], [100] * 4), slo) == (10, "users=25")
    assert metrics.ladder_verdict(_ladder_steps([1, 2, 3, 4], [100, 90, 80, 71]), slo) == (40, None)
    assert metrics.ladder_verdict(_ladder_steps([1, 2, 3, 4], [50, 90, 90, 90]), slo) == (0, "users=5")
    with pytest.raises(ValueError, match="users_target"):
        metrics.ladder_verdict(_ladder_steps([1, 1], [100, 100], users=(5, 5)), slo)


def test_metric_lookup_names_the_known_keys():
    assert metrics.metric("p95").unit == "s" and metrics.metric("p95").lower_is_better
    assert not metrics.metric("max_concurrent_users").lower_is_better
    with pytest.raises(KeyError, match="response_time_10_users"):
        metrics.metric("p96")
    assert set(metrics.USERS_KEYS) <= set(metrics.REGISTRY)
    assert all(m.unit in metrics.UNITS for m in metrics.REGISTRY.values())


def _phase_inputs():
    # Query latency: 10 planned, 8 asked, 1 failed, the last one finished after the 10 s limit.
    ql = make_records([1.0] * 7 + [2.0], errors=[""] * 6 + ["timeout", ""], scenario="query_latency_test", users=1)
    ql.loc[7, "start"] = 1_009.0  # finishes at 11 s
    fixed = pd.concat([
        make_records(np.arange(1, 21) / 10, users=5),  # p95 = 1.905
        make_records(np.arange(1, 21) / 5, users=10, errors=[""] * 15 + ["timeout"] * 5),
    ])  # fmt: skip
    ladder = pd.concat([
        make_records([1.0] * 10, scenario="ladder", users=5),
        make_records([2.0] * 10, scenario="ladder", users=10),
        make_records([9.0] * 10, scenario="ladder", users=25),
    ])  # fmt: skip
    ask = ["first"] * 4 + ["second"] * 4
    cache = make_records([4, 6, 8, 5, 1, 2, 2, 0.1], errors=[""] * 7 + ["http_5xx"], scenario="cache_speedup",
                         users=1, question_ids=[0, 1, 2, 3] * 2, ask=ask,
                         cache_status=["MISS"] * 4 + ["HIT", "HIT", "MISS", "MISS"])  # fmt: skip
    return {"query_latency": ql, "questions_total": 10, "time_limit_s": 10.0, "fixed": fixed, "ladder": ladder,
            "slo": Slo(5.0, 70.0), "cache": cache, "phase": "phase1"}  # fmt: skip


def test_phase_metrics_gives_the_users_keys_as_numbers_with_units():
    m = metrics.phase_metrics(**_phase_inputs())
    v = {key: metrics.value_of(m, key) for key in metrics.REGISTRY}
    assert v["query_latency_test"] == pytest.approx(60.0)  # 6 OK in time of 10 planned
    assert v["query_latency_completed"] == 6
    assert v["success_rate_5_users"] == 100.0 and v["success_rate_10_users"] == 75.0
    assert v["response_time_5_users"] == pytest.approx(1.905)
    assert v["response_time_10_users"] == pytest.approx(3.81)
    assert v["cache_speedup"] == pytest.approx(3.0)  # questions 0-2: medians 6 / 2; question 3 failed its 2nd ask
    assert v["cache_hit_rate"] == pytest.approx(50.0)
    assert v["max_concurrent_users"] == 10
    assert m["ladder"]["first_breaking_step"] == "users=25"
    assert m["success_rate_5_users"] == {"value": 100.0, "unit": "%"}
    assert m["sources"]["response_time_10_users"] == {"scenario": "fixed", "step": "users=10", "statistic": "p95"}
    steps = {(s["scenario"], s["step"]): s for s in m["steps"]}
    assert len(steps) == 1 + 2 + 3 + 1
    assert steps[("fixed", "users=10")]["failures_by_class"]["timeout"] == 5


def test_phase_metrics_without_scenarios_keeps_the_users_keys_unmeasured():
    m = metrics.phase_metrics()
    assert all(m[key] == {"value": None, "unit": metrics.metric(key).unit} for key in metrics.USERS_KEYS)
    with pytest.raises(ValueError, match="questions_total"):
        metrics.phase_metrics(query_latency=make_records([1.0]))
    with pytest.raises(KeyError, match="unknown metric"):
        metrics.phase_metrics(extra={"recal": 0.9})


def test_metrics_json_is_plain_and_round_trips(tmp_path):
    inputs = _phase_inputs()
    inputs["cache"] = inputs["cache"].assign(cache_status="")  # no cache status: hit rate null
    m = metrics.phase_metrics(**inputs, extra={"recall": np.float32(0.5)})
    path = metrics.write_metrics_json(tmp_path / "run" / "metrics.json", m)

    def no_nan(token):
        raise AssertionError(f"{token} in metrics.json")

    data = json.loads(path.read_text(), parse_constant=no_nan)
    assert data == metrics.read_metrics_json(path)
    assert data["cache_hit_rate"]["value"] is None and data["recall"]["value"] == 0.5
    assert type(data["max_concurrent_users"]["value"]) is float
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not a ragperf metrics file"):
        metrics.read_metrics_json(tmp_path / "other.json")


def test_users_baseline_holds_their_table_as_numbers():
    b = verdicts.USERS_BASELINE
    assert b["success_rate_5_users"].value == 26.7 and b["success_rate_10_users"].value == 36.7
    assert b["response_time_5_users"].value == 3.87 and b["response_time_10_users"].value == 9.62
    assert b["cache_speedup"].value == 1.24
    assert (b["max_concurrent_users"].low, b["max_concurrent_users"].high) == (5, 10)
    assert b["query_latency_test"].value is None and verdicts.USERS_QUERY_LATENCY_TIMEOUT_S == 600.0


def test_side_by_side_judges_by_each_metric_direction():
    ours = metrics.phase_metrics(**_phase_inputs())
    table = verdicts.side_by_side(ours).set_index("key")
    assert list(table.index) == list(metrics.USERS_KEYS)
    assert {"metric", "users' value", "ours", "unit"} <= set(table.columns)
    assert table.loc["response_time_10_users", "verdict"] == "better"  # 3.81 s < 9.62 s
    assert table.loc["success_rate_10_users", "verdict"] == "better"  # 75 % > 36.7 %
    assert table.loc["max_concurrent_users", "verdict"] == "within the users' range"  # 10 in 5..10
    assert table.loc["query_latency_test", "verdict"] == "users had no result"
    worse = dict(ours, response_time_5_users={"value": 4.0, "unit": "s"})
    assert verdicts.side_by_side(worse).set_index("key").loc["response_time_5_users", "verdict"] == "worse"


def test_criteria_table_reads_the_phase_targets():
    m = metrics.phase_metrics(**_phase_inputs())  # p95 at 10 users 3.81 s, 75 %, ladder held to 10
    t = verdicts.criteria_table(m, "phase1").set_index("unit")
    assert list(t["result"]) == ["pass", "pass", "fail"]  # capacity 10 < 25 users
    assert t.loc["users", "measured"] == 10 and "users=25" in t.loc["users", "note"]
    t2 = verdicts.criteria_table(m, "phase2")
    assert list(t2["result"]) == ["fail", "fail", "fail"]  # 3.81 s >= 3 s, 75 % < 85 %
    assert criteria.PHASE_CRITERIA["phase4"] == Slo(1.5, 95.0, 100)
    with pytest.raises(KeyError, match="phase1"):
        verdicts.criteria_table(m, "phase9")


def test_capacity_is_recomputed_under_the_phase_slo():
    m = metrics.phase_metrics(**_phase_inputs())
    # phase3 wants p95 < 2 s: the users=10 step (2.0 s) no longer holds, so capacity is 5.
    t = verdicts.criteria_table(m, "phase3").set_index("unit")
    assert t.loc["users", "measured"] == 5


def test_verdict_text_is_plain_english():
    m = metrics.phase_metrics(**_phase_inputs())
    text = verdicts.verdict_text(m, "phase1")
    assert text.startswith("Phase 1 meets 2 of the users' 3 success criteria.")
    assert "3.81 s" in text and "fail" in text
    assert metrics.format_value(26.7, "%") == "26.7 %" and metrics.format_value(1.24, "x") == "1.24x"


def test_served_by_reads_both_cache_layers():
    records = pd.DataFrame({
        "cache_status": ["HIT", "HIT", "MISS", "MISS", "BYPASS", "MISS", "", "", "EXPIRED"],
        "shared_cache_status": ["MISS", "", "HIT", "COALESCED", "HIT", "MISS", "BYPASS", "", "MISS"],
    })  # fmt: skip
    assert metrics.served_by(records).tolist() == ["nginx", "nginx", "redis", "coalesced", "redis", "app", "app",
                                                   "unknown", "app"]  # fmt: skip
    # of the 8 requests with a header, 4 came from a cache
    assert metrics.hit_rate(records) == 50.0
    assert metrics.hit_rate(records.drop(columns="shared_cache_status").iloc[6:8]) is None


def test_cache_layers_splits_shares_and_latency_by_layer():
    records = pd.DataFrame({
        "scenario": "fixed", "step": "users=5", "users_target": 5, "ok": True, "start": range(6),
        "latency_s": [0.002, 0.004, 1.0, 2.0, 1.5, 0.003],
        "cache_status": ["HIT", "HIT", "MISS", "MISS", "MISS", "MISS"],
        "shared_cache_status": ["MISS", "MISS", "MISS", "MISS", "COALESCED", "HIT"],
    })  # fmt: skip
    (row,) = metrics.cache_layers(records).to_dict("records")
    assert row["requests"] == 6 and row["hit_count"] == 3 and row["miss_count"] == 3
    assert row["nginx_pct"] == pytest.approx(100 * 2 / 6) and row["redis_pct"] == pytest.approx(100 / 6)
    assert row["app_pct"] == pytest.approx(100 * 2 / 6) and row["coalesced_pct"] == pytest.approx(100 / 6)
    assert row["hit_rate"] == 50.0 and row["hit_p95"] < 0.005 and 1.0 <= row["miss_p50"] <= 2.0
