"""Runs whose journals show changes not undone, found from the journals alone; the settings snapshot kept once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragperf import runs
from ragperf.core.changes import Change, Journal
from ragperf.runs.rollback import SETTINGS_BEFORE, Rollback, outstanding_runs, save_settings_before


@pytest.fixture(autouse=True)
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "outputs"
    monkeypatch.setenv("RAGPERF_OUTPUTS", str(path))
    return path


def _change(name: str = "work_mem") -> Change:
    return Change("setting", name, "4MB", "64MB", "sorts spill to disk")


def _journal(run_id: str, phase: str, *events: tuple[str, Change]) -> runs.Run:
    run = runs.new_run("smoke", run_id=run_id)
    journal = Journal(run.path / phase)
    for event, change in events:
        journal.write(event, change)
    return run


def test_only_runs_with_changes_not_undone_are_outstanding():
    work_mem, ef = _change(), _change("hnsw.ef_search")
    _journal("undone", "phase1", ("applying", work_mem), ("applied", work_mem), ("undone", work_mem))
    _journal("applied", "phase1", ("applying", work_mem), ("applied", work_mem))
    _journal("half", "phase1", ("applied", work_mem), ("undone", work_mem), ("applying", ef))  # crashed mid-apply
    _journal("other-phase", "phase2", ("applied", work_mem))
    runs.new_run("smoke", run_id="no-journal")
    assert sorted(outstanding_runs("phase1")) == ["applied", "half"]
    assert outstanding_runs("phase2") == ["other-phase"]
    assert outstanding_runs("phase3") == []


def test_reapplied_after_an_undo_is_outstanding_again():
    work_mem = _change()
    _journal("again", "phase1", ("applied", work_mem), ("undone", work_mem), ("applied", work_mem))
    assert outstanding_runs("phase1") == ["again"]


def test_no_outputs_no_outstanding_runs():
    assert outstanding_runs("phase1") == []


def test_the_settings_snapshot_from_before_the_first_change_is_kept(tmp_path: Path):
    first = {"work_mem": {"setting": "4096", "unit": "kB"}}
    path = save_settings_before(tmp_path, first)
    assert path == tmp_path / SETTINGS_BEFORE
    save_settings_before(tmp_path, {"work_mem": {"setting": "65536", "unit": "kB"}})  # a later group's snapshot
    assert json.loads(path.read_text()) == first


def test_the_rollback_text_says_what_was_undone_and_whether_settings_came_back():
    same = Rollback("r1", "phase1", ["setting:work_mem"], [])
    assert same.text().splitlines() == [
        "phase1 of run r1: undid 1 change(s)",
        "  - setting:work_mem",
        "pg_settings are identical to the snapshot taken before the phase.",
    ]
    differ = Rollback("r1", "phase1", [], ["work_mem: 64MB, was 4MB"]).text()
    assert "pg_settings still differ from before the phase:\n  - work_mem: 64MB, was 4MB" in differ
    assert Rollback("r1", "phase2", [], None).text() == "phase2 of run r1: undid 0 change(s)"
