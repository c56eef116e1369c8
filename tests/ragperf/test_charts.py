import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from ragperf import charts, compare, metrics
from ragperf.metrics import Slo


def step_records(users, latency_s, failed=0, scenario="ladder") -> pd.DataFrame:
    """One step of synthetic records: ``latency_s`` per request, the last ``failed`` timed out."""
    latency = np.asarray(latency_s, float)
    n = latency.size
    ok = np.arange(n) < n - failed
    return pd.DataFrame({
        "scenario": scenario, "step": f"users={users}", "users_target": users, "worker": "w0",
        "start": 1_000.0 + np.arange(n) * 0.5, "latency_s": latency, "status": np.where(ok, 200, 0), "ok": ok,
        "error": np.where(ok, "", "timeout"), "response_bytes": 100, "cache_status": "", "active_users": users,
        "question_id": np.arange(n), "mode": "fast",
    })  # fmt: skip


@pytest.fixture
def ladder() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.concat([
        step_records(5, rng.gamma(4, 0.25, 60)),
        step_records(10, rng.gamma(4, 0.5, 60), failed=6),
        step_records(25, rng.gamma(4, 2.0, 60), failed=30),
    ])  # fmt: skip


def _labels(fig: Figure) -> list[tuple[str, str, str]]:
    return [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes if ax.get_visible()]


def _saves(fig: Figure, tmp_path) -> None:
    path = charts.save(fig, tmp_path / "charts" / "chart.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000


def test_latency_distributions(ladder, tmp_path):
    fig = charts.latency_distributions(ladder)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    (_, x1, y1), (_, x2, y2) = _labels(fig)
    assert (x1, y1) == ("Concurrent users", "Latency (s)") and x2 == "Latency (s)" and "(%)" in y2
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["5", "10", "25"]
    _saves(fig, tmp_path)


def test_percentiles_vs_users_marks_the_steps_that_broke_the_slo(ladder, tmp_path):
    steps = metrics.summarize_steps(ladder)
    slo = Slo(p95_s=3.0, success_rate_pct=85.0)
    fig = charts.percentiles_vs_users(steps, slo)
    assert [y for _, _, y in _labels(fig)] == ["Latency (s)", "Success rate (%)"]
    assert fig.axes[0].get_lines()[0].get_ydata().tolist() == pytest.approx(steps["p50"].tolist())
    slo_line = [ln for ln in fig.axes[0].get_lines() if "SLO" in ln.get_label()][0]
    assert slo_line.get_ydata()[0] == 3.0
    # 5 users held; 10 (90 %, p95 < 3 s?) and 25 (50 %) judged by holds():
    expected = [charts.BETTER if metrics.holds(r, slo) else charts.WORSE for _, r in steps.iterrows()]
    colours = [to_hex(c) for c in fig.axes[0].collections[0].get_facecolors()]
    assert colours == expected and expected[0] == charts.BETTER and expected[-1] == charts.WORSE
    _saves(fig, tmp_path)


def test_throughput_vs_users(ladder, tmp_path):
    steps = metrics.summarize_steps(ladder)
    fig = charts.throughput_vs_users(steps)
    assert _labels(fig)[0][1:] == ("Concurrent users", "Throughput (requests/s)")
    assert fig.axes[0].get_lines()[0].get_ydata().tolist() == pytest.approx(steps["throughput_rps"].tolist())
    _saves(fig, tmp_path)


def test_failures_by_class_stacks_the_counts(ladder, tmp_path):
    ladder = ladder.reset_index(drop=True)
    ladder.loc[ladder.index[-10:], "error"] = "http_5xx"  # 10 of the 30 failures at 25 users
    fig = charts.failures_by_class(metrics.summarize_steps(ladder))
    assert _labels(fig)[0][2] == "Failed requests (count)"
    bars = [(p.get_y(), p.get_height()) for p in fig.axes[0].patches]
    assert bars == [(0, 0), (0, 6), (0, 20), (0, 0), (6, 0), (20, 10)]  # timeouts, then 5xx stacked on top
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["timeout", "http 5xx"]
    _saves(fig, tmp_path)


def test_side_by_side_chart_colours_ours_by_direction(ladder, tmp_path):
    fixed = pd.concat([step_records(5, [1.0] * 20, scenario="fixed"), step_records(10, [12.0] * 20, scenario="fixed")])
    table = metrics.side_by_side(metrics.phase_metrics(fixed=fixed))
    fig = charts.side_by_side_chart(table)
    panels = {ax.get_title().replace("\n", " "): ax for ax in fig.axes if ax.get_visible()}
    assert len(panels) == 7
    ours = {title: to_hex(ax.patches[-1].get_facecolor()) for title, ax in panels.items() if ax.patches}
    assert ours["Response time (p95) at 5 users"] == charts.BETTER  # 1 s < 3.87 s
    assert ours["Response time (p95) at 10 users"] == charts.WORSE  # 12 s > 9.62 s
    assert panels["Response time (p95) at 5 users"].get_ylabel() == "Time (s)"
    _saves(fig, tmp_path)


def test_compare_chart_colours_by_call(tmp_path):
    baseline = {"response_time_10_users": {"value": 9.62}, "success_rate_10_users": {"value": 36.7},
                "cache_speedup": {"value": 1.24}}  # fmt: skip
    current = {"response_time_10_users": {"value": 3.0}, "success_rate_10_users": {"value": 30.0},
               "cache_speedup": {"value": 1.24}}  # fmt: skip
    df = compare.compare(baseline, current)
    fig = charts.compare_chart(df)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Change from the baseline (%)"
    # rows are drawn bottom-up: cache (same), response time (better), success rate (worse)
    assert [to_hex(p.get_facecolor()) for p in ax.patches] == [charts.NEUTRAL, charts.BETTER, charts.WORSE]
    assert ax.patches[1].get_width() == pytest.approx(100 * (3.0 - 9.62) / 9.62)
    _saves(fig, tmp_path)


def test_charts_show_in_a_notebook_without_pyplot(ladder):
    fig = charts.throughput_vs_users(metrics.summarize_steps(ladder))
    assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"  # what IPython displays when no backend is set up


def test_the_chart_module_leaves_pyplot_alone():
    code = "import sys, ragperf.charts, ragperf.compare; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_step_explorer_redraws_the_chosen_step(ladder):
    box = charts.step_explorer(ladder)
    picker, image, table = box.children
    first = bytes(image.value)
    assert first.startswith(b"\x89PNG") and "ok" in table.value
    picker.value = picker.options[-1][1]
    assert bytes(image.value) != first
