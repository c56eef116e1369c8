"""The four load scenarios every phase runs, bounded in time and requests.

1. ``query_latency_test``: one user asks the question set in order until a time limit;
   the users' version timed out after 10 minutes with nothing to show, this one reports what
   completed.
2. ``fixed_concurrency``: 5 and 10 users (the users' table) for a set duration each.
3. ``step_ladder``: 5, 10, 25, 40 ... users, stopping at the first step that breaks the SLO;
   ``max_concurrent_users`` is the last step that held.
4. ``cache_speedup``: the same questions asked twice by one user; the ratio of median latencies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ragperf.core import criteria
from ragperf.core.params import Params
from ragperf.measure import metrics
from ragperf.measure.loadgen import LoadResult, run_load
from ragperf.measure.workload import WorkItem


@dataclass
class Ladder:
    """The step ladder's outcome."""

    results: list[LoadResult]
    max_concurrent_users: int
    breaking_step: str | None


def _run(base_url: str, items: Sequence[WorkItem], out: Path, params: Params, **kwargs) -> LoadResult:
    out.mkdir(parents=True, exist_ok=True)
    load = params.load
    return run_load(base_url, items, out_dir=out, timeout_s=load.timeout_s, workers=load.workers,
                    remote_workers=load.remote_workers, master_port=load.master_port, **kwargs)  # fmt: skip


def run_step(
    base_url: str,
    items: Sequence[WorkItem],
    params: Params,
    out: Path,
    *,
    users: int,
    duration_s: float,
    scenario: str,
    cycle: bool = True,
) -> LoadResult:
    """One step of ``users`` for ``duration_s`` under a scenario name of the caller's (e.g. a phase's own workload)."""
    return _run(base_url, items, out, params, users=users, cycle=cycle, duration_s=duration_s, scenario=scenario,
                step=f"users={users}")  # fmt: skip


def query_latency_test(base_url: str, questions: Sequence[WorkItem], params: Params, out: Path) -> LoadResult:
    """One user, the questions in order, stopped at the time limit."""
    items = list(questions)[: params.load.query_latency_questions]
    return _run(
        base_url,
        items,
        out / "query_latency",
        params,
        users=1,
        cycle=False,
        duration_s=params.load.query_latency_time_limit_s,
        scenario="query_latency_test",
        step="users=1",
    )


def fixed_concurrency(base_url: str, items: Sequence[WorkItem], params: Params, out: Path) -> list[LoadResult]:
    """Each of ``load.fixed_users`` for ``load.fixed_duration_s``."""
    return [
        _run(
            base_url,
            items,
            out / f"fixed_{users}",
            params,
            users=users,
            cycle=True,
            duration_s=params.load.fixed_duration_s,
            scenario="fixed",
            step=f"users={users}",
        )
        for users in params.load.fixed_users
    ]


def step_ladder(
    base_url: str,
    items: Sequence[WorkItem],
    params: Params,
    out: Path,
    on_step: Callable[[LoadResult, dict], None] | None = None,
) -> Ladder:
    """Climb ``load.ladder_users`` until a step breaks the SLO (p95 and success rate)."""
    slo = criteria.Slo(p95_s=params.slo.p95_s, success_rate_pct=params.slo.success_rate_pct)
    results: list[LoadResult] = []
    held = 0
    for users in params.load.ladder_users:
        result = _run(
            base_url,
            items,
            out / f"ladder_{users}",
            params,
            users=users,
            cycle=True,
            duration_s=params.load.ladder_step_s,
            scenario="ladder",
            step=f"users={users}",
        )
        results.append(result)
        summary = metrics.summarize(result.records)
        if on_step is not None:
            on_step(result, summary)
        if not metrics.holds(summary, slo):
            return Ladder(results, held, f"users={users}")
        held = users
    return Ladder(results, held, None)


def cache_speedup(base_url: str, fresh: Sequence[WorkItem], params: Params, out: Path) -> LoadResult:
    """Ask questions nobody asked before in this run, then the same again, one user, in order."""
    first = list(fresh)[: params.load.cache_speedup_questions]
    result = _run(
        base_url,
        first + first,
        out / "cache_speedup",
        params,
        users=1,
        cycle=False,
        duration_s=params.load.query_latency_time_limit_s,
        scenario="cache_speedup",
        step="users=1",
    )
    records = result.records.sort_values("start").reset_index(drop=True)
    records["ask"] = ["first" if i < len(first) else "second" for i in range(len(records))]
    result.records = records
    return result


def all_records(*groups: LoadResult | Sequence[LoadResult]) -> pd.DataFrame:
    """One frame of every request record of the given results."""
    frames = []
    for group in groups:
        for result in [group] if isinstance(group, LoadResult) else group:
            frames.append(result.records)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
