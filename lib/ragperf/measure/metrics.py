"""The metric registry, exact summaries of request records, and metrics.json.

Every number the workbook reports is a metric of ``REGISTRY``, which carries its unit and whether
lower is better, so tables, charts and verdicts colour a change the right way. Latency statistics
are exact numpy percentiles (linear interpolation) over per-request records, never Locust's rounded
buckets, and are taken over ALL requests: a failed request counts at the time it took, so a timeout
counts at the timeout (the load engine records the time waited), and it also lowers the success rate.

The users' seven keys (PLAN.md, "Current Performance Issues"), as measured here:

- ``query_latency_test``: percentage of the planned questions that one user, asking them in order,
  got answered OK (HTTP 200, well-formed answer, within the request timeout) and finished within the
  scenario's time limit. ``query_latency_p50`` / ``query_latency_p95`` are the latency percentiles of
  the requests made. The users' run timed out after 600 s with no result at all.
- ``success_rate_5_users`` / ``success_rate_10_users``: percentage of all requests at the fixed
  concurrency step of 5 / 10 users that were OK.
- ``response_time_5_users`` / ``response_time_10_users``: p95 latency, in seconds, of all requests at
  that step, failures included at the time they took.
- ``cache_speedup``: median latency of the first asks divided by the median latency of the second asks
  of the same questions (one user, in order), over the questions answered OK both times. The records
  tell the asks apart by the ``ask`` column ("first" / "second").
- ``max_concurrent_users``: users of the last step of the ladder that held the SLO (p95 below the
  target and success rate at least the target) before the first step that broke it; 0 when the first
  step broke; the top step (a lower bound) when every step held.

The users' own numbers beside ours and the phases' success criteria are :mod:`ragperf.measure.verdicts`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from ragperf.core.criteria import Slo
from ragperf.measure.loadgen.recording import ERRORS

SCHEMA = "ragperf.metrics/1"
ASK_COLUMN = "ask"
# The recorder's error classes (its "" is success), and "unclassified" for a failure it could not name.
FAILURE_CLASSES = (*(e for e in ERRORS if e), "unclassified")
# nginx's $upstream_cache_status values that mean the answer came from the cache.
CACHE_HIT_STATUSES = frozenset({"HIT", "STALE", "UPDATING", "REVALIDATED"})
SHARED_COLUMN = "shared_cache_status"  # the Redis cache add-on's X-Shared-Cache-Status
SERVED_BY = ("nginx", "redis", "coalesced", "app", "unknown")
CACHED = ("nginx", "redis")
UNITS = ("s", "%", "x", "users", "req/s", "count", "ratio")


@dataclass(frozen=True)
class Metric:
    """One reported quantity: its unit and which direction is an improvement."""

    key: str
    label: str
    unit: str
    lower_is_better: bool
    description: str


def _registry(*metrics: Metric) -> dict[str, Metric]:
    for m in metrics:
        if m.unit not in UNITS:
            raise ValueError(f"metric {m.key!r}: unit {m.unit!r} is not one of {UNITS}")
    return {m.key: m for m in metrics}


def _failure_metric(cls: str) -> Metric:
    return Metric(f"failures_{cls}", f"Failures: {cls.replace('_', ' ')}", "count", True, f"requests failed as {cls}")


USERS_KEYS = (
    "query_latency_test",
    "success_rate_5_users",
    "success_rate_10_users",
    "response_time_5_users",
    "response_time_10_users",
    "cache_speedup",
    "max_concurrent_users",
)

REGISTRY: dict[str, Metric] = _registry(
    Metric("query_latency_test", "Query latency test: questions answered in time", "%", False,
           "OK answers finished within the time limit, as a percentage of the questions planned (one user, in order)"),
    Metric("success_rate_5_users", "Success rate at 5 users", "%", False,
           "OK requests / all requests at the fixed step of 5 concurrent users"),
    Metric("success_rate_10_users", "Success rate at 10 users", "%", False,
           "OK requests / all requests at the fixed step of 10 concurrent users"),
    Metric("response_time_5_users", "Response time (p95) at 5 users", "s", True,
           "p95 latency of all requests at 5 users, failures at the time they took (timeouts at the timeout)"),
    Metric("response_time_10_users", "Response time (p95) at 10 users", "s", True,
           "p95 latency of all requests at 10 users, failures at the time they took (timeouts at the timeout)"),
    Metric("cache_speedup", "Cache speed-up (second ask vs first)", "x", False,
           "median first-ask latency / median second-ask latency, questions answered OK both times"),
    Metric("max_concurrent_users", "Max concurrent users within the SLO", "users", False,
           "last ladder step holding the SLO before the first step that broke it"),
    Metric("query_latency_p50", "Query latency test: p50", "s", True, "median latency of the query latency test"),
    Metric("query_latency_p95", "Query latency test: p95", "s", True, "p95 latency of the query latency test"),
    Metric("query_latency_completed", "Query latency test: answered in time", "count", False,
           "OK answers finished within the time limit"),
    Metric("cache_first_median", "Cache test: median first ask", "s", True, "median latency of the first asks"),
    Metric("cache_second_median", "Cache test: median second ask", "s", True, "median latency of the second asks"),
    Metric("cache_hit_rate", "Cache test: hit rate of second asks", "%", False,
           "second asks the cache reported as served from the cache"),
    Metric("p50", "p50 latency", "s", True, "median latency of all requests"),
    Metric("p95", "p95 latency", "s", True, "95th percentile latency of all requests"),
    Metric("p99", "p99 latency", "s", True, "99th percentile latency of all requests"),
    Metric("mean", "Mean latency", "s", True, "mean latency of all requests"),
    Metric("max", "Max latency", "s", True, "slowest request"),
    Metric("p50_ok", "p50 latency (OK only)", "s", True, "median latency of OK requests"),
    Metric("p95_ok", "p95 latency (OK only)", "s", True, "95th percentile latency of OK requests"),
    Metric("p99_ok", "p99 latency (OK only)", "s", True, "99th percentile latency of OK requests"),
    Metric("mean_ok", "Mean latency (OK only)", "s", True, "mean latency of OK requests"),
    Metric("throughput_rps", "Throughput", "req/s", False,
           "OK requests per second over the step's wall span (first start to last finish)"),
    Metric("request_rps", "Request rate", "req/s", False, "all requests per second over the step's wall span"),
    Metric("success_rate", "Success rate", "%", False, "OK requests / all requests"),
    Metric("count", "Requests", "count", False, "requests made"),
    Metric("ok_count", "OK requests", "count", False, "requests answered OK"),
    Metric("failures", "Failed requests", "count", True, "requests not answered OK"),
    *(_failure_metric(cls) for cls in FAILURE_CLASSES),
    Metric("hit_rate", "Cache hit rate", "%", False, "requests served from the cache / requests with a cache status"),
    Metric("hit_rate_zipf_low", "Hit rate, Zipf (flatter popularity)", "%", False,
           "requests served by nginx or Redis, the Zipf workload with the lower exponent, from an empty cache"),
    Metric("hit_rate_zipf_high", "Hit rate, Zipf (steeper popularity)", "%", False,
           "requests served by nginx or Redis, the Zipf workload with the higher exponent, from an empty cache"),
    Metric("hit_rate_replay", "Hit rate, replayed log", "%", False,
           "requests served by nginx or Redis when a recorded sequence of questions is replayed, from an empty cache"),
    Metric("cached_p50", "Cached answers: p50", "s", True, "median latency of the answers nginx or Redis served"),
    Metric("cached_p95", "Cached answers: p95", "s", True, "p95 latency of the answers nginx or Redis served"),
    Metric("uncached_p95", "Uncached answers: p95", "s", True, "p95 latency of the answers that reached the app"),
    Metric("backend_load_reduction", "Backend load reduction", "%", False,
           "100 − the percentage of requests that reached the app, counted by the cache add-on itself"),
    Metric("recall", "Recall@k", "ratio", False, "share of the exact search's top k that the index returned"),
)  # fmt: skip


def metric(key: str) -> Metric:
    """The registered metric ``key``; KeyError naming the known keys otherwise."""
    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(f"unknown metric {key!r}: known are {', '.join(REGISTRY)}") from None


def format_value(value: float | None, unit: str) -> str:
    """A value as a stakeholder reads it: ``3.87 s``, ``26.7 %``, ``1.24x``, ``25 users``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("users", "count"):
        return f"{value:,.0f}" + (" users" if unit == "users" else "")
    if unit == "ratio":
        return f"{value:.3f}"
    if unit == "%":
        return f"{value:.1f} %"
    return f"{value:.3g} {unit}" if abs(value) < 100 else f"{value:,.0f} {unit}"


# --- summaries of request records ------------------------------------------------------------------


def _latency_stats(latency: np.ndarray, suffix: str = "") -> dict[str, float]:
    if latency.size == 0:
        return {f"{name}{suffix}": math.nan for name in ("p50", "p95", "p99", "mean", "max")}
    p50, p95, p99 = np.percentile(latency, [50, 95, 99])
    return {
        f"p50{suffix}": float(p50),
        f"p95{suffix}": float(p95),
        f"p99{suffix}": float(p99),
        f"mean{suffix}": float(latency.mean()),
        f"max{suffix}": float(latency.max()),
    }


def _wall_span(records: pd.DataFrame) -> float:
    if records.empty:
        return math.nan
    start = records["start"].to_numpy(float)
    return float((start + records["latency_s"].to_numpy(float)).max() - start.min())


def _failures_by_class(records: pd.DataFrame) -> dict[str, int]:
    counts = dict.fromkeys(FAILURE_CLASSES, 0)
    failed = records.loc[~records["ok"].astype(bool)]
    errors = failed["error"].fillna("").astype(str) if "error" in failed else pd.Series("", index=failed.index)
    for cls, n in errors.replace("", "unclassified").value_counts(sort=False).items():
        counts[str(cls)] = int(n)
    return counts


def cache_status_of(records: pd.DataFrame, column: str) -> pd.Series:
    """A cache status column, stripped and upper-cased ("" where absent)."""
    if column not in records:
        return pd.Series("", index=records.index, dtype=str)
    return records[column].fillna("").astype(str).str.strip().str.upper()


def served_by(records: pd.DataFrame) -> pd.Series:
    """Where each answer came from, by the cache headers the load test recorded (one of :data:`SERVED_BY`).

    nginx's ``X-Cache-Status`` (``cache_status``) wins: an entry nginx serves keeps the header the Redis
    layer sent when it was stored. Then the Redis add-on's ``X-Shared-Cache-Status``
    (``shared_cache_status``): HIT is ``redis``, COALESCED (waited for another request's trip to the app)
    is ``coalesced``. Any other reported status (MISS, BYPASS, EXPIRED ...) reached the ``app``;
    ``unknown`` is a response without any cache header (no cache in front, or no response at all).
    """
    nginx, shared = cache_status_of(records, "cache_status"), cache_status_of(records, SHARED_COLUMN)
    where = np.select(
        [nginx.isin(CACHE_HIT_STATUSES), shared == "HIT", shared == "COALESCED", (nginx != "") | (shared != "")],
        ["nginx", "redis", "coalesced", "app"],
        default="unknown",
    )
    return pd.Series(where, index=records.index, dtype=str)


def hit_rate(records: pd.DataFrame) -> float | None:
    """% of the requests with a cache header that nginx or Redis served; None when none has a header."""
    served = served_by(records)
    reported = served[served != "unknown"]
    if reported.empty:
        return None
    return float(100.0 * reported.isin(CACHED).mean())


def cache_layers(records: pd.DataFrame) -> pd.DataFrame:
    """Per (scenario, step): the share of requests each layer served and the latency of cached vs uncached ones.

    Columns: scenario, step, users_target, requests, ``<layer>_pct`` for each of :data:`SERVED_BY`, hit_rate
    (% of requests with a cache header served by nginx or Redis), app_pct_of_reported (the requests that
    still reached the app, of those with a header), and hit/miss p50 and p95 in seconds (``miss``: reached
    the app or waited for a request that did).
    """
    rows = []
    for scenario, step, group in _groups(records):
        served = served_by(group)
        reported = served[served != "unknown"]
        hits = group.loc[served.isin(CACHED), "latency_s"].to_numpy(float)
        misses = group.loc[served.isin(("app", "coalesced")), "latency_s"].to_numpy(float)
        row: dict[str, Any] = {"scenario": scenario, "step": step, "users_target": int(group["users_target"].iloc[0]),
                               "requests": len(group)}  # fmt: skip
        row.update({f"{layer}_pct": 100.0 * float((served == layer).mean()) for layer in SERVED_BY})
        row["hit_rate"] = hit_rate(group)
        row["app_pct_of_reported"] = 100.0 * float((reported == "app").mean()) if len(reported) else math.nan
        for name, values in (("hit", hits), ("miss", misses)):
            p50, p95 = np.percentile(values, [50, 95]) if values.size else (math.nan, math.nan)
            row[f"{name}_p50"], row[f"{name}_p95"], row[f"{name}_count"] = float(p50), float(p95), int(values.size)
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(records: pd.DataFrame) -> dict[str, Any]:
    """Exact statistics of a set of request records (usually one step).

    Returns count, ok_count, failures, success_rate (%), p50/p95/p99/mean/max over all requests and
    the same with suffix ``_ok`` over OK requests only, wall_s (first start to last finish),
    throughput_rps (OK requests per second of wall_s), request_rps, failures_by_class (dict) and
    hit_rate (% of requests with a cache status that were served from the cache, None without any).
    Undefined numbers (no requests) are NaN.
    """
    n = len(records)
    latency = records["latency_s"].to_numpy(float) if n else np.empty(0)
    ok = records["ok"].to_numpy(bool) if n else np.empty(0, bool)
    ok_count = int(ok.sum())
    wall = _wall_span(records)
    summary: dict[str, Any] = {
        "count": n,
        "ok_count": ok_count,
        "failures": n - ok_count,
        "success_rate": 100.0 * ok_count / n if n else math.nan,
    }
    summary.update(_latency_stats(latency))
    summary.update(_latency_stats(latency[ok], "_ok"))
    summary["wall_s"] = wall
    summary["throughput_rps"] = ok_count / wall if wall > 0 else math.nan
    summary["request_rps"] = n / wall if wall > 0 else math.nan
    summary["failures_by_class"] = _failures_by_class(records) if n else dict.fromkeys(FAILURE_CLASSES, 0)
    summary["hit_rate"] = hit_rate(records)
    return summary


def _groups(records: pd.DataFrame) -> Iterable[tuple[str, str, pd.DataFrame]]:
    """(scenario, step, records) in scenario order of appearance, then by users."""
    if records.empty:
        return []
    order = {name: i for i, name in enumerate(pd.unique(records["scenario"]))}
    groups = [(str(s), str(t), g) for (s, t), g in records.groupby(["scenario", "step"], sort=False)]
    return sorted(groups, key=lambda item: (order[item[0]], int(item[2]["users_target"].iloc[0]), item[1]))


def step_summaries(records: pd.DataFrame) -> list[dict[str, Any]]:
    """``summarize`` of each (scenario, step), with scenario, step, users_target and active_users_max."""
    rows = []
    for scenario, step, group in _groups(records):
        row = {"scenario": scenario, "step": step, "users_target": int(group["users_target"].iloc[0])}
        row.update(summarize(group))
        row["active_users_max"] = int(group["active_users"].max()) if "active_users" in group else None
        rows.append(row)
    return rows


def summarize_steps(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (scenario, step): users_target, the ``summarize`` numbers, a ``failures_<class>`` column each."""
    rows = []
    for row in step_summaries(records):
        by_class = row.pop("failures_by_class")
        rows.append({**row, **{f"failures_{cls}": n for cls, n in by_class.items()}})
    columns = ["scenario", "step", "users_target"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=columns)


# --- service-level objective and the ladder ---------------------------------------------------------


def _finite(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def holds(summary: Mapping[str, Any], slo: Slo) -> bool:
    """Whether a step's summary (a ``summarize`` dict or a ``summarize_steps`` row) holds the SLO."""
    p95, rate = summary.get("p95"), summary.get("success_rate")
    if not summary.get("count") or not (_finite(p95) and _finite(rate)):
        return False
    return float(p95) < slo.p95_s and float(rate) >= slo.success_rate_pct


def ladder_verdict(steps_df: pd.DataFrame, slo: Slo, scenario: str | None = None) -> tuple[int, str | None]:
    """(max_concurrent_users, first_breaking_step) of a ladder's step rows, climbed by users.

    Steps after the first that broke are ignored even if they held. Pass only the ladder's rows, or
    name its ``scenario``; two rows with the same users are an error.
    """
    steps = steps_df if scenario is None else steps_df[steps_df["scenario"] == scenario]
    if steps["users_target"].duplicated().any():
        raise ValueError("ladder steps repeat a users_target: pass one scenario's rows or name scenario=")
    held = 0
    for _, row in steps.sort_values("users_target").iterrows():
        if not holds(row, slo):
            return held, str(row["step"])
        held = int(row["users_target"])
    return held, None


# --- metrics.json -----------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


class MetricEntry(TypedDict):
    """One metric of metrics.json: its number (None: not measured) and its unit."""

    value: float | None
    unit: str


class LadderSection(TypedDict):
    """metrics.json's ``ladder``: how far the step ladder held the SLO."""

    scenario: str
    max_concurrent_users: int | None
    first_breaking_step: str | None
    all_steps_held: bool


class QueryLatencySection(TypedDict):
    """metrics.json's ``query_latency``: what the one-user test set out to ask, and in how long."""

    questions_total: int | None
    time_limit_s: float | None


def _entry(key: str, value: Any) -> MetricEntry:
    return MetricEntry(value=_num(value), unit=metric(key).unit)


def value_of(metrics: Mapping[str, Any], key: str) -> float | None:
    """The number of metric ``key`` in a metrics.json dict (None when absent or not measured)."""
    entry = metrics.get(key)
    if isinstance(entry, Mapping):
        return _num(entry.get("value"))
    return _num(entry) if isinstance(entry, int | float) else None


def _source(records: pd.DataFrame, statistic: str) -> dict[str, str]:
    return {"scenario": str(records["scenario"].iloc[0]), "step": str(records["step"].iloc[0]), "statistic": statistic}


def _query_latency(records: pd.DataFrame, total: int | None, time_limit_s: float | None) -> tuple[dict, dict]:
    if not total or total < 1:
        raise ValueError("phase_metrics: query_latency records need questions_total (the number of questions planned)")
    if records.empty:
        return {"query_latency_test": 0.0, "query_latency_completed": 0}, {}
    finish = records["start"] + records["latency_s"] - records["start"].min()
    in_time = records["ok"].astype(bool) & (finish <= time_limit_s if time_limit_s else True)
    summary = summarize(records)
    values = {
        "query_latency_test": 100.0 * int(in_time.sum()) / total,
        "query_latency_completed": int(in_time.sum()),
        "query_latency_p50": summary["p50"],
        "query_latency_p95": summary["p95"],
    }
    sources = {"query_latency_p50": _source(records, "p50"), "query_latency_p95": _source(records, "p95")}
    return values, sources


def _fixed(records: pd.DataFrame) -> tuple[dict, dict]:
    values: dict[str, Any] = {}
    sources: dict[str, dict] = {}
    for users in (5, 10):
        step = records[records["users_target"] == users]
        if step.empty:
            continue
        summary = summarize(step)
        values[f"success_rate_{users}_users"] = summary["success_rate"]
        values[f"response_time_{users}_users"] = summary["p95"]
        sources[f"response_time_{users}_users"] = _source(step, "p95")
    return values, sources


def _cache(records: pd.DataFrame) -> dict[str, Any]:
    if ASK_COLUMN not in records:
        raise ValueError(f"phase_metrics: cache records need an {ASK_COLUMN!r} column of 'first' / 'second'")
    ok = records[records["ok"].astype(bool)]
    first, second = ok[ok[ASK_COLUMN] == "first"], ok[ok[ASK_COLUMN] == "second"]
    both = set(first["question_id"]) & set(second["question_id"])
    first, second = first[first["question_id"].isin(both)], second[second["question_id"].isin(both)]
    m1 = float(first["latency_s"].median()) if both else math.nan
    m2 = float(second["latency_s"].median()) if both else math.nan
    return {
        "cache_speedup": m1 / m2 if m2 > 0 else math.nan,
        "cache_first_median": m1,
        "cache_second_median": m2,
        "cache_hit_rate": hit_rate(records[records[ASK_COLUMN] == "second"]),
    }


def _steps_json(frames: Iterable[pd.DataFrame | None]) -> list[dict[str, Any]]:
    present = [f for f in frames if f is not None and not f.empty]
    if not present:
        return []
    keep = ("scenario", "step", "users_target", "count", "ok_count", "success_rate", "p50", "p95", "p99", "mean",
            "max", "p50_ok", "p95_ok", "throughput_rps", "request_rps", "hit_rate", "active_users_max",
            "failures_by_class")  # fmt: skip
    return [{k: row[k] for k in keep} for row in step_summaries(pd.concat(present, ignore_index=True))]


def phase_metrics(
    *,
    query_latency: pd.DataFrame | None = None,
    questions_total: int | None = None,
    time_limit_s: float | None = None,
    fixed: pd.DataFrame | None = None,
    ladder: pd.DataFrame | None = None,
    slo: Slo | None = None,
    cache: pd.DataFrame | None = None,
    extra: Mapping[str, float | None] | None = None,
    phase: str | None = None,
) -> dict[str, Any]:
    """The metrics.json dict of one phase run, from the four scenarios' request records.

    Args:
        query_latency: one user's records; ``questions_total`` planned questions, ``time_limit_s`` limit.
        fixed: records of the fixed-concurrency steps (5 and 10 users are the users' keys).
        ladder: records of the step ladder, judged against ``slo``.
        cache: records of the asks twice, with an ``ask`` column of "first" / "second".
        extra: further registered metrics measured elsewhere (e.g. recall, hit_rate).
        phase: the phase's name, stored as is.

    Returns:
        The seven users' keys (always present, value None when not measured) and supplementary metrics
        as ``{"value": number, "unit": str}``, plus ``steps`` (every step's numbers), ``sources`` (which
        step and statistic a metric is), ``ladder``, ``slo`` and ``query_latency`` details.
    """
    values: dict[str, Any] = dict.fromkeys(USERS_KEYS)
    sources: dict[str, dict] = {}
    if query_latency is not None:
        v, s = _query_latency(query_latency, questions_total, time_limit_s)
        values.update(v)
        sources.update(s)
    if fixed is not None and not fixed.empty:
        v, s = _fixed(fixed)
        values.update(v)
        sources.update(s)
    ladder_info: LadderSection | None = None
    if ladder is not None and not ladder.empty:
        if slo is None:
            raise ValueError("phase_metrics: ladder records need the slo they are judged against")
        held, breaking = ladder_verdict(summarize_steps(ladder), slo)
        values["max_concurrent_users"] = held
        ladder_info = LadderSection(scenario=str(ladder["scenario"].iloc[0]), max_concurrent_users=held,
                                    first_breaking_step=breaking, all_steps_held=breaking is None)  # fmt: skip
    if cache is not None and not cache.empty:
        values.update(_cache(cache))
    for key, value in (extra or {}).items():
        metric(key)
        values[key] = value
    result: dict[str, Any] = {"schema": SCHEMA, "phase": phase}
    result.update({key: _entry(key, value) for key, value in values.items()})
    result["sources"] = sources
    result["slo"] = asdict(slo) if slo else None
    result["ladder"] = ladder_info
    result["query_latency"] = QueryLatencySection(questions_total=questions_total, time_limit_s=time_limit_s)
    result["steps"] = _steps_json([query_latency, fixed, ladder, cache])
    return plain(result)


def plain(obj: Any) -> Any:
    """A JSON-safe copy: builtin types only, NaN and infinities as None."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [plain(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _num(obj)
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if obj is pd.NA or obj is pd.NaT:
        return None
    raise TypeError(f"cannot write {type(obj).__name__} to metrics.json")


def write_metrics_json(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics`` as plain JSON (NaN as null) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain(metrics), indent=2, allow_nan=False) + "\n")
    return path


def read_metrics_json(path: str | Path) -> dict[str, Any]:
    """A metrics.json written by ``write_metrics_json``."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{path} is not a ragperf metrics file (schema {SCHEMA})")
    return data
