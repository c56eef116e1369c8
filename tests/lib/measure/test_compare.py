import numpy as np
import pandas as pd
import pytest

from ragperf.measure import compare, metrics


def records(latencies, *, scenario="fixed", users=10, ok=True) -> pd.DataFrame:
    """Synthetic request records of one step, 0.1 s apart."""
    n = len(latencies)
    return pd.DataFrame({
        "scenario": scenario, "step": f"users={users}", "users_target": users, "worker": "w0",
        "start": 1_000.0 + 0.1 * np.arange(n), "latency_s": np.asarray(latencies, float), "status": 200, "ok": ok,
        "error": "", "response_bytes": 100, "cache_status": "", "active_users": users, "question_id": np.arange(n),
        "mode": "fast",
    })  # fmt: skip


def run(latencies, **extra):
    frame = records(latencies)
    return frame, metrics.phase_metrics(fixed=frame, **extra)


def test_bootstrap_of_identical_samples_contains_zero():
    sample = np.random.default_rng(1).lognormal(0.0, 0.5, 400)
    observed, low, high = compare.bootstrap_diff_ci(sample, sample.copy(), 95, n_boot=1000, seed=3)
    assert observed == 0.0 and low < 0.0 < high


def test_bootstrap_of_a_clear_shift_excludes_zero_and_is_seeded():
    base = np.random.default_rng(1).normal(2.0, 0.1, 500)
    observed, low, high = compare.bootstrap_diff_ci(base, base + 1.0, 50, n_boot=1000, seed=3)
    assert observed == pytest.approx(1.0)
    assert 0.9 < low < 1.0 < high < 1.1  # a constant shift of 1 s: the interval is tight around 1
    assert compare.bootstrap_diff_ci(base, base + 1.0, 50, n_boot=1000, seed=3) == (observed, low, high)


def test_bootstrap_batches_large_samples_without_changing_shape():
    base = np.random.default_rng(2).exponential(1.0, 30_000)
    observed, low, high = compare.bootstrap_diff_ci(base, base * 0.5, 95, n_boot=300)
    assert low < observed < high < 0  # halving every latency halves the p95


def test_compare_calls_a_clear_improvement_better_with_an_interval():
    rng = np.random.default_rng(0)
    base_records, baseline = run(rng.normal(8.0, 0.5, 300))
    cur_records, current = run(rng.normal(3.0, 0.5, 300))
    df = compare.compare(baseline, current, base_records, cur_records, n_boot=500)
    row = df[df["key"] == "response_time_10_users"].iloc[0]
    assert row["direction"] == "better" and row["call"] == "better"
    assert row["change"] == pytest.approx(
        current["response_time_10_users"]["value"] - baseline["response_time_10_users"]["value"]
    )
    assert row["ci_low"] < row["change"] < row["ci_high"] < 0
    assert row["change_pct"] == pytest.approx(100 * row["change"] / row["baseline"])
    step = df[(df["step"] == "fixed users=10") & (df["key"] == "p50")].iloc[0]
    assert step["call"] == "better" and not np.isnan(step["ci_low"])


def test_compare_calls_the_same_distribution_noise():
    rng = np.random.default_rng(0)
    a = rng.lognormal(1.0, 0.6, 400)
    b = rng.permutation(a)[:399]  # nearly the same requests: the p95 moves a little
    base_records, baseline = run(a)
    cur_records, current = run(b)
    df = compare.compare(baseline, current, base_records, cur_records, n_boot=500)
    p95 = df[(df["step"] == "fixed users=10") & (df["key"] == "p95")].iloc[0]
    assert p95["call"] == "noise" and p95["ci_low"] <= 0 <= p95["ci_high"]


def test_compare_without_records_uses_directions_and_registry_order():
    baseline = {"success_rate_10_users": {"value": 36.7, "unit": "%"}, "response_time_10_users": {"value": 9.62},
                "max_concurrent_users": {"value": 10}, "recall": {"value": 0.9}}  # fmt: skip
    current = {"response_time_10_users": {"value": 3.0}, "success_rate_10_users": {"value": 30.0},
               "max_concurrent_users": {"value": 10}, "cache_speedup": {"value": 5.0}}  # fmt: skip
    df = compare.compare(baseline, current)
    assert list(df["key"]) == ["success_rate_10_users", "response_time_10_users", "max_concurrent_users"]
    assert list(df["call"]) == ["worse", "better", "same"]
    assert df["ci_low"].isna().all()
    assert df.loc[0, "change"] == pytest.approx(-6.7)


def test_compare_text_says_what_changed():
    baseline = {"response_time_10_users": {"value": 9.62}, "success_rate_10_users": {"value": 36.7}}
    current = {"response_time_10_users": {"value": 3.1}, "success_rate_10_users": {"value": 30.0}}
    text = compare.compare_text(compare.compare(baseline, current))
    assert "1 number got better, 1 number got worse" in text
    assert "Response time (p95) at 10 users: 9.62 s → 3.1 s (-68 %)" in text
    assert "Worse:\n- Success rate at 10 users: 36.7 % → 30.0 % (-6.7 percentage points)" in text
    assert "Nothing to compare" in compare.compare_text(compare.compare({}, {}))


def test_a_run_compared_with_itself_is_the_same_everywhere():
    frame, m = run(np.random.default_rng(5).lognormal(1.0, 0.5, 200))
    df = compare.compare(m, m, frame, frame, n_boot=200)
    assert set(df["call"]) == {"same"} and df["change"].eq(0).all()
    assert (df["ci_low"].dropna() <= 0).all() and (df["ci_high"].dropna() >= 0).all()
