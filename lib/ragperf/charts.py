"""Charts for stakeholders: matplotlib Figures built with the object API (no pyplot state).

Every chart has a title and axis labels with units. Better is green and worse is orange, decided by
the metric's direction in the registry; unchanged, noise and "no verdict" are grey. Figures display
in a notebook as they are (even with no pyplot backend set up) and are written with ``save``.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ragperf.metrics import FAILURE_CLASSES, Slo, format_value, holds

BETTER = "#1b9e77"
WORSE = "#d95f02"
NEUTRAL = "#9e9e9e"
USERS = "#7570b3"
CALL_COLOURS = {"better": BETTER, "worse": WORSE}
CLASS_COLOURS = dict(zip(FAILURE_CLASSES, ("#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
                                           "#1f78b4", "#666666"), strict=True))  # fmt: skip
DPI = 110
UNIT_AXIS = {"s": "Time (s)", "%": "Percent (%)", "x": "Speed-up (x)", "users": "Concurrent users",
             "req/s": "Requests per second", "count": "Count", "ratio": "Ratio (0-1)"}  # fmt: skip


class Chart(Figure):
    """A Figure that shows itself in a notebook without pyplot (IPython's ``_repr_png_`` protocol)."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, dpi=DPI, format="png")
        return buffer.getvalue()


def _figure(width: float, height: float) -> Figure:
    return Chart(figsize=(width, height), layout="constrained")


def _only(frame: pd.DataFrame, scenario: str | None) -> pd.DataFrame:
    return frame if scenario is None else frame[frame["scenario"] == scenario]


def _step_label(scenario: str, users: int, several: bool) -> str:
    return f"{scenario}\n{users}" if several else str(users)


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=NEUTRAL)


def latency_distributions(records: pd.DataFrame, scenario: str | None = None) -> Figure:
    """Latency of every request per load level: a box plot (whiskers 5-95 %) and the cumulative share."""
    records = _only(records, scenario)
    fig = _figure(12, 4.8)
    ax_box, ax_cdf = fig.subplots(1, 2)
    fig.suptitle("Latency per request by load level (all requests, failures at the time they took)")
    several = records["scenario"].nunique() > 1
    groups = sorted(records.groupby(["scenario", "step"], sort=False), key=lambda g: int(g[1]["users_target"].iloc[0]))
    labels, samples = [], []
    for (name, _), group in groups:
        labels.append(_step_label(name, int(group["users_target"].iloc[0]), several))
        samples.append(np.sort(group["latency_s"].to_numpy(float)))
    if samples:
        ax_box.boxplot(samples, whis=(5, 95), showfliers=False)
        ax_box.set_xticks(range(1, len(labels) + 1), labels)
        for i, sample in enumerate(samples, start=1):
            ax_box.plot(i, np.percentile(sample, 95), marker="v", color=WORSE, label="p95" if i == 1 else None)
            ax_cdf.step(sample, 100.0 * np.arange(1, sample.size + 1) / sample.size, where="post", label=labels[i - 1])
        ax_box.legend(loc="upper left")
        ax_cdf.legend(title="Concurrent users", fontsize="small")
    else:
        _empty(ax_box, "no requests")
    ax_box.set(title="Spread (box: 25-75 %, whiskers: 5-95 %)", xlabel="Concurrent users", ylabel="Latency (s)")
    ax_cdf.set(title="Share of requests answered within a time", xlabel="Latency (s)",
               ylabel="Requests at or below (%)", ylim=(0, 100))  # fmt: skip
    ax_cdf.grid(alpha=0.3)
    return fig


def _steps_sorted(steps_df: pd.DataFrame, scenario: str | None) -> pd.DataFrame:
    return _only(steps_df, scenario).sort_values("users_target")


def percentiles_vs_users(steps_df: pd.DataFrame, slo: Slo | None = None, scenario: str | None = None) -> Figure:
    """p50 and p95 latency, and the success rate, against concurrent users, with the SLO lines."""
    steps = _steps_sorted(steps_df, scenario)
    fig = _figure(12, 4.8)
    ax_lat, ax_ok = fig.subplots(1, 2)
    fig.suptitle("Latency and success rate as users are added")
    users = steps["users_target"].to_numpy()
    ax_lat.plot(users, steps["p50"], marker="o", color=USERS, label="p50 (median)")
    ax_lat.plot(users, steps["p95"], marker="o", color="black", label="p95")
    ax_ok.plot(users, steps["success_rate"], marker="o", color="black", label="success rate")
    if slo is not None:
        held = [holds(row, slo) for _, row in steps.iterrows()]
        colours = [BETTER if h else WORSE for h in held]
        ax_lat.scatter(users, steps["p95"], c=colours, zorder=3, s=60, label="step held / broke the SLO")
        ax_ok.scatter(users, steps["success_rate"], c=colours, zorder=3, s=60)
        ax_lat.axhline(slo.p95_s, color=WORSE, linestyle="--", label=f"SLO: p95 < {slo.p95_s:g} s")
        ax_ok.axhline(slo.success_rate_pct, color=WORSE, linestyle="--", label=f"SLO: ≥ {slo.success_rate_pct:g} %")
    for ax in (ax_lat, ax_ok):
        ax.set_xticks(users)
    ax_lat.set(title="Latency percentiles", xlabel="Concurrent users", ylabel="Latency (s)")
    ax_ok.set(title="Requests answered OK", xlabel="Concurrent users", ylabel="Success rate (%)", ylim=(0, 105))
    for ax in (ax_lat, ax_ok):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def throughput_vs_users(steps_df: pd.DataFrame, scenario: str | None = None) -> Figure:
    """OK requests per second (and all requests per second) against concurrent users."""
    steps = _steps_sorted(steps_df, scenario)
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    users = steps["users_target"].to_numpy()
    ax.plot(users, steps["throughput_rps"], marker="o", color=BETTER, label="answered OK")
    if "request_rps" in steps:
        ax.plot(users, steps["request_rps"], marker=".", linestyle=":", color=NEUTRAL, label="all requests")
    ax.set_xticks(users)
    ax.set(title="Throughput as users are added", xlabel="Concurrent users", ylabel="Throughput (requests/s)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def failures_by_class(steps_df: pd.DataFrame, scenario: str | None = None) -> Figure:
    """Failed requests of each step, stacked by failure class."""
    steps = _steps_sorted(steps_df, scenario)
    fig = _figure(max(6, 0.8 * len(steps) + 3), 4.5)
    ax = fig.subplots()
    several = steps["scenario"].nunique() > 1
    labels = [_step_label(s, int(u), several) for s, u in zip(steps["scenario"], steps["users_target"], strict=True)]
    x = np.arange(len(steps))
    bottom = np.zeros(len(steps))
    columns = [c for c in steps.columns if c.startswith("failures_")]
    for column in columns:
        counts = steps[column].fillna(0).to_numpy(float)
        if counts.any():
            cls = column.removeprefix("failures_")
            ax.bar(x, counts, bottom=bottom, color=CLASS_COLOURS.get(cls, NEUTRAL), label=cls.replace("_", " "))
            bottom += counts
    if not bottom.any():
        _empty(ax, "no failed requests")
    else:
        ax.legend(title="Failure class", fontsize="small")
    ax.set_xticks(x, labels)
    ax.set(title="Failed requests by class", xlabel="Concurrent users", ylabel="Failed requests (count)")
    return fig


def _nan(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _side_by_side_panel(ax: Axes, row: pd.Series) -> None:
    unit = row["unit"]
    colour = CALL_COLOURS.get(row["verdict"], NEUTRAL)
    if not _nan(row["users' value"]):
        ax.bar(0, row["users' value"], color=USERS)
        ax.text(
            0, row["users' value"], format_value(row["users' value"], unit), ha="center", va="bottom", fontsize="small"
        )
    elif not _nan(row["users' low"]):
        low, high = row["users' low"], row["users' high"]
        ax.bar(0, high - low, bottom=low, color=USERS, alpha=0.5, hatch="//")
        ax.text(0, high, row["users wrote"], ha="center", va="bottom", fontsize="small")
    else:
        ax.text(0, 0, textwrap.fill(row["users wrote"], 14), ha="center", va="bottom", fontsize="small")
    if not _nan(row["ours"]):
        ax.bar(1, row["ours"], color=colour)
        ax.text(1, row["ours"], format_value(row["ours"], unit), ha="center", va="bottom", fontsize="small")
    else:
        ax.text(1, 0, "not measured", ha="center", va="bottom", fontsize="small")
    ax.set_xticks([0, 1], ["users", "ours"])
    ax.set_xlim(-0.7, 1.7)
    ax.set_title(textwrap.fill(row["metric"], 24), fontsize="medium")
    ax.set_ylabel(UNIT_AXIS.get(unit, unit))
    heights = [v for v in (row["users' value"], row["users' high"], row["ours"]) if not _nan(v)]
    ax.set_ylim(0, 1.2 * max(heights) if heights and max(heights) > 0 else 1)


def side_by_side_chart(table: pd.DataFrame) -> Figure:
    """The users' numbers beside ours, one panel per metric (a ``metrics.side_by_side`` table)."""
    n = len(table)
    cols = min(4, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig = _figure(3.2 * cols, 3.3 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    fig.suptitle("The users' measurements beside ours (green: ours better, orange: worse, hatched: their range)")
    for ax, (_, row) in zip(axes, table.iterrows(), strict=False):
        _side_by_side_panel(ax, row)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig


def compare_chart(compare_df: pd.DataFrame) -> Figure:
    """Change of each metric from the baseline in percent, with the bootstrap interval where known."""
    df = compare_df.dropna(subset=["change_pct"]).iloc[::-1]
    fig = _figure(9, max(3.0, 0.35 * len(df) + 1.8))
    ax = fig.subplots()
    labels = [f"{m} ({s})" if s else m for m, s in zip(df["metric"], df["step"], strict=True)]
    y = np.arange(len(df))
    ax.barh(y, df["change_pct"], color=[CALL_COLOURS.get(call, NEUTRAL) for call in df["call"]])
    handles = [Patch(color=BETTER, label="better"), Patch(color=WORSE, label="worse"),
               Patch(color=NEUTRAL, label="same, or within noise")]  # fmt: skip
    known = df["ci_low"].notna().to_numpy()
    if known.any():
        base = df["baseline"].abs().replace(0, np.nan)
        low, high = 100.0 * df["ci_low"] / base, 100.0 * df["ci_high"] / base
        err = np.vstack([(df["change_pct"] - low)[known], (high - df["change_pct"])[known]])
        bars = ax.errorbar(df["change_pct"][known], y[known], xerr=np.clip(err, 0, None), fmt="none",
                           ecolor="black", capsize=3, label="95 % interval")  # fmt: skip
        handles.append(bars)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, labels, fontsize="small")
    if not len(df):
        _empty(ax, "nothing to compare")
    ax.legend(handles=handles, fontsize="small", loc="best")
    ax.set(title="Current run against the baseline", xlabel="Change from the baseline (%)", ylabel="Metric")
    ax.grid(axis="x", alpha=0.3)
    return fig


LAYER_COLOURS = {"nginx": "#1b9e77", "redis": "#66a61e", "coalesced": "#e6ab02", "app": "#d95f02",
                 "unknown": NEUTRAL}  # fmt: skip


def cache_layers(layers: pd.DataFrame, title: str = "Who answered: the share of requests each layer served") -> Figure:
    """Horizontal stacked bars, one per row of :func:`ragperf.metrics.cache_layers` (labelled by its
    ``label`` column if present, else scenario and step), with the p95 of cached and uncached answers."""
    fig = _figure(9, 1.2 + 0.55 * max(1, len(layers)))
    ax = fig.add_subplot()
    if layers.empty:
        _empty(ax, "no requests")
        return fig
    labels = (layers["label"] if "label" in layers else layers["scenario"] + " " + layers["step"]).tolist()
    y = np.arange(len(layers))[::-1]
    left = np.zeros(len(layers))
    for layer, colour in LAYER_COLOURS.items():
        share = layers[f"{layer}_pct"].to_numpy(float)
        if share.any():
            ax.barh(y, share, left=left, color=colour, label=layer, height=0.6)
            left += share
    for yi, (_, row) in zip(y, layers.iterrows(), strict=True):
        note = f"cached p95 {format_value(row['hit_p95'] * 1000, 'ms')}" if not _nan(row["hit_p95"]) else ""
        if not _nan(row["miss_p95"]):
            note += ("; " if note else "") + f"uncached p95 {format_value(row['miss_p95'], 's')}"
        ax.text(101, yi, note, va="center", fontsize=8)
    ax.set_yticks(y, labels)
    ax.set_xlim(0, 150)
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set_xlabel("Share of requests (%)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8, ncols=len(LAYER_COLOURS))
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at 110 dpi, creating the directory; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def step_explorer(records: pd.DataFrame) -> Any:
    """A step picker that redraws the step's latency distribution and outcomes (needs a live kernel).

    Plain widgets updated by an observer: no Output widget, whose captured output headless runners
    (papermill's nbclient) are known to wait on.
    """
    import ipywidgets as widgets

    steps = records[["scenario", "step"]].drop_duplicates().itertuples(index=False)
    options = [(f"{scenario} {step}", (scenario, step)) for scenario, step in steps]
    image, table = widgets.Image(format="png"), widgets.HTML()

    def show(choice: tuple[str, str]) -> None:
        chosen = records[(records["scenario"] == choice[0]) & (records["step"] == choice[1])]
        image.value = latency_distributions(chosen)._repr_png_()
        outcomes = chosen["error"].fillna("").replace("", "ok").value_counts().rename("requests")
        table.value = outcomes.to_frame().to_html()

    picker = widgets.Dropdown(options=options, description="step")
    picker.observe(lambda change: show(change["new"]), names="value")
    if options:
        show(options[0][1])
    return widgets.VBox([picker, image, table])
