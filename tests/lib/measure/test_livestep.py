"""The live view of a step: its timeline second by second and the chart drawn from records so far."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ragperf.measure import charts, livestep
from ragperf.measure.loadgen import engine


def _records(rows: list[tuple[float, float, bool]]) -> pd.DataFrame:
    """Records of (start offset, latency, ok), the first starting at t0."""
    t0 = 1.7e9
    return engine.records_frame(
        {"scenario": "workbench", "step": "step-1", "users_target": 2, "worker": "w", "start": t0 + start,
         "latency_s": latency, "status": 200 if ok else 0, "ok": ok, "error": "" if ok else "timeout",
         "response_bytes": 10, "cache_status": "", "shared_cache_status": "", "active_users": 2, "question_id": 1,
         "mode": "fast"}
        for start, latency, ok in rows
    )  # fmt: skip


def test_requests_are_counted_in_the_second_they_finished():
    line = livestep.timeline(_records([(0.0, 0.5, True), (0.2, 1.0, True), (0.3, 1.2, False), (1.5, 0.2, True)]))
    assert line["t"].tolist() == [1.0, 2.0]
    assert line["ok_rps"].tolist() == [1.0, 2.0]  # 0.5 in the first second; 1.2 and 1.7 in the second
    assert line["errors"].tolist() == [0.0, 1.0]  # finished at 1.5
    assert line["finished"].tolist() == [1.0, 4.0]


def test_percentiles_are_over_the_trailing_window():
    rows = [(float(i), 0.1, True) for i in range(10)] + [(9.0, 5.0, True)]
    line = livestep.timeline(_records(rows), window_s=3.0)
    early, late = line.iloc[2], line.iloc[-1]
    assert early["p50"] == 0.1 and early["p95"] == 0.1
    assert late["p95"] > 1.0  # the slow request is within the last 3 s
    far = livestep.timeline(_records(rows + [(30.0, 0.1, True)]), window_s=3.0)
    assert math.isnan(far.loc[far["t"] == 20.0, "p95"].iloc[0])  # nothing finished in (17, 20]


def test_totals_and_an_empty_step():
    rows = [(0.0, 1.0, True), (0.0, 3.0, False)]
    now = livestep.totals(_records(rows))
    assert now["requests"] == 2 and now["failed_pct"] == 50.0
    assert now["p95"] == np.percentile([1.0, 3.0], 95)
    assert livestep.timeline(engine.empty_records()).empty
    assert livestep.totals(engine.empty_records())["requests"] == 0


def test_the_chart_says_in_its_title_how_far_the_step_got():
    fig = livestep.live_step(_records([(0.0, 0.5, True), (0.5, 0.7, False)]), title="step 1 (running)",
                             duration_s=30)  # fmt: skip
    text = charts.alt_text(fig)
    assert "step 1 (running): 2 requests, 50.0 % failed" in text
    assert "Throughput" in text and "Latency" in text and "Failed requests" in text
    assert fig.axes[-1].get_xlim()[1] >= 30
    assert fig.png().startswith(b"\x89PNG")
    empty = livestep.live_step(engine.empty_records(), title="No step yet")
    assert "0 requests" in charts.alt_text(empty)
