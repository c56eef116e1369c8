"""The plan's final verdict: every phase's seven metrics in one table beside the plan's targets, each phase's
criteria, the plan's expected impacts beside what was measured, and the same run judged on cache misses alone.

Each phase's numbers come from this run when it has the phase, else from the newest run that has it (the table
says which). Phases 2–4 put caches in front of the app, so their p95 at 10 users mixes hits and misses: the
misses' own p95 and success rate are shown beside, from the requests each phase recorded, so that nobody mistakes
a warm cache for capacity. The tables are :mod:`ragperf.measure.verdicts`'; this module gathers the phases
from runs and adds Phase 4's expected impacts and the verdict in words.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ragperf import runs
from ragperf.measure import metrics
from ragperf.measure.verdicts import PHASES, Found, criteria_summary, metrics_table

log = logging.getLogger(__name__)


def collect(run: runs.Run, current: Mapping[str, Any] | None = None, records: pd.DataFrame | None = None) -> Found:
    """Each phase's metrics, records and where they came from (``run:phase``); ``current`` and ``records`` are Phase
    4's own before they are written. A phase no run has is left out."""
    found: Found = {}
    for name in PHASES:
        if name == "phase4" and current is not None:
            found[name] = (dict(current), records, f"{run.id}:{name}")
            continue
        for ref in (f"{run.id}:{name}", name):
            try:
                found[name] = runs.load_phase(ref)
                break
            except FileNotFoundError:
                continue
    return found


def capacity_before(found: Mapping[str, tuple[dict, Any, str]]) -> float | None:
    """The concurrent users the newest phase before Phase 4 held."""
    for name in reversed(PHASES[:-1]):
        if name in found and (users := metrics.value_of(found[name][0], "max_concurrent_users")) is not None:
            return users
    return None


def expected_impact(
    *, baseline_users: float | None, backend_users: float | None, stack_users: float | None,
    failover: Mapping[str, Any] | None, spread: Mapping[str, int] | None,
) -> pd.DataFrame:  # fmt: skip
    """Phase 4's expected impacts (PLAN.md) beside what was measured."""

    def num(value: Any) -> float | None:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    rows = []
    stack, backend = num(stack_users), num(backend_users)
    measured = (f"{baseline_users:g} users before Phase 4 → " if baseline_users is not None else "") + (
        f"{stack:g} through the whole stack (from empty caches, Zipf mix)" if stack is not None else "not measured"
    )
    if backend is not None:
        measured += f"; {backend:g} users on misses alone"
    rows.append(("Concurrent capacity: 50 → 150+ users", measured, stack is not None and stack >= 150))
    rate = num((failover or {}).get("success_rate"))
    rows.append(("High availability: 99 %+ (while an instance is killed)",
                 "not measured" if rate is None else f"{rate:.2f} % of requests succeeded while one of "
                 f"{(failover or {}).get('instances')} instances was killed",
                 rate is not None and rate >= 99.0))  # fmt: skip
    if spread:
        counts = list(spread.values())
        even = min(counts) / max(counts) if max(counts) else 0.0
        text = ", ".join(f"{k}: {v}" for k, v in spread.items()) + f" (fewest / most = {even:.2f})"
        rows.append(("Load distribution: balanced across instances", text, len(counts) > 1 and even >= 0.5))
    else:
        rows.append(("Load distribution: balanced across instances", "not measured", False))
    recovered = num((failover or {}).get("recovered_s"))
    rolling = (failover or {}).get("rolling_failed")
    rows.append(("Fault tolerance: automatic failover",
                 "not measured" if recovered is None else f"{(failover or {}).get('requests_retried')} requests "
                 f"retried on another instance, the killed one serving again after {recovered:.1f} s; rolling "
                 f"restart: {rolling} failed", recovered is not None and rate is not None and rate >= 99.9
                 and rolling == 0))  # fmt: skip
    return pd.DataFrame([{"expected (PLAN.md)": e, "measured": m, "met": "met" if ok else "not met"}
                         for e, m, ok in rows])  # fmt: skip


def final(found: Mapping[str, tuple[dict, Any, str]], impact: pd.DataFrame, misses: pd.DataFrame) -> dict[str, Any]:
    """The verdict as metrics.json keeps it: each target met or not, each phase's criteria, the impacts, misses."""
    table = metrics_table(found)
    targets = {row["metric"]: row["met"] for row in table.to_dict("records") if row["plan's target"] != "—"}
    return {
        "targets": targets,
        "all_targets_met": bool(targets) and all(v == "met" for v in targets.values()),
        "phases": criteria_summary(found).to_dict("records"),
        "metrics": table.to_dict("records"),
        "expected_impact": impact.to_dict("records"),
        "misses": misses.to_dict("records"),
        "sources": {name: ref for name, (_, _, ref) in found.items()},
    }


def text(verdict: Mapping[str, Any]) -> str:
    """The final verdict in words, in Markdown."""
    targets = verdict["targets"]
    met = [k for k, v in targets.items() if v == "met"]
    head = ("**The plan's final target is met**" if verdict["all_targets_met"] else
            f"**The plan's final target is not met**: {len(met)} of {len(targets)} targets")  # fmt: skip
    lines = [head + " (p95 < 1.5 s and success ≥ 95 % at 10 users, 100+ users)."]
    for name, value in targets.items():
        lines.append(f"- {name}: {value}")
    impacts = verdict["expected_impact"]
    lines.append(f"- Of Phase 4's {len(impacts)} expected impacts, {sum(r['met'] == 'met' for r in impacts)} were met.")
    for row in verdict["misses"]:
        if row["phase"] == "phase4" and row["requests"]:
            holds = (
                "the target holds without the caches"
                if row["misses_meet_final_target"]
                else ("the target rests on the caches")
            )
            lines.append(f"- On misses alone (Phase 4, 10 users: {row['missed_pct']:.0f} % of requests missed every "
                         f"cache): p95 {row['misses_p95_s']:.2f} s, success {row['misses_success_rate']:.1f} % — "
                         f"{holds}.")  # fmt: skip
    return "\n".join(lines)
