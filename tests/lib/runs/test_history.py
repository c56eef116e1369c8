"""History across runs and the regression gate, on fake runs in a temporary outputs directory."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from ragperf import cli, runs
from ragperf.measure import charts, metrics
from ragperf.measure.loadgen.engine import records_frame
from ragperf.runs import history

START = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGPERF_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("RAGPERF_PGPASSWORD", raising=False)
    return tmp_path / "outputs"


def _records(latencies: np.ndarray, users: int = 10) -> pd.DataFrame:
    """One fixed-concurrency step of OK requests, 0.05 s apart."""
    rows = [{"scenario": "fixed", "step": f"users={users}", "users_target": users, "worker": "w0",
             "start": 1_000.0 + 0.05 * i, "latency_s": float(latency), "status": 200, "ok": True, "error": "",
             "response_bytes": 100, "cache_status": "", "shared_cache_status": "", "active_users": users,
             "question_id": i, "mode": "fast"} for i, latency in enumerate(latencies)]  # fmt: skip
    return records_frame(rows)


def _make_run(monkeypatch, day: int, revision: str, phases: dict, *, duration_s: int = 30) -> runs.Run:
    """A run made on START + ``day`` days at ``revision``; ``phases`` maps a phase to its metrics.json dict, or to
    (metrics, records) to also write requests.parquet."""
    when = START + timedelta(days=day)
    monkeypatch.setattr(runs, "_utc_now", lambda: when)
    git = {"revision": revision * 5, "short": revision, "dirty": revision.endswith("-dirty")}
    monkeypatch.setattr(runs, "git_revision", lambda directory=None: git)  # and no git command is run
    run = runs.new_run("smoke")
    for phase, content in phases.items():
        result, records = content if isinstance(content, tuple) else (content, None)
        directory = run.phase_dir(phase)
        metrics.write_metrics_json(directory / "metrics.json", result)
        if records is not None:
            records.to_parquet(directory / "requests.parquet")
        params = {"profile": "smoke", "target": {"kind": "lab"}, "target_name": "lab",
                  "load": {"fixed_duration_s": duration_s, "users": [5, 10]}}  # fmt: skip
        runs.write_manifest(run, params, phase=phase)
    return run


def _measured(latencies: np.ndarray, phase: str = "phase4") -> tuple[dict, pd.DataFrame]:
    frame = _records(latencies)
    return metrics.phase_metrics(fixed=frame, phase=phase), frame


def _simple(p95: float, users: float, phase: str = "phase4") -> dict:
    return {"schema": metrics.SCHEMA, "phase": phase, "response_time_10_users": {"value": p95, "unit": "s"},
            "success_rate_10_users": {"value": 99.0, "unit": "%"},
            "max_concurrent_users": {"value": users, "unit": "users"}}  # fmt: skip


@pytest.fixture
def three_runs(outputs, monkeypatch):
    """Three nightly runs, made out of order: phase4 gets faster, phase0 only in the first two."""
    second = _make_run(monkeypatch, 1, "bbbbbbb", {"phase0": _simple(9.0, 5, "phase0"), "phase4": _simple(2.0, 60)})
    third = _make_run(monkeypatch, 2, "ccccccc-dirty", {"phase4": _simple(1.2, 120)}, duration_s=60)
    first = _make_run(monkeypatch, 0, "aaaaaaa", {"phase0": _simple(9.5, 5, "phase0"), "phase4": _simple(3.0, 40)})
    return first, second, third


def test_history_is_oldest_first_with_revisions_and_the_values(three_runs):
    first, second, third = three_runs
    table = history.history()
    assert list(table["run"]) == [first.id, first.id, second.id, second.id, third.id]
    assert list(table["phase"]) == ["phase0", "phase4", "phase0", "phase4", "phase4"]
    assert list(table["revision"]) == ["aaaaaaa", "aaaaaaa", "bbbbbbb", "bbbbbbb", "ccccccc-dirty"]
    assert table["when"].is_monotonic_increasing and str(table["when"].dt.tz) == "UTC"
    assert table["when"].iloc[-1] == pd.Timestamp(START + timedelta(days=2))
    assert list(table["response_time_10_users"]) == [9.5, 3.0, 9.0, 2.0, 1.2]
    assert list(table["max_concurrent_users"]) == [5, 40, 5, 60, 120]
    assert set(table["target"]) == {"lab"} and set(table["profile"]) == {"smoke"}
    # the metrics no run measured are left out by default
    assert "cache_speedup" not in table and "success_rate_10_users" in table
    assert table["params_file"].iloc[0] == str(first.path / "phase0" / "params.yaml")
    # the one parameter that differs between the runs of phase4 is named; phase0's runs differ in none
    assert list(table["params"]) == ["smoke", "smoke, load.fixed_duration_s=30", "smoke",
                                     "smoke, load.fixed_duration_s=30", "smoke, load.fixed_duration_s=60"]  # fmt: skip


def test_history_of_one_phase_and_chosen_metrics(three_runs):
    _, _, third = three_runs
    table = history.history("phase4", ["max_concurrent_users", "response_time_10_users"])
    assert list(table["phase"]) == ["phase4"] * 3 and table["run"].iloc[-1] == third.id
    assert list(table.columns[-2:]) == ["max_concurrent_users", "response_time_10_users"]
    assert list(table["max_concurrent_users"]) == [40, 60, 120]
    assert history.history("phase9").empty


def test_an_unknown_metric_or_a_bad_phase_is_an_error_naming_what_is_allowed(three_runs):
    with pytest.raises(history.HistoryError, match=r"unknown metric 'p96': known are query_latency_test, .*\bp95\b"):
        history.history(metrics=["p96"])
    with pytest.raises(history.HistoryError, match="bad phase 'run-1:phase4': give a phase name such as phase0"):
        history.history("run-1:phase4")
    assert issubclass(history.HistoryError, runs.RunError)


def test_no_runs_is_an_empty_table_with_the_columns(outputs):
    table = history.history()
    assert table.empty and list(table.columns[:3]) == ["run", "phase", "when"]
    assert list(table.columns[len(history.BASE_COLUMNS) :]) == list(metrics.USERS_KEYS)


def test_the_text_is_a_fixed_width_table_with_units(three_runs):
    first, _, third = three_runs
    text = history.history_text(history.history("phase4"))
    lines = text.splitlines()
    assert lines[0] == "History of 3 runs (2026-03-01 02:00 → 2026-03-03 02:00 UTC), phase4, oldest first"
    assert lines[1].split()[:3] == ["when", "(UTC)", "run"] and "response_time_10_users" in lines[1]
    assert set(lines[2]) <= {"-", " "}
    cells = [re.split(r"\s{2,}", line) for line in lines[3:6]]
    assert cells[0] == ["2026-03-01 02:00", first.id, "phase4", "aaaaaaa", "smoke, load.fixed_duration_s=30",
                        "99.0 %", "3 s", "40 users"]  # fmt: skip
    assert cells[2][1] == third.id and cells[2][-2:] == ["1.2 s", "120 users"]
    assert len({len(line) for line in lines[1:3]}) == 1  # the header lines up with its rule
    assert "  response_time_10_users: Response time (p95) at 10 users (s)" in text


def test_the_chart_has_a_panel_per_metric_targets_and_words(three_runs):
    table = history.history()
    fig = history.history_chart(table)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(history.metric_columns(table)) == 3
    alt = charts.alt_text(fig)
    assert alt.startswith("History of 3 runs (2026-03-01 02:00 → 2026-03-03 02:00 UTC)")
    assert "Response time (p95) at 10 users; Time (s) against Run (git revision, date UTC)" in alt
    response = next(ax for ax in panels if ax.get_title().startswith("Response time"))
    dashed = [line for line in response.get_lines() if line.get_linestyle() == "--"]
    assert [line.get_ydata()[0] for line in dashed] == [1.5]  # the plan's final target, p95 < 1.5 s
    phase4 = next(line for line in response.get_lines() if line.get_label() == "phase4")
    assert list(phase4.get_ydata()) == [3.0, 2.0, 1.2] and list(phase4.get_xdata()) == [0, 1, 2]
    assert [t.get_text() for t in response.get_xticklabels()][2] == "ccccccc-dirty\n03-03 02:00"
    assert fig.png().startswith(b"\x89PNG")


def test_the_chart_of_one_run_with_gaps_still_draws(outputs, monkeypatch):
    _make_run(monkeypatch, 0, "aaaaaaa", {"phase4": _simple(2.0, float("nan"))})
    table = history.history(metrics=["response_time_10_users", "max_concurrent_users", "cache_speedup"])
    fig = history.history_chart(table)
    assert charts.alt_text(fig).startswith("History of 1 run (2026-03-01 02:00 UTC)")
    empty_panels = [ax for ax in fig.axes if any(t.get_text() == "no data" for t in ax.texts)]
    assert len(empty_panels) == 2  # capacity and cache speed-up were not measured
    assert len(fig.png()) > 10_000


def test_the_cli_prints_the_history_and_writes_the_chart_and_csv(three_runs, outputs, tmp_path, capsys):
    _, _, third = three_runs
    assert cli.main(["history", "--phase", "phase4", "--metric", "response_time_10_users", "--csv",
                     str(tmp_path / "h.csv")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert third.id in out and "1.2 s" in out and f"chart: {outputs / 'history.png'}" in out
    assert (outputs / "history.png").read_bytes().startswith(b"\x89PNG")
    saved = pd.read_csv(tmp_path / "h.csv")
    assert list(saved["response_time_10_users"]) == [3.0, 2.0, 1.2]
    assert "max_concurrent_users" not in saved
    chart = tmp_path / "elsewhere" / "trend.png"
    assert cli.main(["history", "--chart", str(chart)]) == 0 and chart.stat().st_size > 10_000


def test_the_cli_says_when_there_is_no_run(outputs, capsys):
    assert cli.main(["history"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ragperf: no runs in {outputs}: run `ragperf run all` first") and "\n" not in err
    assert cli.main(["history", "--metric", "p96"]) == 2
    assert "unknown metric 'p96'" in capsys.readouterr().err


# --- the gate ------------------------------------------------------------------------------------------


@pytest.fixture
def latency_runs(outputs, monkeypatch):
    """A baseline, a run drawn from the same latency distribution, and one twice as slow (seeded)."""
    rng = np.random.default_rng(42)
    base = _make_run(monkeypatch, 0, "aaaaaaa", {"phase4": _measured(rng.lognormal(0.0, 0.4, 400))})
    same = _make_run(monkeypatch, 1, "bbbbbbb", {"phase4": _measured(rng.lognormal(0.0, 0.4, 400))})
    slow = _make_run(monkeypatch, 2, "ccccccc", {"phase4": _measured(2.0 * rng.lognormal(0.0, 0.4, 400))})
    return base, same, slow


def test_the_same_distribution_passes_the_gate(latency_runs, capsys):
    base, same, _ = latency_runs
    gate = history.check(f"{base.id}:phase4", f"{same.id}:phase4")
    assert gate.ok and gate.regressions.empty and gate.heading == f"{base.id}:phase4 → {same.id}:phase4"
    gated = gate.table[gate.table["gated"]]
    assert "count" not in set(gated["unit"]) and {"p95", "response_time_10_users"} <= set(gated["key"])
    assert gate.text().startswith(f"no regression beyond noise: {gate.compared} metrics compared")
    assert cli.main(["check", "--baseline", f"{base.id}:phase4", "--current", f"{same.id}:phase4"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == gate.heading


def test_twice_as_slow_fails_the_gate_naming_p95(latency_runs, capsys):
    base, _, slow = latency_runs
    gate = history.check(f"{base.id}:phase4", "phase4")  # the newest run with phase4
    assert not gate.ok and gate.heading.endswith(f"{slow.id}:phase4")
    assert {"p95", "p50", "response_time_10_users", "throughput_rps"} <= set(gate.regressions["key"])
    assert (gate.regressions["ci_low"].dropna() > 0).all()
    text = gate.text()
    assert text.splitlines()[0].startswith(f"{len(gate.regressions)} regressions beyond noise and the 10 % tolerance")
    assert "- p95 latency (fixed users=10): " in text and "95 % interval of the change +" in text
    assert cli.main(["check", "--baseline", f"{base.id}:phase4", "--current", "phase4", "--metric", "p95"]) == 1
    out = capsys.readouterr().out
    assert "2 regressions" not in out and "1 regression beyond noise" in out and "p95 latency (fixed users=10)" in out


def test_a_worse_change_within_the_tolerance_or_in_a_count_does_not_fail(outputs, monkeypatch):
    base = _make_run(monkeypatch, 0, "aaaaaaa", {"phase4": {**_simple(2.0, 100), "failures": {"value": 1}}})
    cur = _make_run(monkeypatch, 1, "bbbbbbb", {"phase4": {**_simple(2.1, 100), "failures": {"value": 9}}})
    gate = history.check(f"{base.id}:phase4", f"{cur.id}:phase4")
    assert gate.ok, gate.text()  # p95 +5 % is within 10 %; failures is a count, not gated
    worse = set(gate.table.loc[gate.table["call"] == "worse", "key"])
    assert worse == {"response_time_10_users", "failures"}
    strict = history.check(f"{base.id}:phase4", f"{cur.id}:phase4", tolerance_pct=4)
    assert list(strict.regressions["key"]) == ["response_time_10_users"]
    named = history.check(f"{base.id}:phase4", f"{cur.id}:phase4", metrics=["failures"])
    assert list(named.regressions["key"]) == ["failures"]  # a count named explicitly is gated


def test_gate_errors_exit_2_with_one_line(latency_runs, outputs, capsys):
    base, _, _ = latency_runs
    cases = {
        ("no-such-run:phase4", "phase4"): "no run no-such-run",
        (f"{base.id}:phase9", "phase4"): f"run {base.id} has no phase9/metrics.json",
        ("phase4", "phase4"): "baseline and current are the same phase",
        (f"{base.id}:", "phase4"): "bad reference",
    }
    for (baseline, current), message in cases.items():
        assert cli.main(["check", "--baseline", baseline, "--current", current]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("ragperf: ") and message in err and "\n" not in err, err
        assert "not one of ragperf's own errors" not in err
    assert cli.main(["check", "--baseline", f"{base.id}:phase4", "--current", "phase4", "--metric", "p96"]) == 2
    assert "unknown metric 'p96'" in capsys.readouterr().err
    with pytest.raises(history.HistoryError, match="bad tolerance"):
        history.check(f"{base.id}:phase4", "phase4", tolerance_pct=-1)
