"""The users' table and their success criteria: what they reported beside what we measured, and the verdict.

:data:`USERS_BASELINE` holds the seven numbers the users reported (PLAN.md, "Current Performance
Issues"); :func:`side_by_side` sets ours beside them, coloured by each metric's direction in
:data:`ragperf.measure.metrics.REGISTRY`. :func:`criteria_table` and :func:`verdict_text` judge a
phase's metrics.json against that phase's success criteria (:mod:`ragperf.core.criteria`).

Across the plan's phases: :func:`metrics_table` sets each phase's seven metrics beside the plan's final
targets (:data:`TARGETS`), :func:`criteria_summary` judges each phase on its own criteria, and
:func:`misses_table` judges the fixed 10-user step on the requests that missed every cache, so that a warm
cache never passes for capacity. They take a :data:`Found` (each phase's metrics, requests and source), which
:mod:`ragperf.phases.verdict` and the report gather from runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ragperf.core.criteria import CRITERIA_USERS, PHASE_CRITERIA, Slo, phase_criteria
from ragperf.measure.metrics import (
    CACHED,
    USERS_KEYS,
    format_value,
    ladder_verdict,
    metric,
    served_by,
    summarize,
    value_of,
)


@dataclass(frozen=True)
class Reported:
    """A number the users reported: ``value``, or a range ``low``..``high``, and what they wrote."""

    value: float | None
    text: str
    low: float | None = None
    high: float | None = None


USERS_QUERY_LATENCY_TIMEOUT_S = 600.0
USERS_BASELINE: dict[str, Reported] = {
    "query_latency_test": Reported(None, "TIMEOUT after 10 minutes (no result)"),
    "success_rate_5_users": Reported(26.7, "26.7%"),
    "success_rate_10_users": Reported(36.7, "36.7%"),
    "response_time_5_users": Reported(3.87, "3.87 seconds"),
    "response_time_10_users": Reported(9.62, "9.62 seconds"),
    "cache_speedup": Reported(1.24, "1.24x"),
    "max_concurrent_users": Reported(None, "5-10 users", low=5, high=10),
}


def _versus(key: str, users: Reported, ours: float | None) -> str:
    """Whether ours is better or worse than what the users reported, given the metric's direction."""
    lower = metric(key).lower_is_better
    if ours is None:
        return "not measured"
    if users.value is not None:
        if ours == users.value:
            return "same"
        return "better" if (ours < users.value) == lower else "worse"
    if users.low is not None and users.high is not None:
        if users.low <= ours <= users.high:
            return "within the users' range"
        return "better" if (ours < users.low) == lower else "worse"
    return "users had no result"


def side_by_side(ours: Mapping[str, Any]) -> pd.DataFrame:
    """The users' seven numbers beside ours (a metrics.json dict), one row per key.

    Columns: key, metric, users' value (NaN when they gave none), users' low, users' high, users wrote,
    ours, unit, verdict (better / worse / same / within the users' range / ...).
    """
    rows = []
    for key in USERS_KEYS:
        users, value, m = USERS_BASELINE[key], value_of(ours, key), metric(key)
        rows.append({
            "key": key, "metric": m.label, "users' value": users.value, "users' low": users.low,
            "users' high": users.high, "users wrote": users.text, "ours": value, "unit": m.unit,
            "verdict": _versus(key, users, value),
        })  # fmt: skip
    return pd.DataFrame(rows).astype({"users' value": float, "users' low": float, "users' high": float, "ours": float})


def _capacity(metrics: Mapping[str, Any], slo: Slo) -> tuple[float | None, str]:
    """Max users of the ladder under the phase's own SLO, recomputed from the stored steps."""
    ladder = metrics.get("ladder") or {}
    steps = pd.DataFrame([s for s in metrics.get("steps") or [] if s.get("scenario") == ladder.get("scenario")])
    if steps.empty:
        return value_of(metrics, "max_concurrent_users"), ""
    held, breaking = ladder_verdict(steps, slo)
    if breaking is not None:
        return float(held), f"first broke at {breaking}"
    if ladder.get("first_breaking_step"):
        return float(held), "at least: the ladder stopped early under the run's own SLO"
    return float(held), "at least: every step held"


def criteria_table(metrics: Mapping[str, Any], phase: str, criteria: Slo | None = None) -> pd.DataFrame:
    """The users' success criteria of ``phase`` against a metrics.json dict.

    Response time and success rate are read at 10 users (the numbers the plan sets out to improve);
    the users target is the ladder's capacity recomputed under the phase's own p95 and success rate.
    Columns: criterion, target, measured, unit, result ("pass" / "fail" / "not measured"), note.
    """
    slo = criteria or phase_criteria(phase)
    p95 = value_of(metrics, f"response_time_{CRITERIA_USERS}_users")
    rate = value_of(metrics, f"success_rate_{CRITERIA_USERS}_users")
    users, note = _capacity(metrics, slo)
    rows = [
        (f"Response time (p95) at {CRITERIA_USERS} users", f"< {slo.p95_s:g} s", p95, "s",
         None if p95 is None else p95 < slo.p95_s, ""),
        (f"Success rate at {CRITERIA_USERS} users", f"≥ {slo.success_rate_pct:g} %", rate, "%",
         None if rate is None else rate >= slo.success_rate_pct, ""),
        (f"Concurrent users with p95 < {slo.p95_s:g} s and success ≥ {slo.success_rate_pct:g} %",
         f"≥ {slo.min_users} users", users, "users", None if users is None else users >= slo.min_users, note),
    ]  # fmt: skip
    result = {True: "pass", False: "fail", None: "not measured"}
    return pd.DataFrame(
        [{"criterion": c, "target": t, "measured": m, "unit": u, "result": result[p], "note": n}
         for c, t, m, u, p, n in rows]
    ).astype({"measured": float})  # fmt: skip


def verdict_text(metrics: Mapping[str, Any], phase: str, criteria: Slo | None = None) -> str:
    """The phase's verdict in plain English, one sentence per criterion."""
    table = criteria_table(metrics, phase, criteria)
    passed = int((table["result"] == "pass").sum())
    name = re.sub(r"^phase(\d+)$", r"Phase \1", phase)
    head = (
        f"{name} meets all {len(table)} of the users' success criteria."
        if passed == len(table)
        else f"{name} meets {passed} of the users' {len(table)} success criteria."
    )
    lines = [head]
    for row in table.itertuples(index=False):
        measured = format_value(None if math.isnan(row.measured) else row.measured, row.unit)
        note = f" ({row.note})" if row.note else ""
        lines.append(f"- {row.criterion}: measured {measured}{note}, target {row.target}: {row.result}.")
    return "\n".join(lines)


# --- the plan across its phases: each phase's numbers beside the plan's final targets ---------------------

PHASES = ("phase0", "phase1", "phase2", "phase3", "phase4")
FIXED_SCENARIO = "fixed"  # the fixed-concurrency scenario's name in the request records
FINAL = PHASE_CRITERIA["phase4"]  # the plan's final target: p95 < 1.5 s, success > 95 %, 100+ users
TARGET_VALUES: dict[str, float] = {  # the numbers of TARGETS, e.g. to draw as lines
    f"response_time_{CRITERIA_USERS}_users": FINAL.p95_s,
    f"success_rate_{CRITERIA_USERS}_users": FINAL.success_rate_pct,
    "max_concurrent_users": float(FINAL.min_users),
}
TARGETS: dict[str, tuple[str, Any]] = {
    f"response_time_{CRITERIA_USERS}_users": (f"< {FINAL.p95_s:g} s", lambda v: v < FINAL.p95_s),
    f"success_rate_{CRITERIA_USERS}_users": (f"≥ {FINAL.success_rate_pct:g} %", lambda v: v >= FINAL.success_rate_pct),
    "max_concurrent_users": (f"≥ {FINAL.min_users} users", lambda v: v >= FINAL.min_users),
}
Found = dict[str, tuple[dict, pd.DataFrame | None, str]]  # by phase: metrics, requests, "run:phase"


def metrics_table(found: Mapping[str, tuple[dict, Any, str]]) -> pd.DataFrame:
    """The users' seven metrics: what they reported, each phase's value, the plan's final target and the verdict."""
    rows = []
    for key in USERS_KEYS:
        m = metric(key)
        row: dict[str, Any] = {"metric": m.label, "unit": m.unit, "users reported": USERS_BASELINE[key].text}
        for name, (result, _, _) in found.items():
            row[name] = value_of(result, key)
        target, test = TARGETS.get(key, ("", None))
        last = next((row[p] for p in reversed(PHASES) if p in found and row.get(p) is not None), None)
        row["plan's target"] = target or "—"
        row["met"] = "—" if test is None else ("not measured" if last is None else "met" if test(last) else "not met")
        rows.append(row)
    return pd.DataFrame(rows)


def criteria_summary(found: Mapping[str, tuple[dict, Any, str]]) -> pd.DataFrame:
    """Each phase judged against its own success criteria (Phases 1–4; Phase 0 has none), and where it came from."""
    rows = []
    for name, (result, _, ref) in found.items():
        if name not in PHASE_CRITERIA:
            continue
        table = criteria_table(result, name)
        passed = int((table["result"] == "pass").sum())
        rows.append({"phase": name, "criteria": f"p95 < {PHASE_CRITERIA[name].p95_s:g} s, success ≥ "
                     f"{PHASE_CRITERIA[name].success_rate_pct:g} %, ≥ {PHASE_CRITERIA[name].min_users} users",
                     "met": f"{passed} of {len(table)}", "verdict": "met" if passed == len(table) else "not met",
                     "from": ref})  # fmt: skip
    return pd.DataFrame(rows)


def misses_table(found: Mapping[str, tuple[dict, pd.DataFrame | None, str]]) -> pd.DataFrame:
    """Each phase at the fixed step of 10 users, on all requests and on those that missed every cache (the app
    answered them): their share, p95 and success rate."""
    rows = []
    for name, (_, records, _) in found.items():
        if records is None or records.empty:
            continue
        step = records[(records["scenario"] == FIXED_SCENARIO) & (records["users_target"] == CRITERIA_USERS)]
        if step.empty:
            continue
        missed = step[~served_by(step).isin(CACHED)]
        everything, m = summarize(step), summarize(missed)
        rows.append({"phase": name, "requests": everything["count"], "p95_s": everything["p95"],
                     "success_rate": everything["success_rate"], "missed_pct": 100.0 * len(missed) / len(step),
                     "misses_p95_s": m["p95"], "misses_success_rate": m["success_rate"],
                     "misses_meet_final_target": bool(m["count"]) and m["p95"] < FINAL.p95_s
                     and m["success_rate"] >= FINAL.success_rate_pct})  # fmt: skip
    return pd.DataFrame(rows)
