"""The workbench: load steps started, watched and stopped from JupyterLab; knobs turned through the change model.

A :class:`Workbench` works on one target, as a phase does: the lab (brought up when it is not) or the
deployment of the parameters. It runs one load step at a time in a background thread, so the kernel
stays free while the step runs; :meth:`Workbench.snapshot` reads the request records written so far
(each Locust process flushes them every second). The knobs that change the target, hnsw.ef_search of
the app's role and the caching tier of Phase 2, are changes like a phase's: planned, journaled in the
session's ``journal.jsonl`` (registered with the lab, so ``ragperf lab reset`` undoes them too), and
undone newest first from the panel. The target is held (one run per target) while a step runs or a
knob turns, never in between, so a scheduled run is not locked out by an open notebook.

Each session keeps its steps in ``<outputs>/workbench/<UTC time>-<revision>/step-<n>/``, outside the runs,
so that ``ragperf report`` and ``ragperf history`` keep to the phases.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ragperf import lab, runs
from ragperf.core import changes, targetlock
from ragperf.core.changes import Applier, Change
from ragperf.core.redact import install_log_filter
from ragperf.measure import compare, livestep, verdicts
from ragperf.measure.loadgen import LoadResult, engine, run_load
from ragperf.measure.workload import MODES, WorkItem
from ragperf.phases import phase
from ragperf.runs import targets
from ragperf.systems import cachetier, tuning
from ragperf.systems.postgres import access, roles

log = logging.getLogger(__name__)

WORKLOADS = {
    "zipf": "the phases' concurrent stream: popular questions asked often (warms a cache)",
    "in order": "the query latency test's questions, in order, each once per cycle",
    "fresh": "questions no phase asks: every one a cache miss, the first time",
}
AS_ASKED = "as asked"  # keep each question's own mode
STEP_MODES = (AS_ASKED, *MODES)
EF_SEARCH_RANGE = (1, 1000)  # pgvector's bounds of hnsw.ef_search
MAX_USERS = 2000
MAX_DURATION_S = 3600.0
SCENARIO = "workbench"
COMPARED = ("step", "compared")  # the (scenario, step) both sides of a comparison are relabelled to


class WorkbenchError(RuntimeError):
    """The workbench cannot do what was asked; the message says why and what is allowed."""


@dataclass
class Step:
    """One load step of the session: what was asked, what the target was like, and what it measured."""

    number: int
    users: int
    duration_s: float
    mode: str
    workload: str
    through: str  # the URL the step's requests went to
    knobs: dict[str, str]  # the knobs as they were when the step started
    out: Path
    result: LoadResult | None = None
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def name(self) -> str:
        return f"step {self.number}"

    @property
    def label(self) -> str:
        knobs = ", ".join(f"{k} {v}" for k, v in self.knobs.items())
        return f"{self.name}: {self.users} users, {self.duration_s:g} s, {self.workload}, {self.mode}" + (
            f" ({knobs})" if knobs else ""
        )

    @property
    def state(self) -> str:
        """running, done, stopped (early, from the panel) or what went wrong."""
        if not self.done.is_set():
            return "running"
        return self.error or ("stopped" if self.result is not None and self.result.stopped else "done")

    def records(self) -> pd.DataFrame:
        """Its request records: all of them once it ended, else those written so far."""
        if self.result is not None:
            return self.result.records
        return engine.live_records(self.out / "records")


@dataclass
class Knob:
    """A knob turned from the workbench: the changes it made, for undo."""

    name: str
    value: str
    applied: list[tuple[Applier, list[Change]]]

    @property
    def label(self) -> str:
        return f"{self.name} {self.value}"


def _check_step(users: Any, duration_s: Any, mode: str, workload: str) -> None:
    changes.check_int("users", users, 1, MAX_USERS)
    if isinstance(duration_s, bool) or not isinstance(duration_s, int | float) or not 1 <= duration_s <= MAX_DURATION_S:
        raise WorkbenchError(
            f"duration_s: must be a number of seconds from 1 to {MAX_DURATION_S:g}, not {duration_s!r}"
        )
    if mode not in STEP_MODES:
        raise WorkbenchError(f"mode {mode!r} is not allowed: use one of {', '.join(STEP_MODES)}")
    if workload not in WORKLOADS:
        raise WorkbenchError(f"workload {workload!r} is not allowed: use one of {', '.join(WORKLOADS)}")


def _with_mode(items: Iterable[WorkItem], mode: str) -> list[WorkItem]:
    return list(items) if mode == AS_ASKED else [WorkItem(i.question, mode, i.id) for i in items]


def session_dir(root: Path | None = None) -> Path:
    """A new session directory, ``<outputs>/workbench/<UTC time>-<revision>`` (``-2``... when taken)."""
    base = (root or runs.outputs_dir()) / "workbench"
    base.mkdir(parents=True, exist_ok=True)
    return base / runs.make_unique(base, f"{datetime.now(UTC).strftime(runs.TIMESTAMP_FORMAT)}-"
                                         f"{runs.git_revision()['short']}")  # fmt: skip


class Workbench:
    """Load steps and knobs on one target (see the module's docstring)."""

    def __init__(self, profile: str = "smoke", target: str = "lab", params_files: Sequence[str] = ()) -> None:
        self.params = phase.load_params(profile, target, params_files)
        self.target_name = target
        self.target = targets.resolve_target(self.params)
        install_log_filter([self.target.lab_dir / "secrets.json"] if self.target.lab_dir else [])
        self.app_url = self.target.base_url
        self.url = self.app_url  # where steps go: the app, or the caching tier in front of it
        self.lock = targetlock.params_target(self.params, lab.default_lab_dir())
        self.out = session_dir()
        self.journal = changes.Journal(self.out)
        if self.target.lab_dir is not None:
            lab.register_journal(self.target.lab_dir, self.journal.path)
        self.appliers = tuning.appliers(self.target, self.params, progress=False)
        ctx = phase.PhaseContext(SCENARIO, self.params, runs.Run(self.out.name, self.out), self.out, self.target)
        self.workloads = phase.workloads(ctx)
        self.steps: list[Step] = []
        self.knobs: list[Knob] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- load steps ---------------------------------------------------------------------------

    @property
    def running(self) -> Step | None:
        """The step running now, if any."""
        return self.steps[-1] if self.steps and not self.steps[-1].done.is_set() else None

    def start(self, users: int, duration_s: float, mode: str = AS_ASKED, workload: str = "zipf") -> Step:
        """Start a step in the background and return at once; one step at a time."""
        _check_step(users, duration_s, mode, workload)
        if (now := self.running) is not None:
            raise WorkbenchError(f"{now.name} is still running: stop it first, or wait for it to end")
        number = len(self.steps) + 1
        items = {"zipf": self.workloads.concurrent, "in order": self.workloads.in_order,
                 "fresh": self.workloads.fresh(f"step-{number}")}[workload]  # fmt: skip
        step = Step(number, users, float(duration_s), mode, workload, self.url, self.knob_values(),
                    self.out / f"step-{number}")  # fmt: skip
        step.out.mkdir(parents=True)
        self.steps.append(step)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(step, _with_mode(items, mode)), daemon=True,
                                        name=f"ragperf-workbench-{step.name}")  # fmt: skip
        self._thread.start()
        return step

    def _run(self, step: Step, items: list[WorkItem]) -> None:
        try:
            with targetlock.held(self.lock, command=f"the workbench ({step.name})"):
                step.result = run_load(
                    step.through, items, users=step.users, duration_s=step.duration_s, out_dir=step.out,
                    scenario=SCENARIO, step=f"step-{step.number}", cycle=True, timeout_s=self.params.load.timeout_s,
                    progress=False, stop=self._stop,
                )  # fmt: skip
        except Exception as exc:  # shown in the panel; the kernel goes on
            step.error = f"{type(exc).__name__}: {exc}"
            log.warning("%s failed: %s", step.name, step.error)
        finally:
            step.done.set()

    def stop(self) -> None:
        """Stop the running step (its records so far are kept); nothing when none runs."""
        self._stop.set()

    def wait(self, timeout_s: float | None = None) -> Step | None:
        """Wait for the running step to end (at most ``timeout_s``); the last step."""
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.steps[-1] if self.steps else None

    def step(self, number: int) -> Step:
        """Step ``number`` (from 1) of this session."""
        if not 1 <= number <= len(self.steps):
            raise WorkbenchError(f"no step {number}: this session has steps 1 to {len(self.steps)}"
                                 if self.steps else f"no step {number}: this session has run no step yet")  # fmt: skip
        return self.steps[number - 1]

    def snapshot(self, step: Step | None = None) -> Any:
        """The chart of a step (default: the running one, else the last) as far as it got."""
        step = step or self.running or (self.steps[-1] if self.steps else None)
        if step is None:
            return livestep.live_step(engine.empty_records(), title="No step yet")
        return livestep.live_step(step.records(), title=f"{step.name} ({step.state})", duration_s=step.duration_s)

    def table(self) -> pd.DataFrame:
        """One row per step: what it was and what it measured."""
        rows = []
        for s in self.steps:
            now = livestep.totals(s.records())
            rows.append({"step": s.number, "users": s.users, "duration (s)": s.duration_s, "workload": s.workload,
                         "mode": s.mode, **s.knobs, "requests": int(now["requests"]),
                         "failed (%)": round(now["failed_pct"], 1), "p50 (s)": round(now["p50"], 3),
                         "p95 (s)": round(now["p95"], 3), "state": s.state})  # fmt: skip
        return pd.DataFrame(rows)

    # --- comparisons ---------------------------------------------------------------------------

    def compare(self, number: int, other: int | str) -> tuple[pd.DataFrame, str]:
        """Step ``number`` against an earlier step (its number) or a phase (``RUN:PHASE`` or ``PHASE``, at the
        phase's fixed step of the same users, else its ladder step nearest them): p50 and p95 with their
        bootstrap interval, success rate and throughput. Returns the table and a heading."""
        current = self.step(number)
        if isinstance(other, int):
            base = self.step(other)
            b_records, b_name = base.records(), base.label
        else:
            b_records, b_name = _phase_records(other, current.users)
        c_records = current.records()
        for name, frame in ((b_name, b_records), (current.label, c_records)):
            if frame.empty:
                raise WorkbenchError(f"nothing to compare: {name} has no request records")
        table = compare.compare({}, {}, _relabel(b_records), _relabel(c_records))
        return table, f"{b_name} → {current.label}"

    # --- knobs ---------------------------------------------------------------------------------

    @property
    def cache_on(self) -> bool:
        """Whether steps go through the caching tier rather than to the app."""
        return self.url != self.app_url

    def knob_values(self) -> dict[str, str]:
        """The knobs as they are now: ef_search of the app's role (when known) and the cache."""
        values = {"cache": "on" if self.cache_on else "off"}
        if self.target.admin_dsn and self.target.app_role:
            with access.connector(self.target)() as conn:
                values["ef_search"] = roles.role_settings(conn, self.target.app_role).get("hnsw.ef_search", "default")
        return values

    def _may_change(self, what: str) -> None:
        if self.params.effective_mode() != "apply":
            raise WorkbenchError(f"{what}: this target is in plan mode (changes.mode), so the workbench changes "
                                 "nothing; set changes.mode: apply in its parameters to allow it")  # fmt: skip
        if self.running is not None:
            raise WorkbenchError(f"{what}: {self.running.name} is running; stop it first, so that no step is "
                                 "measured across the change")  # fmt: skip

    def _apply(self, name: str, value: str, plan: list[Change]) -> Knob:
        with targetlock.held(self.lock, command=f"the workbench ({name} {value})"):
            grouped = changes.groups(plan, self.appliers)
            changes.apply(grouped, self.journal)
        knob = Knob(name, value, grouped)
        self.knobs.append(knob)
        return knob

    def set_ef_search(self, value: int) -> Knob | None:
        """``ALTER ROLE <app role> SET hnsw.ef_search``: new connections of the app see it. None when it is so."""
        self._may_change("hnsw.ef_search")
        changes.check_int("hnsw.ef_search", value, *EF_SEARCH_RANGE)
        role = self.target.app_role
        if not role or not self.target.admin_dsn:
            raise WorkbenchError("hnsw.ef_search: the app's role is not known (set changes.app_role) or the target "
                                 "has no database DSN (target.dsn)")  # fmt: skip
        with access.connector(self.target)() as conn:
            now = roles.role_settings(conn, role)
        plan = roles.plan_role_settings(role, now, {"hnsw.ef_search": str(value)}, "set from the workbench")
        return self._apply("ef_search", str(value), plan) if plan else None

    def set_cache(self, on: bool) -> Knob | None:
        """The caching tier of Phase 2 in front of the app (on) or not (off). Off undoes the tier the workbench
        started; a tier that ran already is left running and only bypassed. None when nothing changes."""
        self._may_change("cache")
        if on == self.cache_on:
            return None
        if not on:
            started = next((k for k in reversed(self.knobs) if k.name == "cache" and k.value == "on"), None)
            if started is not None and started.applied:
                return self.undo(started)
            self.url = self.app_url
            knob = Knob("cache", "off", [])
            self.knobs.append(knob)
            return knob
        tier = cachetier.desired(self.target, self.params)
        now = cachetier.running(cachetier.state_dir(self.target, self.params))
        knob = self._apply("cache", "on", cachetier.plan(now, tier))
        self.url = tier.url
        targets.check_reachable(dataclasses.replace(self.target, base_url=tier.url))
        return knob

    def undo(self, knob: Knob | None = None) -> Knob | None:
        """Undo a knob (default: the last one turned) and forget it; None when there is nothing to undo."""
        if knob is None:
            if not self.knobs:
                return None
            knob = self.knobs[-1]
        self._may_change(f"undo {knob.name}")
        with targetlock.held(self.lock, command=f"the workbench (undo {knob.name})"):
            changes.undo(knob.applied, self.journal)
        self.knobs.remove(knob)
        if knob.name == "cache":
            self.url = self.app_url if knob.value == "on" else cachetier.desired(self.target, self.params).url
        return knob

    def undo_all(self) -> list[Knob]:
        """Undo every knob, newest first."""
        undone = []
        while self.knobs:
            undone.append(self.undo())
        return undone

    def close(self) -> None:
        """Stop a running step and wait for it (the knobs stay: undo them first to leave the target as it was)."""
        self.stop()
        self.wait(120)


def _relabel(records: pd.DataFrame) -> pd.DataFrame:
    return records.assign(scenario=COMPARED[0], step=COMPARED[1])


def _phase_records(ref: str, users: int) -> tuple[pd.DataFrame, str]:
    """The records of a phase's step of ``users`` (fixed, else the ladder's nearest) and its name."""
    try:
        _, records, name = runs.load_phase(ref)
    except (FileNotFoundError, ValueError) as exc:
        raise WorkbenchError(f"cannot compare with {ref!r}: {exc}") from None
    if records is None or records.empty:
        raise WorkbenchError(f"{name} has no request records to compare with")
    steps = records[["scenario", "step", "users_target"]].drop_duplicates()
    fixed = steps[(steps["scenario"] == verdicts.FIXED_SCENARIO) & (steps["users_target"] == users)]
    if fixed.empty:
        ladder = steps[steps["scenario"] == "ladder"]
        if ladder.empty:
            raise WorkbenchError(f"{name} has no fixed step of {users} users and no ladder step")
        fixed = ladder.iloc[[(ladder["users_target"] - users).abs().argmin()]]
    scenario, step = fixed.iloc[0]["scenario"], fixed.iloc[0]["step"]
    chosen = records[(records["scenario"] == scenario) & (records["step"] == step)]
    return chosen, f"{name} ({scenario} {step})"


@contextlib.contextmanager
def session(**kwargs: Any) -> Iterator[Workbench]:
    """A workbench that stops its step and undoes its knobs when the block ends (scripts and tests)."""
    bench = Workbench(**kwargs)
    try:
        yield bench
    finally:
        bench.close()
        bench.undo_all()
