"""Undoing a phase later, from its journal alone (``ragperf rollback``), and checking pg_settings name by name."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragperf import lab, runs
from ragperf.core import changes, targetlock
from ragperf.core.changes import ChangeError
from ragperf.core.params import Params
from ragperf.core.target import Target
from ragperf.runs.targets import resolve_target
from ragperf.systems import tuning
from ragperf.systems.postgres import pgsettings

SETTINGS_BEFORE = "settings_before.json"


def save_settings_before(phase_dir: Path, snapshot: Mapping[str, Mapping[str, Any]]) -> Path:
    """Keep pg_settings as they were before the phase's first change (an existing snapshot is kept)."""
    path = phase_dir / SETTINGS_BEFORE
    if not path.exists():
        path.write_text(json.dumps(snapshot, indent=1, sort_keys=True, default=str), encoding="utf-8")
    return path


@dataclass
class Rollback:
    """What ``ragperf rollback`` did: the changes undone and any pg_settings still different."""

    run_id: str
    phase: str
    undone: list[str]
    differences: list[str] | None  # None: the phase kept no pg_settings snapshot (it changed no settings)

    def text(self) -> str:
        lines = [f"{self.phase} of run {self.run_id}: undid {len(self.undone)} change(s)"]
        lines += [f"  - {key}" for key in self.undone]
        if self.differences:
            lines.append("pg_settings still differ from before the phase:")
            lines += [f"  - {d}" for d in self.differences]
        elif self.differences is not None:
            lines.append("pg_settings are identical to the snapshot taken before the phase.")
        return "\n".join(lines)


def rollback_phase(run: runs.Run, phase: str, target: Target, params: Params) -> Rollback:
    """Undo ``phase`` of ``run`` from its journal, then compare pg_settings with the snapshot from before it."""
    out = run.path / phase
    journal = changes.Journal(out)
    if not journal.path.exists():
        raise ChangeError(f"run {run.id} has no {phase}/{changes.JOURNAL}: {phase} changed nothing there")
    kinds = tuning.appliers(target, params, progress=False)
    undone = changes.rollback(journal, kinds)
    differences: list[str] | None = None
    before_path = out / SETTINGS_BEFORE
    if before_path.exists():
        before = json.loads(before_path.read_text(encoding="utf-8"))
        differences = pgsettings.settings_differences(before, kinds[pgsettings.KIND].snapshot())
    return Rollback(run.id, phase, undone, differences)


def rollback_run(run_id: str, phase: str) -> Rollback:
    """:func:`rollback_phase` with the target and parameters the run recorded for the phase."""
    run = runs.open_run(run_id)
    params = Params.model_validate(run.recorded_params(phase))
    return rollback_phase(run, phase, resolve_target(params, bring_up=False, same_profile=False), params)


def outstanding_runs(phase: str) -> list[str]:
    """Runs, newest first, whose ``phase`` journal shows changes not undone."""
    found = []
    for run_id in runs.list_runs():
        journal = changes.Journal(runs.open_run(run_id).path / phase)
        if journal.path.exists() and journal.outstanding():
            found.append(run_id)
    return found


def reset_lab(lab_dir: Path | None = None) -> list[str]:
    """The lab back to the users' untuned state: every phase that worked on it undone from its journal (newest
    first, whichever outputs directory its run is in), then anything no journal records (a run whose journal is
    gone, a change made by hand) by :func:`ragperf.lab.reset_tuning`; returns what was undone."""
    lab_dir = lab_dir or lab.default_lab_dir()
    done: list[str] = []
    with targetlock.held(targetlock.lab_target(lab_dir), command=targetlock.command_line()):
        for path in reversed(lab.registered_journals(lab_dir)):
            journal = changes.Journal(path.parent)
            if not journal.path.exists() or not journal.outstanding():
                continue
            run, phase = runs.Run(path.parent.parent.name, path.parent.parent), path.parent.name
            params = Params.model_validate(run.recorded_params(phase))
            target = resolve_target(params, bring_up=False, same_profile=False, lab_dir=lab_dir)
            undone = rollback_phase(run, phase, target, params).undone
            done += [f"{phase} of run {run.id}: undid {key}" for key in undone]
        return done + lab.reset_tuning(lab_dir)
