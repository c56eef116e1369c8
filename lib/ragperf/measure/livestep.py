"""A load step watched while it runs: its timeline second by second, and the chart of it.

The timeline is computed from the request records written so far (each Locust process flushes
them every second), so that it can be redrawn while the step runs: requests are placed at the
second they finished, throughput and errors are counted per second, and p50 / p95 are taken
over a trailing window of finished requests, so that one slow second does not make the line jump.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ragperf.measure.charts import BETTER, USERS, WORSE, chart, empty, figure

BIN_S = 1.0
WINDOW_S = 5.0
TIMELINE_COLUMNS = ["t", "ok_rps", "errors", "p50", "p95", "finished"]


def timeline(records: pd.DataFrame, *, bin_s: float = BIN_S, window_s: float = WINDOW_S) -> pd.DataFrame:
    """One row per ``bin_s`` seconds since the step's first request: ``t`` (the bin's end, seconds), ``ok_rps``
    (OK requests finished in the bin, per second), ``errors`` (failed requests finished in it), ``p50`` and ``p95``
    (seconds, of the requests finished in the trailing ``window_s``; NaN when none) and ``finished`` (so far)."""
    if records is None or records.empty:
        return pd.DataFrame(columns=TIMELINE_COLUMNS, dtype=float)
    start = records["start"].to_numpy(float)
    end = start + records["latency_s"].to_numpy(float) - start.min()
    ok = records["ok"].to_numpy(bool)
    latency = records["latency_s"].to_numpy(float)
    order = np.argsort(end, kind="stable")
    end, ok, latency = end[order], ok[order], latency[order]
    edges = np.arange(bin_s, math.floor(end.max() / bin_s) * bin_s + 2 * bin_s, bin_s)
    # by end time, the requests finished in (a, b] are the slice [finished(a), finished(b)): redrawn every second,
    # the timeline costs a search per bin and the window's own requests, not a pass over every record per bin
    finished = np.searchsorted(end, edges, side="right")
    bin_starts = np.searchsorted(end, edges - bin_s, side="right")
    window_starts = np.searchsorted(end, edges - window_s, side="right")
    ok_so_far = np.concatenate(([0], np.cumsum(ok)))
    rows = []
    for t, lo, low, hi in zip(edges, bin_starts, window_starts, finished, strict=True):
        window = latency[low:hi]
        p50, p95 = np.percentile(window, [50, 95]) if window.size else (math.nan, math.nan)
        ok_in_bin = int(ok_so_far[hi] - ok_so_far[lo])
        rows.append({"t": float(t), "ok_rps": ok_in_bin / bin_s, "errors": float(hi - lo - ok_in_bin),
                     "p50": float(p50), "p95": float(p95), "finished": float(hi)})  # fmt: skip
    return pd.DataFrame(rows, columns=TIMELINE_COLUMNS)


def totals(records: pd.DataFrame) -> dict[str, float]:
    """The step so far in four numbers: requests finished, the share that failed (%), p50 and p95 (seconds)."""
    if records is None or records.empty:
        return {"requests": 0.0, "failed_pct": math.nan, "p50": math.nan, "p95": math.nan}
    latency = records["latency_s"].to_numpy(float)
    p50, p95 = np.percentile(latency, [50, 95])
    failed = 100.0 * float((~records["ok"].to_numpy(bool)).sum()) / len(records)
    return {"requests": float(len(records)), "failed_pct": failed, "p50": float(p50), "p95": float(p95)}


@chart
def live_step(records: pd.DataFrame, *, title: str, duration_s: float | None = None) -> Figure:
    """Throughput, p50 / p95 and errors of a step against the seconds since it started, as far as it got."""
    line = timeline(records)
    fig = figure(9, 5.2)
    ax_rate, ax_latency, ax_errors = fig.subplots(3, 1, sharex=True, height_ratios=(2, 2, 1))
    so_far = totals(records)
    if line.empty:
        for ax in (ax_rate, ax_latency, ax_errors):
            empty(ax, "no request has finished yet")
    else:
        ax_rate.plot(line["t"], line["ok_rps"], color=BETTER, marker=".")
        ax_latency.plot(line["t"], line["p95"], color="black", marker=".", label=f"p95 (last {WINDOW_S:g} s)")
        ax_latency.plot(line["t"], line["p50"], color=USERS, marker=".", label=f"p50 (last {WINDOW_S:g} s)")
        ax_latency.legend(loc="lower right", fontsize="small")
        ax_errors.bar(line["t"], line["errors"], width=0.8 * BIN_S, color=WORSE)
        ax_rate.set_ylim(bottom=0)
        ax_latency.set_ylim(bottom=0)
        ax_errors.set_ylim(0, max(1.0, 1.15 * float(line["errors"].max())))
    ax_rate.set(title="Throughput (answered OK)", ylabel="requests/s")
    ax_latency.set(title="Latency", ylabel="seconds")
    ax_errors.set(title="Failed requests", ylabel="per second", xlabel="Seconds since the step started")
    if duration_s:
        ax_errors.set_xlim(0, max(duration_s, float(line["t"].max()) if not line.empty else 0.0) + BIN_S)
    summary = f"{so_far['requests']:.0f} requests"
    if so_far["requests"]:
        summary += f", {so_far['failed_pct']:.1f} % failed, p50 {so_far['p50']:.2f} s, p95 {so_far['p95']:.2f} s"
    fig.suptitle(f"{title}: {summary}")
    return fig
