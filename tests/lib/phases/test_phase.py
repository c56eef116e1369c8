"""What a phase compares itself with: the baseline asked for, this run's own phase, else the newest run's; and a
phase not measured anywhere is a note, not an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragperf import runs
from ragperf.core import params
from ragperf.core.target import Target
from ragperf.measure import metrics
from ragperf.phases.phase import PhaseContext, baseline_ref, comparisons


@pytest.fixture(autouse=True)
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "outputs"
    monkeypatch.setenv("RAGPERF_OUTPUTS", str(path))
    return path


def _measured(run: runs.Run, phase: str, p95_s: float) -> None:
    data = {"schema": metrics.SCHEMA, "response_time_10_users": p95_s, "success_rate_10_users": 50.0}
    metrics.write_metrics_json(run.phase_dir(phase) / "metrics.json", data)


def _context(run: runs.Run, phase: str = "phase1") -> PhaseContext:
    return PhaseContext(phase, params.load("smoke", "lab"), run, run.path / phase, Target("lab", "http://127.0.0.1:1"))


def test_the_baseline_asked_for_wins():
    run = runs.new_run("smoke", run_id="current")
    _measured(run, "phase0", 9.6)
    assert baseline_ref(_context(run), "older:phase0", "phase0") == "older:phase0"


def test_this_runs_own_phase_comes_before_any_other_run():
    run = runs.new_run("smoke", run_id="current")
    _measured(run, "phase0", 9.6)
    assert baseline_ref(_context(run), "", "phase0") == "current:phase0"


def test_without_it_the_newest_run_that_has_the_phase_is_meant():
    run = runs.new_run("smoke", run_id="current")
    run.phase_dir("phase0")  # a directory, but nothing measured there
    assert baseline_ref(_context(run), "", "phase0") == "phase0"


def test_comparisons_give_a_table_per_pair_and_a_note_for_a_phase_not_measured():
    old, new = runs.new_run("smoke", run_id="before"), runs.new_run("smoke", run_id="after")
    _measured(old, "phase0", 9.6)
    _measured(new, "phase1", 4.8)
    tables, notes = comparisons([("before:phase0", "after:phase1"), ("before:phase0", "after:phase2")])
    assert list(tables) == ["before:phase0 → after:phase1"]
    table = tables["before:phase0 → after:phase1"].set_index("key")
    assert table.loc["response_time_10_users", "baseline"] == 9.6
    assert table.loc["response_time_10_users", "current"] == 4.8
    assert table.loc["response_time_10_users", "direction"] == "better"  # lower is better for a p95
    assert notes == ["no comparison before:phase0 → after:phase2: run after has no phase2/metrics.json"]


def test_a_phase_no_run_has_measured_is_a_note_naming_the_outputs(outputs: Path):
    runs.new_run("smoke", run_id="only")
    tables, notes = comparisons([("phase0", "phase1")])
    assert tables == {}
    assert notes == [f"no comparison phase0 → phase1: no run in {outputs} has phase0/metrics.json"]
