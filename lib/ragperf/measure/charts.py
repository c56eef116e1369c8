"""Charts for stakeholders: seaborn on matplotlib Figures built with the object API (no pyplot state).

One seaborn theme (style, context and palette, :func:`theme`) dresses every chart: each chart is built
and drawn inside it, so the theme never leaks into matplotlib's global settings. Every chart has a title
and axis labels with units. Better is green and worse is orange, decided by the metric's direction in the
registry; unchanged, noise and "no verdict" are grey. No data, or NaN values, give a short "no data" note
in the axes, never an error. Figures display in a notebook as they are (even with no pyplot backend set
up) and are written with ``save``. seaborn is imported when a chart is made, not at import time: it
imports pyplot. The comparison with a baseline is charted in :mod:`ragperf.measure.comparecharts`, with
this module's theme and helpers (:func:`chart`, :func:`figure`, :func:`empty`, :func:`floats`, :func:`has`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import textwrap
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import matplotlib as mpl
import numpy as np
import pandas as pd
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ragperf.measure.compare import bootstrap_diff_ci
from ragperf.measure.metrics import FAILURE_CLASSES, Slo, format_value, holds

BETTER = "#1b9e77"
WORSE = "#d95f02"
NEUTRAL = "#9e9e9e"
USERS = "#7570b3"
# ColorBrewer's Dark2, whose first colours are better, worse and the users' own numbers.
PALETTE = (BETTER, WORSE, USERS, "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")
THEME_STYLE = "whitegrid"
THEME_CONTEXT = "notebook"
STEP_PALETTE = "crest"  # load levels, light to dark as users are added: no better/worse meaning
CALL_COLOURS = {"better": BETTER, "worse": WORSE}
CLASS_COLOURS = dict(zip(FAILURE_CLASSES, ("#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d",
                                           "#1f78b4", "#666666"), strict=True))  # fmt: skip
DPI = 110
UNIT_AXIS = {"s": "Time (s)", "%": "Percent (%)", "x": "Speed-up (x)", "users": "Concurrent users",
             "req/s": "Requests per second", "count": "Count", "ratio": "Ratio (0-1)"}  # fmt: skip
USERS_AXIS = "Concurrent users"
BOOT = {"n_boot": 2000, "seed": 0}  # as ragperf.measure.compare, so a chart's interval and the comparison's agree
PERCENTILES = {"p50": (50.0, "p50 (median)", USERS, "-"), "p95": (95.0, "p95", "black", "-"),
               "p99": (99.0, "p99", "#666666", "--")}  # fmt: skip

P = ParamSpec("P")
R = TypeVar("R")


@functools.cache
def _theme_rc() -> tuple[tuple[str, Any], ...]:
    import seaborn as sns

    rc = {**sns.axes_style(THEME_STYLE), **sns.plotting_context(THEME_CONTEXT)}
    rc["axes.prop_cycle"] = cycler(color=sns.color_palette(PALETTE).as_hex())
    return tuple(rc.items())


def theme() -> dict[str, Any]:
    """The matplotlib settings of the workbook's one seaborn theme: style, context and palette (made once)."""
    return dict(_theme_rc())


@contextlib.contextmanager
def themed() -> Iterator[None]:
    """Build (or draw) figures in the workbook's theme; matplotlib's global settings come back afterwards."""
    with mpl.rc_context(theme()):
        yield


def chart(build: Callable[P, R]) -> Callable[P, R]:
    """A chart function that builds its figure in the theme."""

    @functools.wraps(build)
    def build_themed(*args: P.args, **kwargs: P.kwargs) -> R:
        with themed():
            return build(*args, **kwargs)

    return build_themed


class Chart(Figure):
    """A Figure that carries the theme, draws in it, and shows itself in a notebook without pyplot
    (IPython's ``_repr_png_`` protocol)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.theme = theme()

    def draw(self, renderer: Any) -> None:
        # Tick labels are made when drawn: draw in the theme too, wherever the figure is saved or shown.
        with mpl.rc_context(self.theme):
            super().draw(renderer)

    def png(self) -> bytes:
        """The figure as PNG bytes, at the workbook's resolution."""
        buffer = io.BytesIO()
        self.savefig(buffer, dpi=DPI, format="png")
        return buffer.getvalue()

    def _repr_png_(self) -> tuple[bytes, dict[str, str]]:
        return self.png(), {"alt": alt_text(self)}


def alt_text(fig: Figure) -> str:
    """What a figure shows, in words, for readers who cannot see it: its title, each panel's title and axes."""
    parts = [fig.get_suptitle()] if fig.get_suptitle() else []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        axis = " against ".join(label for label in (ax.get_ylabel(), ax.get_xlabel()) if label)
        panel = "; ".join(part for part in (ax.get_title(), axis) if part)
        if panel:
            parts.append(panel)
    return ". ".join(dict.fromkeys(parts)) or "A chart"


def figure(width: float, height: float) -> Figure:
    """A themed :class:`Chart` of ``width`` x ``height`` inches, laid out by matplotlib."""
    return Chart(figsize=(width, height), layout="constrained")


def empty(ax: Axes, text: str) -> None:
    """A short grey note in the middle of ``ax`` ("no data" ...) instead of a chart."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color=NEUTRAL)


def _legend(ax: Axes, **kwargs: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def floats(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as floats, NaN where a value (or the whole column) is missing."""
    if column not in frame:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(float)


def has(frame: pd.DataFrame | None, *columns: str) -> bool:
    """True when ``frame`` exists and holds every one of ``columns``."""
    return frame is not None and set(columns) <= set(frame.columns)


def _only(frame: pd.DataFrame, scenario: str | None) -> pd.DataFrame:
    if scenario is None:
        return frame
    return frame[frame["scenario"] == scenario] if "scenario" in frame else frame.iloc[0:0]


def _steps_sorted(steps_df: pd.DataFrame, scenario: str | None) -> pd.DataFrame:
    steps = _only(steps_df, scenario)
    return steps.sort_values("users_target") if "users_target" in steps else steps.iloc[0:0]


def _unique(labels: Sequence[str]) -> list[str]:
    """Labels made unique (a categorical axis would merge equal ones)."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def _step_labels(scenarios: Sequence[str], users: Sequence[float]) -> list[str]:
    """Users of each step, with the scenario when there are several."""
    several = len(set(scenarios)) > 1
    counts = [f"{u:.0f}" if math.isfinite(u) else "?" for u in users]
    return _unique([f"{s}\n{u}" if several else u for s, u in zip(scenarios, counts, strict=True)])


def _latency_frame(records: pd.DataFrame, scenario: str | None) -> tuple[pd.DataFrame, list[str]]:
    """Requests with a latency, labelled by load level (column ``USERS_AXIS``); the labels by users."""
    if not has(records, "scenario", "step", "users_target", "latency_s"):
        return pd.DataFrame(columns=[USERS_AXIS, "latency_s"]), []
    records = _only(records, scenario)
    records = records[np.isfinite(floats(records, "latency_s"))]
    groups = sorted(records.groupby(["scenario", "step"], sort=False), key=lambda g: floats(g[1], "users_target")[0])
    labels = _step_labels([str(name) for (name, _), _ in groups], [floats(g, "users_target")[0] for _, g in groups])
    parts = [pd.DataFrame({USERS_AXIS: label, "latency_s": g["latency_s"].to_numpy(float)})
             for label, (_, g) in zip(labels, groups, strict=True)]  # fmt: skip
    return (pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[USERS_AXIS, "latency_s"])), labels


@chart
def latency_distributions(records: pd.DataFrame, scenario: str | None = None) -> Figure:
    """Latency of every request per load level: a box plot (whiskers 5-95 %) and the ECDF of each step."""
    import seaborn as sns

    fig = figure(12, 4.8)
    ax_box, ax_cdf = fig.subplots(1, 2)
    fig.suptitle("Latency per request by load level (all requests, failures at the time they took)")
    frame, labels = _latency_frame(records, scenario)
    if labels:
        palette = dict(zip(labels, sns.color_palette(STEP_PALETTE, len(labels)).as_hex(), strict=True))
        with warnings.catch_warnings():  # seaborn 0.13.2 passes bxp's vert=, deprecated since matplotlib 3.11
            warnings.filterwarnings("ignore", "vert: bool was deprecated", mpl.MatplotlibDeprecationWarning)
            sns.boxplot(data=frame, x=USERS_AXIS, y="latency_s", hue=USERS_AXIS, order=labels, hue_order=labels,
                        palette=palette, whis=(5, 95), showfliers=False, legend=False, ax=ax_box)  # fmt: skip
        p95 = frame.groupby(USERS_AXIS, sort=False)["latency_s"].quantile(0.95).reindex(labels)
        ax_box.plot(np.arange(len(labels)), p95.to_numpy(float), linestyle="none", marker="v", color=WORSE,
                    label="p95")  # fmt: skip
        ax_box.legend(loc="upper left")
        sns.ecdfplot(data=frame, x="latency_s", hue=USERS_AXIS, hue_order=labels, palette=palette, stat="percent",
                     ax=ax_cdf)  # fmt: skip
        sns.move_legend(ax_cdf, "lower right", fontsize="small", title=USERS_AXIS)
    else:
        empty(ax_box, "no requests")
        empty(ax_cdf, "no requests")
    ax_box.set(title="Spread (box: 25-75 %, whiskers: 5-95 %)", xlabel=USERS_AXIS, ylabel="Latency (s)")
    ax_cdf.set(title="Share of requests answered within a time (ECDF)", xlabel="Latency (s)",
               ylabel="Requests at or below (%)", ylim=(0, 100))  # fmt: skip
    return fig


def _line(ax: Axes, x: np.ndarray, y: np.ndarray, colour: str, label: str, **style: Any) -> bool:
    """One series as a seaborn line with markers; False (nothing drawn) when no point is a number."""
    import seaborn as sns

    keep = np.isfinite(x) & np.isfinite(y)
    if not keep.any():
        return False
    style = {"marker": "o", **style}
    sns.lineplot(x=x[keep], y=y[keep], color=colour, label=label, estimator=None, ax=ax, **style)
    return True


def _step_records(steps: pd.DataFrame, records: pd.DataFrame | None) -> list[pd.DataFrame] | None:
    """The requests of each step row (matched by scenario and step), or None without usable records."""
    if not has(records, "scenario", "step", "latency_s") or not has(steps, "scenario", "step"):
        return None
    groups = dict(iter(records.groupby(["scenario", "step"], sort=False)))
    keys = zip(steps["scenario"], steps["step"], strict=True)
    return [groups.get(key, records.iloc[0:0]) for key in keys]


def _percentile_interval(latency: np.ndarray, q: float) -> tuple[float, float]:
    """95 % bootstrap interval of a step's percentile ``q``, resampled as ``compare`` resamples."""
    latency = latency[np.isfinite(latency)]
    if latency.size == 0:
        return math.nan, math.nan
    # Against a baseline of one zero, the bootstrapped change is the bootstrapped percentile itself.
    _, low, high = bootstrap_diff_ci(np.zeros(1), latency, q, **BOOT)
    return low, high


def _throughput_interval(step: pd.DataFrame, throughput: float) -> tuple[float, float]:
    """95 % bootstrap interval of a step's OK answers per second: requests resampled, the step's wall time
    held (seaborn's bootstrap: ``compare`` bootstraps percentiles only)."""
    from seaborn.algorithms import bootstrap

    ok = step["ok"].astype(bool).to_numpy(float) if "ok" in step else np.empty(0)
    if ok.size == 0 or not math.isfinite(throughput):
        return math.nan, math.nan
    if ok.sum() == 0:
        return 0.0, 0.0
    low, high = np.percentile(bootstrap(ok, func="sum", **BOOT), [2.5, 97.5])
    per_answer = throughput / ok.sum()
    return float(low * per_answer), float(high * per_answer)


def _intervals(ax: Axes, x: np.ndarray, y: np.ndarray, bounds: Sequence[tuple[float, float]], colour: str,
               label: str | None) -> None:  # fmt: skip
    low, high = np.array(bounds, float).reshape(-1, 2).T
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(low) & np.isfinite(high)
    if keep.any():
        err = np.clip(np.vstack([y[keep] - low[keep], high[keep] - y[keep]]), 0, None)
        ax.errorbar(x[keep], y[keep], yerr=err, fmt="none", ecolor=colour, elinewidth=1.5, capsize=4, label=label)


def _users_ticks(ax: Axes, users: np.ndarray) -> None:
    ticks = np.unique(users[np.isfinite(users)])
    if ticks.size:
        ax.set_xticks(ticks, [f"{u:g}" for u in ticks])


def _held_points(ax: Axes, users: np.ndarray, values: np.ndarray, held: list[bool], label: str | None) -> None:
    import seaborn as sns

    sns.scatterplot(x=users, y=values, hue=["held" if h else "broke" for h in held], s=60, zorder=3, legend=False,
                    palette={"held": BETTER, "broke": WORSE}, label=label, ax=ax)  # fmt: skip


@chart
def percentiles_vs_users(
    steps_df: pd.DataFrame, slo: Slo | None = None, scenario: str | None = None, *, records: pd.DataFrame | None = None
) -> Figure:
    """p50, p95 and p99 latency, and the success rate, against concurrent users, with the SLO lines.

    Given the steps' per-request ``records``, each percentile carries its 95 % bootstrap interval.
    """
    steps = _steps_sorted(steps_df, scenario)
    fig = figure(12, 4.8)
    ax_lat, ax_ok = fig.subplots(1, 2)
    fig.suptitle("Latency and success rate as users are added")
    users = floats(steps, "users_target")
    drawn = {name: _line(ax_lat, users, floats(steps, name), colour, label, linestyle=dash)
             for name, (_, label, colour, dash) in PERCENTILES.items() if name in steps}  # fmt: skip
    has_rate = _line(ax_ok, users, floats(steps, "success_rate"), "black", "success rate")
    if slo is not None and len(steps):
        held = [holds(row, slo) for _, row in steps.iterrows()]
        _held_points(ax_lat, users, floats(steps, "p95"), held, "step held / broke the SLO")
        _held_points(ax_ok, users, floats(steps, "success_rate"), held, None)
        ax_lat.axhline(slo.p95_s, color=WORSE, linestyle="--", label=f"SLO: p95 < {slo.p95_s:g} s")
        ax_ok.axhline(slo.success_rate_pct, color=WORSE, linestyle="--", label=f"SLO: ≥ {slo.success_rate_pct:g} %")
    per_step = _step_records(steps, records)
    if per_step is not None:
        label: str | None = "95 % bootstrap interval"
        for name in (n for n, ok in drawn.items() if ok):
            q, _, colour, _ = PERCENTILES[name]
            bounds = [_percentile_interval(floats(step, "latency_s"), q) for step in per_step]
            _intervals(ax_lat, users, floats(steps, name), bounds, colour, label)
            label = None
    if not any(drawn.values()):
        empty(ax_lat, "no data")
    if not has_rate:
        empty(ax_ok, "no data")
    for ax in (ax_lat, ax_ok):
        _users_ticks(ax, users)
        _legend(ax, fontsize="small")
    ax_lat.set(title="Latency percentiles", xlabel=USERS_AXIS, ylabel="Latency (s)")
    ax_ok.set(title="Requests answered OK", xlabel=USERS_AXIS, ylabel="Success rate (%)", ylim=(0, 105))
    return fig


@chart
def throughput_vs_users(
    steps_df: pd.DataFrame, scenario: str | None = None, *, records: pd.DataFrame | None = None
) -> Figure:
    """OK requests per second (and all requests per second) against concurrent users.

    Given the steps' per-request ``records``, the OK rate carries its 95 % bootstrap interval.
    """
    steps = _steps_sorted(steps_df, scenario)
    fig = figure(7, 4.5)
    ax = fig.subplots()
    users, throughput = floats(steps, "users_target"), floats(steps, "throughput_rps")
    drawn = _line(ax, users, throughput, BETTER, "answered OK")
    if "request_rps" in steps:
        _line(ax, users, floats(steps, "request_rps"), NEUTRAL, "all requests", linestyle=":", marker=".")
    per_step = _step_records(steps, records)
    if per_step is not None and drawn:
        bounds = [_throughput_interval(step, tp) for step, tp in zip(per_step, throughput, strict=True)]
        _intervals(ax, users, throughput, bounds, BETTER, "95 % bootstrap interval")
    if not drawn:
        empty(ax, "no data")
    _users_ticks(ax, users)
    ax.set(title="Throughput as users are added", xlabel=USERS_AXIS, ylabel="Throughput (requests/s)")
    ax.set_ylim(bottom=0)
    _legend(ax, fontsize="small")
    return fig


@chart
def failures_by_class(steps_df: pd.DataFrame, scenario: str | None = None) -> Figure:
    """Failed requests of each step, stacked by failure class."""
    import seaborn as sns

    steps = _steps_sorted(steps_df, scenario)
    fig = figure(max(6, 0.8 * len(steps) + 3), 4.5)
    ax = fig.subplots()
    scenarios = steps["scenario"].astype(str).tolist() if "scenario" in steps else [""] * len(steps)
    labels = _step_labels(scenarios, floats(steps, "users_target").tolist())
    bottom = np.zeros(len(steps))
    for column in (c for c in steps.columns if str(c).startswith("failures_")):
        counts = np.nan_to_num(floats(steps, column))
        if counts.any():
            cls = column.removeprefix("failures_")
            sns.barplot(x=labels, y=counts, order=labels, bottom=bottom.copy(), color=CLASS_COLOURS.get(cls, NEUTRAL),
                        saturation=1, label=cls.replace("_", " "), ax=ax)  # fmt: skip
            bottom += counts
    if not bottom.any():
        empty(ax, "no failed requests" if len(steps) else "no data")
    else:
        ax.legend(title="Failure class", fontsize="small")
    ax.set(title="Failed requests by class", xlabel=USERS_AXIS, ylabel="Failed requests (count)")
    return fig


def _nan(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


SIDES = ["users", "ours"]


def _side_bar(ax: Axes, side: str, height: float, colour: str, **style: Any) -> None:
    import seaborn as sns

    sns.barplot(x=[side], y=[height], order=SIDES, color=colour, saturation=1, ax=ax, **style)


def _side_by_side_panel(ax: Axes, row: pd.Series) -> None:
    unit = row["unit"]
    colour = CALL_COLOURS.get(row["verdict"], NEUTRAL)
    note = {"ha": "center", "va": "bottom", "fontsize": "small"}
    if not _nan(row["users' value"]):
        _side_bar(ax, "users", row["users' value"], USERS)
        ax.text(0, row["users' value"], format_value(row["users' value"], unit), **note)
    elif not _nan(row["users' low"]) and not _nan(row["users' high"]):
        low, high = row["users' low"], row["users' high"]
        _side_bar(ax, "users", high - low, USERS, bottom=low, alpha=0.5, hatch="//")
        ax.text(0, high, row["users wrote"], **note)
    else:
        ax.text(0, 0, textwrap.fill(str(row["users wrote"]), 14), **note)
    if not _nan(row["ours"]):
        _side_bar(ax, "ours", row["ours"], colour)
        ax.text(1, row["ours"], format_value(row["ours"], unit), **note)
    else:
        ax.text(1, 0, "not measured", **note)
    ax.set_xticks([0, 1], SIDES)
    ax.set_xlim(-0.7, 1.7)
    ax.set_title(textwrap.fill(str(row["metric"]), 24), fontsize="medium")
    ax.set_ylabel(UNIT_AXIS.get(unit, unit))
    heights = [v for v in (row["users' value"], row["users' high"], row["ours"]) if not _nan(v)]
    ax.set_ylim(0, 1.2 * max(heights) if heights and max(heights) > 0 else 1)


@chart
def side_by_side_chart(table: pd.DataFrame) -> Figure:
    """The users' numbers beside ours, one panel per metric (a ``verdicts.side_by_side`` table)."""
    n = len(table)
    cols = min(4, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig = figure(3.2 * cols, 3.3 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    fig.suptitle("The users' measurements beside ours (green: ours better, orange: worse, hatched: their range)")
    for ax, (_, row) in zip(axes, table.iterrows(), strict=False):
        _side_by_side_panel(ax, row)
    for ax in axes[n:]:
        ax.set_visible(False)
    if not n:
        axes[0].set_visible(True)
        empty(axes[0], "no data")
    return fig


LAYER_COLOURS = {"nginx": "#1b9e77", "redis": "#66a61e", "coalesced": "#e6ab02", "app": "#d95f02",
                 "unknown": NEUTRAL}  # fmt: skip


@chart
def cache_layers(layers: pd.DataFrame, title: str = "Who answered: the share of requests each layer served") -> Figure:
    """Horizontal stacked bars, one per row of :func:`ragperf.measure.metrics.cache_layers` (labelled by its
    ``label`` column if present, else scenario and step), with the p95 of cached and uncached answers."""
    import seaborn as sns

    fig = figure(9, 1.2 + 0.55 * max(1, len(layers)))
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("Share of requests (%)")
    if layers.empty:
        empty(ax, "no requests")
        return fig
    if "label" in layers:
        labels = _unique(layers["label"].astype(str).tolist())
    elif has(layers, "scenario", "step"):
        labels = _unique((layers["scenario"].astype(str) + " " + layers["step"].astype(str)).tolist())
    else:
        labels = _unique([str(i) for i in range(len(layers))])
    left = np.zeros(len(layers))
    for layer, colour in LAYER_COLOURS.items():
        share = np.nan_to_num(floats(layers, f"{layer}_pct"))
        if share.any():
            sns.barplot(x=share, y=labels, order=labels, orient="y", left=left.copy(), color=colour, saturation=1,
                        label=layer, width=0.6, ax=ax)  # fmt: skip
            left += share
    if not left.any():
        empty(ax, "no layer reported")
    for yi, (hit, miss) in enumerate(zip(floats(layers, "hit_p95"), floats(layers, "miss_p95"), strict=True)):
        notes = [f"cached p95 {format_value(hit * 1000, 'ms')}"] if math.isfinite(hit) else []
        notes += [f"uncached p95 {format_value(miss, 's')}"] if math.isfinite(miss) else []
        ax.text(101, yi, "; ".join(notes), va="center", fontsize=8)
    ax.set_yticks(np.arange(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # the first row at the top
    ax.set_xlim(0, 150)
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set(xlabel="Share of requests (%)", ylabel="")
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", fontsize=8, ncols=len(LAYER_COLOURS))
    return fig


@chart
def phase_contributions(table: pd.DataFrame, *, p95_target_s: float, users_target: float) -> Figure:
    """What each phase contributed: p95 at 10 users (all requests, and the cache misses alone) from phase to phase
    on a log scale, each step's change in percent, and the concurrent users each phase held, both beside the plan's
    final targets.

    ``table`` has one row per phase, in order: phase, p95_s, misses_p95_s, users, users_at_least (the ladder held
    every step, so the capacity is a lower bound).
    """
    fig = figure(11, 3.8)
    left, right = fig.subplots(1, 2, width_ratios=(3, 2))
    fig.suptitle("What each phase contributed, against the plan's final targets")
    x = np.arange(len(table))
    names = table["phase"].astype(str).tolist() if len(table) else []
    left.set_title("Response time (p95) at 10 users")
    left.set(xlabel="Phase", ylabel="p95 (s, log scale)")
    right.set_title("Concurrent users held")
    right.set(xlabel="Phase", ylabel=USERS_AXIS)
    p95, misses, users = floats(table, "p95_s"), floats(table, "misses_p95_s"), floats(table, "users")
    if not np.isfinite(p95).any():
        empty(left, "no data")
    else:
        left.set_yscale("log")
        for axis in (left.yaxis.set_major_formatter, left.yaxis.set_minor_formatter):
            axis(FuncFormatter(lambda value, _: f"{value:g}"))
        left.plot(x, p95, color="black", marker="o", label="all requests")
        for xi, value in enumerate(p95):
            if not math.isfinite(value):
                continue
            before = p95[xi - 1] if xi else math.nan
            change = f" ({100.0 * (value - before) / before:+.0f} %)" if math.isfinite(before) and before > 0 else ""
            colour = "black" if not change else BETTER if value < before else WORSE
            left.annotate(format_value(value, "s") + change, (xi, value), textcoords="offset points", xytext=(0, 8),
                          ha="center", fontsize=8, color=colour)  # fmt: skip
        if np.isfinite(misses).any():
            left.plot(x, misses, linestyle="--", color=WORSE, marker="s", label="cache misses alone")
        left.axhline(p95_target_s, color=BETTER, linestyle=":", label=f"target < {p95_target_s:g} s")
        _legend(left, fontsize=8, loc="upper right")
    if not np.isfinite(users).any():
        empty(right, "no data")
    else:
        lower_bounds = table["users_at_least"].fillna(False).astype(bool) if "users_at_least" in table else x < 0
        bars = right.bar(x, np.nan_to_num(users), color=USERS, width=0.6)
        for bar, value, lower in zip(bars, users, lower_bounds, strict=True):
            if lower:
                bar.set_hatch("//")
            if math.isfinite(value):
                right.annotate(("≥ " if lower else "") + f"{value:g}", (bar.get_x() + bar.get_width() / 2, value),
                               textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8)  # fmt: skip
        right.axhline(users_target, color=BETTER, linestyle=":", label=f"target ≥ {users_target:g} users")
        right.set_ylim(0, 1.15 * max(users_target, float(np.nanmax(users))))
        _legend(right, fontsize=8, loc="upper left")
    for ax in (left, right):
        ax.set_xticks(x, names)
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

    steps = records[["scenario", "step"]].drop_duplicates() if has(records, "scenario", "step") else pd.DataFrame()
    options = [(f"{scenario} {step}", (scenario, step)) for scenario, step in steps.itertuples(index=False)]
    image, table = widgets.Image(format="png"), widgets.HTML()

    def show(choice: tuple[str, str]) -> None:
        chosen = records[(records["scenario"] == choice[0]) & (records["step"] == choice[1])]
        image.value = latency_distributions(chosen).png()
        outcomes = chosen["error"].fillna("").replace("", "ok").value_counts().rename("requests")
        table.value = outcomes.to_frame().to_html()

    picker = widgets.Dropdown(options=options, description="step")
    picker.observe(lambda change: show(change["new"]), names="value")
    if options:
        show(options[0][1])
    return widgets.VBox([picker, image, table])
