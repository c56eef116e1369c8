import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.font_manager import font_scalings

from ragperf.measure import charts, compare, comparecharts, metrics, verdicts
from ragperf.measure.metrics import Slo


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
    table = verdicts.side_by_side(metrics.phase_metrics(fixed=fixed))
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
    fig = comparecharts.compare_chart(df)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "Change from the baseline (%)"
    # rows are drawn bottom-up: cache (same), response time (better), success rate (worse)
    assert [to_hex(p.get_facecolor()) for p in ax.patches] == [charts.NEUTRAL, charts.BETTER, charts.WORSE]
    assert ax.patches[1].get_width() == pytest.approx(100 * (3.0 - 9.62) / 9.62)
    _saves(fig, tmp_path)


def test_charts_show_in_a_notebook_without_pyplot(ladder):
    fig = charts.throughput_vs_users(metrics.summarize_steps(ladder))
    png, metadata = fig._repr_png_()  # what IPython displays when no backend is set up, and its alternative text
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and "hroughput" in metadata["alt"]


def test_the_chart_module_leaves_pyplot_alone():
    code = (
        "import sys, ragperf.measure.charts, ragperf.measure.comparecharts, ragperf.measure.compare; "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_step_explorer_redraws_the_chosen_step(ladder):
    box = charts.step_explorer(ladder)
    picker, image, table = box.children
    first = bytes(image.value)
    assert first.startswith(b"\x89PNG") and "ok" in table.value
    picker.value = picker.options[-1][1]
    assert bytes(image.value) != first


# --- the seaborn charts: one theme, distributions, intervals, ratios, no data --------------------------


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _layers() -> pd.DataFrame:
    return pd.DataFrame({"label": ["zipf low", "zipf high"], "nginx_pct": [30.0, 50.0], "redis_pct": [10.0, 20.0],
                         "coalesced_pct": [5.0, 0.0], "app_pct": [55.0, 30.0], "unknown_pct": [0.0, 0.0],
                         "hit_p95": [0.002, np.nan], "miss_p95": [4.0, 3.0]})  # fmt: skip


def _every_chart(ladder: pd.DataFrame) -> dict[str, Figure]:
    steps = metrics.summarize_steps(ladder)
    table = compare.compare(metrics.phase_metrics(fixed=ladder), metrics.phase_metrics(fixed=ladder))
    return {
        "latency": charts.latency_distributions(ladder),
        "percentiles": charts.percentiles_vs_users(steps, Slo(3.0, 85.0), records=ladder),
        "throughput": charts.throughput_vs_users(steps, records=ladder),
        "failures": charts.failures_by_class(steps),
        "side_by_side": charts.side_by_side_chart(verdicts.side_by_side(metrics.phase_metrics(fixed=ladder))),
        "compare": comparecharts.compare_chart(table),
        "compare_steps": comparecharts.compare_steps_chart(table),
        "cache_layers": charts.cache_layers(_layers()),
    }


def test_one_seaborn_theme_dresses_every_chart_and_leaves_matplotlib_as_it_was(ladder, tmp_path):
    import matplotlib as mpl

    before = dict(mpl.rcParams)
    theme = charts.theme()
    assert theme["axes.grid"] is True and theme["axes.labelsize"] == 12  # seaborn's whitegrid, notebook context
    assert list(theme["axes.prop_cycle"].by_key()["color"]) == list(charts.PALETTE)
    assert charts.PALETTE[:3] == (charts.BETTER, charts.WORSE, charts.USERS)
    for name, fig in _every_chart(ladder).items():
        assert fig.theme == theme, name
        fig.axes[0].set_ylim(-1000, 1000)  # more ticks, made when the figure is drawn, outside the chart call
        _saves(fig, tmp_path)
        for ax in (ax for ax in fig.axes if ax.get_visible()):
            assert to_hex(ax.spines["left"].get_edgecolor()) == to_hex(theme["axes.edgecolor"]), name
            assert ax.yaxis.label.get_fontsize() == theme["axes.labelsize"], name
        n = len(fig.axes[0].yaxis.get_ticklabels())
        small = theme["font.size"] * font_scalings["small"]  # what the comparison asks for its many rows
        size = small if name.startswith("compare") else theme["ytick.labelsize"]
        assert [t.get_fontsize() for t in fig.axes[0].yaxis.get_ticklabels()] == pytest.approx([size] * n), name
    assert dict(mpl.rcParams) == before


def test_latency_distributions_draw_a_box_and_an_ecdf_per_step(ladder):
    fig = charts.latency_distributions(ladder)
    ax_box, ax_cdf = fig.axes
    quartiles = ladder.groupby("users_target")["latency_s"].quantile([0.25, 0.75]).unstack()
    boxes = [p.get_path().vertices[:, 1] for p in ax_box.patches]
    assert [v for b in boxes for v in (b.min(), b.max())] == pytest.approx(quartiles.to_numpy().ravel().tolist())
    ecdfs = sorted((ln for ln in ax_cdf.get_lines()), key=lambda ln: np.nanmax(ln.get_xdata()))
    assert len(ecdfs) == 3
    for line, (_, step) in zip(ecdfs, ladder.groupby("users_target"), strict=True):
        y = line.get_ydata()
        assert y[0] == 0 and y[-1] == 100 and np.all(np.diff(y) >= 0)  # percent of requests at or below
        assert np.nanmax(line.get_xdata()) == step["latency_s"].max()
    assert ax_cdf.get_legend().get_title().get_text() == "Concurrent users"


def _interval_segments(ax) -> list[list[np.ndarray]]:
    """The (low, high) ends of each error bar series in ``ax``."""
    return [c.lines[2][0].get_segments() for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_percentiles_carry_bootstrap_intervals_when_given_the_records(ladder):
    ladder = pd.concat([ladder, step_records(40, [1.0] * 30)])  # every request took 1 s: no uncertainty
    steps = metrics.summarize_steps(ladder)
    assert _interval_segments(charts.percentiles_vs_users(steps).axes[0]) == []
    ax = charts.percentiles_vs_users(steps, records=ladder).axes[0]
    assert [ln.get_label() for ln in ax.get_lines()][:3] == ["p50 (median)", "p95", "p99"]
    assert len(_interval_segments(ax)) == 3  # an interval for p50, p95 and p99
    by_users = dict(iter(ladder.groupby("users_target")["latency_s"]))
    for name, segments in zip(("p50", "p95", "p99"), _interval_segments(ax), strict=True):
        assert len(segments) == len(steps)
        for (users, low), (_, high), point in zip(*zip(*segments, strict=True), steps[name], strict=True):
            latency = by_users[users]
            assert latency.min() <= low <= point <= high <= latency.max()
            if users == 40:
                assert low == high == 1.0
            else:
                assert high > low


def test_throughput_carries_a_bootstrap_interval_when_given_the_records(ladder):
    steps = metrics.summarize_steps(ladder)
    assert _interval_segments(charts.throughput_vs_users(steps).axes[0]) == []
    (segments,) = _interval_segments(charts.throughput_vs_users(steps, records=ladder).axes[0])
    for ((_, low), (_, high)), throughput, failures in zip(segments, steps["throughput_rps"], steps["failures"],
                                                           strict=True):  # fmt: skip
        assert low <= throughput <= high
        assert (high > low) == (failures > 0)  # all answered OK: every resample answers all


def _run(values: dict[str, float]) -> dict:
    return {key: {"value": value} for key, value in values.items()}


def test_compare_chart_puts_ratios_on_a_log_axis_the_users_metrics_first(tmp_path):
    baseline = _run({"query_latency_p95": 40.0, "cache_first_median": 8.0, "response_time_10_users": 9.0,
                     "max_concurrent_users": 2, "success_rate_10_users": 40.0})  # fmt: skip
    current = _run({"query_latency_p95": 4.0, "cache_first_median": 8.0, "response_time_10_users": 1.0,
                    "max_concurrent_users": 40, "success_rate_10_users": 20.0})  # fmt: skip
    baseline["steps"] = current["steps"] = [{"scenario": "fixed", "step": "users=10", "p50": 1.0, "p95": 2.0}]
    table = compare.compare(baseline, current).sample(frac=1, random_state=1)  # any row order
    fig = comparecharts.compare_chart(table)
    ax = fig.axes[0]
    assert ax.get_xscale() == "function" and "log scale" in fig.get_suptitle()
    rows = [t.get_text().split("\n")[0] for t in ax.get_yticklabels()]  # top to bottom
    assert rows == ["Success rate at 10 users", "Response time (p95) at 10 users",
                    "Max concurrent users within the SLO", "Query latency test: p95",
                    "Cache test: median first ask"]  # fmt: skip
    assert len(ax.patches) == 5  # the per-step rows are not in the headline
    width = {label: abs(np.diff(ax.transData.transform([(0, 0), (p.get_width(), 0)])[:, 0])[0])
             for label, p in zip(rows[::-1], ax.patches, strict=True)}  # fmt: skip
    decade = width["Query latency test: p95"]  # 40 s -> 4 s
    assert width["Response time (p95) at 10 users"] == pytest.approx(decade * math.log10(9))  # 9x faster
    assert width["Max concurrent users within the SLO"] == pytest.approx(decade * math.log10(20))  # 20x more
    assert width["Cache test: median first ask"] == 0  # 1x: unchanged
    colours = {label: to_hex(p.get_facecolor()) for label, p in zip(rows[::-1], ax.patches, strict=True)}
    assert colours["Response time (p95) at 10 users"] == colours["Max concurrent users within the SLO"] == charts.BETTER
    assert colours["Success rate at 10 users"] == charts.WORSE
    _saves(fig, tmp_path)


def test_compare_steps_chart_holds_the_per_step_rows(tmp_path):
    steps = [{"scenario": "ladder", "step": f"users={u}", "p50": 1.0 * u, "p95": 2.0 * u, "success_rate": 90.0,
              "throughput_rps": 1.0} for u in (5, 10)]  # fmt: skip
    faster = [{**s, "p95": s["p95"] / 10} for s in steps]
    fig = comparecharts.compare_steps_chart(compare.compare({"steps": steps}, {"steps": faster}))
    assert [ax.get_title() for ax in fig.axes] == ["p50 latency", "p95 latency", "Success rate", "Throughput"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["ladder users=5", "ladder users=10"]
    assert all(ax.get_xscale() == "function" for ax in fig.axes)
    assert [to_hex(p.get_facecolor()) for p in fig.axes[1].patches] == [charts.BETTER] * 2
    assert len(comparecharts.compare_chart(compare.compare({"steps": steps}, {"steps": faster})).axes[0].patches) == 0
    _saves(fig, tmp_path)


def test_compare_chart_draws_the_bootstrap_interval_where_the_table_has_one():
    rng = np.random.default_rng(1)
    slow = step_records(10, rng.gamma(4, 2.0, 80), scenario="fixed")
    fast = step_records(10, rng.gamma(4, 0.2, 80), scenario="fixed")
    table = compare.compare(metrics.phase_metrics(fixed=slow), metrics.phase_metrics(fixed=fast), slow, fast,
                            n_boot=200)  # fmt: skip
    ax = comparecharts.compare_chart(table).axes[0]
    ((segment,),) = _interval_segments(ax)  # one row has an interval: the per-step ones are not in the headline
    row = table[table["key"] == "response_time_10_users"].iloc[0]
    assert segment[:, 0] == pytest.approx(100 * np.array([row["ci_low"], row["ci_high"]]) / row["baseline"])


def test_charts_say_no_data_rather_than_raise_on_empty_or_nan_input(ladder, tmp_path):
    nan_records = ladder.assign(latency_s=np.nan)
    nan_steps = metrics.summarize_steps(ladder).assign(p50=np.nan, p95=np.nan, p99=np.nan, success_rate=np.nan,
                                                       throughput_rps=np.nan, request_rps=np.nan)  # fmt: skip
    no_steps = metrics.summarize_steps(ladder.iloc[0:0])
    nan_table = compare.compare(_run({"p95": 0.0}), _run({"p95": 1.0}))  # no ratio from a baseline of 0
    empty = {
        "latency": [charts.latency_distributions(pd.DataFrame()), charts.latency_distributions(nan_records)],
        "percentiles": [charts.percentiles_vs_users(pd.DataFrame(), Slo(3.0, 85.0)),
                        charts.percentiles_vs_users(nan_steps, Slo(3.0, 85.0), records=nan_records)],
        "throughput": [charts.throughput_vs_users(no_steps), charts.throughput_vs_users(nan_steps, records=ladder)],
        "failures": [charts.failures_by_class(pd.DataFrame()), charts.failures_by_class(no_steps)],
        "side_by_side": [charts.side_by_side_chart(pd.DataFrame())],
        "compare": [comparecharts.compare_chart(pd.DataFrame()), comparecharts.compare_chart(compare.compare({}, {}))],
        "compare_steps": [comparecharts.compare_steps_chart(pd.DataFrame()),
                          comparecharts.compare_steps_chart(nan_table)],
        "cache_layers": [charts.cache_layers(pd.DataFrame()),
                         charts.cache_layers(_layers().assign(nginx_pct=np.nan, hit_p95=np.nan))],
    }  # fmt: skip
    for name, figs in empty.items():
        for fig in figs:
            assert any(t.startswith(("no ", "nothing")) for t in _texts(fig)) or name == "cache_layers", name
            assert fig.png()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "no ratio (from 0)" in _texts(comparecharts.compare_chart(nan_table))
    assert charts.step_explorer(pd.DataFrame()).children[0].options == ()
