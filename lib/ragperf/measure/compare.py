"""Baseline against current: what changed, in which direction, and whether it is more than noise.

Latency percentiles of one step are compared with a bootstrap: requests of each run are resampled
with replacement, the percentile is taken of each resample, and the 2.5 and 97.5 percentiles of the
differences (current minus baseline) bound a 95 % confidence interval. A difference whose interval
contains 0 is called "noise". Other numbers (rates, counts, ratios) are compared as measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ragperf.measure.metrics import REGISTRY, format_value, metric, step_summaries, value_of

BOOTSTRAP_PERCENTILES = {"p50": 50.0, "p95": 95.0}
STEP_STATISTICS = ("p50", "p95", "success_rate", "throughput_rps")
COLUMNS = ["key", "metric", "step", "unit", "baseline", "current", "change", "change_pct", "direction",
           "ci_low", "ci_high", "call"]  # fmt: skip
_MAX_RESAMPLE_CELLS = 4_000_000  # bounds the memory of one vectorised bootstrap batch


def _bootstrap_percentile(sample: np.ndarray, q: float, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    n = sample.size
    out = np.empty(n_boot)
    batch = max(1, _MAX_RESAMPLE_CELLS // n)
    for i in range(0, n_boot, batch):
        k = min(batch, n_boot - i)
        out[i : i + k] = np.percentile(sample[rng.integers(0, n, size=(k, n))], q, axis=1)
    return out


def bootstrap_diff_ci(
    baseline: np.ndarray, current: np.ndarray, q: float, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(observed difference, low, high) of percentile ``q`` of current minus baseline, bootstrap CI."""
    baseline, current = np.asarray(baseline, float), np.asarray(current, float)
    if baseline.size == 0 or current.size == 0:
        raise ValueError("bootstrap_diff_ci needs at least one value in each sample")
    rng = np.random.default_rng(seed)
    diffs = _bootstrap_percentile(current, q, n_boot, rng) - _bootstrap_percentile(baseline, q, n_boot, rng)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    observed = float(np.percentile(current, q) - np.percentile(baseline, q))
    return observed, float(low), float(high)


def _direction(key: str, baseline: float | None, current: float | None) -> str:
    if baseline is None or current is None:
        return "not comparable"
    if math.isclose(baseline, current, rel_tol=1e-9, abs_tol=1e-12):
        return "same"
    return "better" if (current < baseline) == metric(key).lower_is_better else "worse"


def _latencies(records: pd.DataFrame | None, scenario: str, step: str) -> np.ndarray | None:
    if records is None or records.empty:
        return None
    latency = records.loc[(records["scenario"] == scenario) & (records["step"] == step), "latency_s"]
    return latency.to_numpy(float) if len(latency) else None


def _row(key: str, step: str, baseline: Any, current: Any, samples: tuple | None, boot: dict) -> dict[str, Any]:
    """One comparison row; ``samples`` is (percentile, baseline latencies, current latencies) or None."""
    b, c = _num(baseline), _num(current)
    change = None if b is None or c is None else c - b
    pct = None if change is None or b == 0 else 100.0 * change / abs(b)
    direction = call = _direction(key, b, c)
    low = high = None
    if samples is not None:
        q, before, after = samples
        _, low, high = bootstrap_diff_ci(before, after, q, **boot)
        if low <= 0.0 <= high and direction != "same":
            call = "noise"
    m = metric(key)
    return {"key": key, "metric": m.label, "step": step, "unit": m.unit, "baseline": b, "current": c,
            "change": change, "change_pct": pct, "direction": direction, "ci_low": low, "ci_high": high,
            "call": call}  # fmt: skip


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _samples(
    statistic: str | None,
    scenario: str,
    step: str,
    baseline_records: pd.DataFrame | None,
    current_records: pd.DataFrame | None,
) -> tuple[float, np.ndarray, np.ndarray] | None:
    """(percentile, baseline latencies, current latencies) when the statistic is bootstrapped and both have the step."""
    if statistic not in BOOTSTRAP_PERCENTILES:
        return None
    a, b = _latencies(baseline_records, scenario, step), _latencies(current_records, scenario, step)
    return None if a is None or b is None else (BOOTSTRAP_PERCENTILES[statistic], a, b)


def _steps(metrics: Mapping[str, Any], records: pd.DataFrame | None) -> dict[tuple[str, str], dict]:
    """Step numbers by (scenario, step): from metrics.json, completed by the records."""
    steps = {(s["scenario"], s["step"]): s for s in metrics.get("steps") or []}
    if records is not None and not records.empty:
        for s in step_summaries(records):
            steps.setdefault((s["scenario"], s["step"]), s)
    return steps


def compare(
    baseline: dict,
    current: dict,
    baseline_records: pd.DataFrame | None = None,
    current_records: pd.DataFrame | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Every metric of both metrics.json dicts (registry order), then every step both runs measured.

    Columns: key, metric, step ("" for a run-level metric, else "<scenario> <step>"), unit, baseline,
    current, change (current - baseline), change_pct, direction (better / worse / same, from the
    metric's direction), ci_low / ci_high (95 % bootstrap interval of the change, p50 and p95 with
    records of the step in both runs) and call (direction, or "noise" when the interval contains 0).
    """
    boot = {"n_boot": n_boot, "seed": seed}
    sources = {**(baseline.get("sources") or {}), **(current.get("sources") or {})}
    rows = []
    for key in REGISTRY:
        if key not in baseline or key not in current:
            continue
        b, c = value_of(baseline, key), value_of(current, key)
        if b is None and c is None:
            continue
        src = sources.get(key) or {}
        samples = _samples(
            src.get("statistic"), src.get("scenario"), src.get("step"), baseline_records, current_records
        )
        rows.append(_row(key, "", b, c, samples, boot))
    base_steps, cur_steps = _steps(baseline, baseline_records), _steps(current, current_records)
    for (scenario, step), cur in cur_steps.items():
        base = base_steps.get((scenario, step))
        if base is None:
            continue
        for key in STEP_STATISTICS:
            samples = _samples(key, scenario, step, baseline_records, current_records)
            rows.append(_row(key, f"{scenario} {step}", base.get(key), cur.get(key), samples, boot))
    return pd.DataFrame(rows, columns=COLUMNS).astype(
        {c: float for c in ("baseline", "current", "change", "change_pct", "ci_low", "ci_high")}
    )


def describe(row: Any) -> str:
    """One comparison row (a :func:`compare` row, as ``itertuples`` gives it) in words: the metric and step,
    before → after, the change (percentage points for a percentage, else percent) and its 95 % interval."""
    where = f" ({row.step})" if row.step else ""
    before, after = format_value(_num(row.baseline), row.unit), format_value(_num(row.current), row.unit)
    text = f"{row.metric}{where}: {before} → {after}"
    if row.unit == "%" and not math.isnan(row.change):
        text += f" ({row.change:+.1f} percentage points)"
    elif not math.isnan(row.change_pct):
        text += f" ({row.change_pct:+.0f} %)"
    if not math.isnan(row.ci_low):
        text += f", 95 % interval of the change {row.ci_low:+.3g} to {row.ci_high:+.3g} {row.unit}"
    return text


def _numbers(n: int) -> str:
    return f"{n} number" if n == 1 else f"{n} numbers"


def compare_text(df: pd.DataFrame) -> str:
    """The comparison in plain English: counts, then each improvement, regression and noise call."""
    if df.empty:
        return "Nothing to compare: the two runs have no metric in common."
    counts = df["call"].value_counts()
    n_same = int(counts.get("same", 0) + counts.get("noise", 0))
    n_better, n_worse = int(counts.get("better", 0)), int(counts.get("worse", 0))
    lines = [
        f"Compared with the baseline, {_numbers(n_better)} got better, {_numbers(n_worse)} got worse "
        f"and {_numbers(n_same)} did not change beyond noise."
    ]
    headings = {"better": "Better", "worse": "Worse", "noise": "Within noise (the 95 % interval contains 0)"}
    for call, heading in headings.items():
        chosen = df[df["call"] == call]
        if not chosen.empty:
            lines.append(f"{heading}:")
            lines.extend(f"- {describe(row)}." for row in chosen.itertuples(index=False))
    return "\n".join(lines)
