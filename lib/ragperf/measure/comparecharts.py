"""The comparison with a baseline, charted: each metric's change as a ratio on a log scale, with its interval.

:func:`compare_chart` draws the headline rows of :func:`ragperf.measure.compare.compare` (one bar per
metric and scenario) and :func:`compare_steps_chart` its rows per load step; better is green, worse is
orange and noise grey, as in every chart of :mod:`ragperf.measure.charts`, whose theme they are drawn in.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ragperf.measure.charts import BETTER, CALL_COLOURS, NEUTRAL, WORSE, chart, empty, figure, floats, has
from ragperf.measure.compare import STEP_STATISTICS
from ragperf.measure.metrics import REGISTRY, USERS_KEYS, format_value, metric

RATIO_FLOOR = 1e-3  # a value that fell to zero is drawn at 1/1000 of the baseline
CHANGE_AXIS = "Change from the baseline (%)"


def _log_ratio(change_pct: np.ndarray) -> np.ndarray:
    """Percent change from the baseline to log10 of the ratio current / baseline (zero at the floor)."""
    return np.log10(np.maximum(1.0 + np.asarray(change_pct, float) / 100.0, RATIO_FLOOR))


def _from_log_ratio(log_ratio: np.ndarray) -> np.ndarray:
    return 100.0 * (np.power(10.0, log_ratio) - 1.0)


def _ratio_text(ratio: float) -> str:
    if ratio <= RATIO_FLOOR:
        return "→ 0"
    return f"{ratio:.3g}×" if ratio >= 1 else f"1/{1 / ratio:.3g}×"


def _percent_text(change_pct: float) -> str:
    if round(change_pct, 1) == 0:
        return "0 %"
    text = f"{change_pct:+,.0f} %" if abs(change_pct) >= 100 else f"{change_pct:+.3g} %"
    return text.replace("-", "−")


def _ratio_axis(ax: Axes, extent: float) -> None:
    """The x axis in percent change, drawn on a log scale of the ratio current / baseline: 1× in the middle,
    as far to 1/10× as to 10×, each tick labelled with the ratio and the percent."""
    ax.set_xscale("function", functions=(_log_ratio, _from_log_ratio))
    ax.set_xlim(_from_log_ratio(-extent), _from_log_ratio(extent))
    mantissas = (1.0, 2.0, 5.0) if extent <= 1.0 else (1.0, 3.0) if extent <= 2.0 else (1.0,)
    rises = [m * 10.0**k for k in range(4) for m in mantissas if math.log10(m * 10.0**k) <= extent + 1e-9]
    ratios = sorted({*rises, *(1.0 / r for r in rises)})
    ax.set_xticks([100.0 * (r - 1.0) for r in ratios], [f"{_ratio_text(r)}\n{_percent_text(100 * (r - 1))}"
                                                        for r in ratios], fontsize="small")  # fmt: skip
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.grid(axis="x", alpha=0.5)
    ax.grid(axis="y", visible=False)


def _interval_pct(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The bootstrap interval of each change as percent of the baseline (NaN where the table has none)."""
    base = np.abs(floats(df, "baseline"))
    base[base == 0] = np.nan
    return 100.0 * floats(df, "ci_low") / base, 100.0 * floats(df, "ci_high") / base


def _extent(df: pd.DataFrame) -> float:
    """Half the width of the symmetric log axis (decades) that holds every bar and interval, at least 2×."""
    low, high = _interval_pct(df)
    ends = np.concatenate([floats(df, "change_pct"), low, high])
    ratios = 1.0 + ends[np.isfinite(ends)] / 100.0
    ratios = ratios[ratios > RATIO_FLOOR]
    widest = float(np.abs(np.log10(ratios)).max()) if ratios.size else 0.0
    return max(math.log10(2.0), 1.3 * widest)


def _ratio_bars(ax: Axes, df: pd.DataFrame, y: np.ndarray) -> list[Any]:
    """Bars from 1× to each ratio, coloured by the call, with the bootstrap interval as an error bar."""
    up = np.argsort(y, kind="stable")  # drawn bottom-up
    df, y = df.iloc[up], y[up]
    change = floats(df, "change_pct")
    known = np.isfinite(change)
    ax.barh(y[known], change[known], height=0.6, color=[CALL_COLOURS.get(c, NEUTRAL) for c in df["call"][known]])
    handles: list[Any] = [Patch(color=BETTER, label="better"), Patch(color=WORSE, label="worse"),
                          Patch(color=NEUTRAL, label="same, or within noise")]  # fmt: skip
    low, high = _interval_pct(df)
    with_ci = known & np.isfinite(low) & np.isfinite(high)
    if with_ci.any():
        err = np.clip(np.vstack([(change - low)[with_ci], (high - change)[with_ci]]), 0, None)
        handles.append(ax.errorbar(change[with_ci], y[with_ci], xerr=err, fmt="none", ecolor="black", capsize=3,
                                   label="95 % bootstrap interval"))  # fmt: skip
    for yi, pct, base in zip(y, change, floats(df, "baseline"), strict=True):
        # At the bar's root, on the other side of 1×, where neither the bar nor its interval is.
        rose = not math.isfinite(pct) or pct >= 0
        text = _ratio_text(max(1.0 + pct / 100.0, RATIO_FLOOR)) if math.isfinite(pct) else "no ratio"
        text += " (from 0)" if base == 0 else ""
        ax.annotate(text, (0.0, yi), xytext=(-5 if rose else 5, 0), textcoords="offset points", va="center",
                    ha="right" if rose else "left", fontsize="small", color="0.3")  # fmt: skip
    return handles


def _row_label(row: Any, with_metric: bool) -> str:
    unit = str(row.unit)
    values = f"{format_value(_float(row.baseline), unit)} → {format_value(_float(row.current), unit)}"
    return f"{row.metric}\n{values}" if with_metric else f"{row.step}\n{values}"


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _headline_rows(compare_df: pd.DataFrame) -> pd.DataFrame:
    """Run-level rows: the users' seven metrics first, in their order, then the others in the registry's."""
    run = compare_df[compare_df["step"].fillna("").astype(str) == ""]
    rank = {key: i for i, key in enumerate([*USERS_KEYS, *(k for k in REGISTRY if k not in USERS_KEYS)])}
    order = run["key"].map(rank).fillna(len(rank)) if "key" in run else pd.Series(len(rank), run.index)
    return run.iloc[np.argsort(order.to_numpy(float), kind="stable")]


def _comparable(compare_df: pd.DataFrame) -> bool:
    return has(compare_df, "metric", "step", "unit", "baseline", "current", "change_pct", "call")


@chart
def compare_chart(compare_df: pd.DataFrame) -> Figure:
    """The headline of a ``compare.compare`` table: each run-level metric as current / baseline on a log
    scale (the users' seven first), with the bootstrap interval where known; per-step rows are in
    :func:`compare_steps_chart`."""
    df = _headline_rows(compare_df) if _comparable(compare_df) else pd.DataFrame()
    fig = figure(10, max(3.0, 0.5 * len(df) + 2.2))
    ax = fig.subplots()
    fig.suptitle("Current run against the baseline: current / baseline on a log scale (1× = unchanged;\n"
                 "1/10× and 10× lie equally far from it, left fell, right rose)")  # fmt: skip
    if df.empty:
        empty(ax, "nothing to compare")
        ax.set(xlabel=CHANGE_AXIS, ylabel="Metric")
        return fig
    y = np.arange(len(df))[::-1]  # the first row at the top
    handles = _ratio_bars(ax, df, y)
    _ratio_axis(ax, _extent(df))
    ax.set_yticks(y, [_row_label(row, True) for row in df.itertuples(index=False)], fontsize="small")
    ax.set_ylim(-0.6, len(df) - 0.4)
    n_users = int(df["key"].isin(USERS_KEYS).sum()) if "key" in df else 0
    if 0 < n_users < len(df):
        ax.axhline(len(df) - n_users - 0.5, color="black", linewidth=0.8, linestyle=":")
        title = "The users' metrics first (above the dotted line), then the others"
    else:
        title = "The users' metrics" if n_users else "Supplementary metrics"
    ax.set(title=title, xlabel=CHANGE_AXIS, ylabel="Metric")
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small")
    return fig


@chart
def compare_steps_chart(compare_df: pd.DataFrame) -> Figure:
    """The per-step rows of a ``compare.compare`` table: one panel per statistic (p50, p95, success rate,
    throughput), each step's current / baseline on the same log scale as :func:`compare_chart`."""
    df = compare_df[compare_df["step"].fillna("").astype(str) != ""] if _comparable(compare_df) else pd.DataFrame()
    keys = [k for k in STEP_STATISTICS if not df.empty and (df["key"] == k).any()]
    steps = list(dict.fromkeys(df["step"])) if keys else []
    fig = figure(max(6.0, 3.6 * len(keys) + 2.0), max(3.0, 0.45 * len(steps) + 2.2))
    fig.suptitle("Each step against the baseline: current / baseline on a log scale (1× = unchanged)")
    if not keys:
        ax = fig.subplots()
        empty(ax, "no step measured in both runs")
        ax.set(xlabel=CHANGE_AXIS, ylabel="Step")
        return fig
    axes = np.atleast_1d(fig.subplots(1, len(keys), sharey=True, sharex=True))
    extent = _extent(df)
    handles: list[Any] = []
    for ax, key in zip(axes, keys, strict=True):
        rows = df[df["key"] == key].set_index("step").reindex(steps).reset_index()
        rows["call"] = rows["call"].fillna("")
        y = np.arange(len(rows))[::-1]
        drawn = _ratio_bars(ax, rows, y)
        handles = drawn if len(drawn) > len(handles) else handles
        _ratio_axis(ax, extent)
        ax.set(title=metric(key).label, xlabel=CHANGE_AXIS)
    axes[0].set_yticks(np.arange(len(steps))[::-1], steps, fontsize="small")
    axes[0].set(ylim=(-0.6, len(steps) - 0.4), ylabel="Step")
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small")
    return fig
