"""Phase 2: a caching tier in front of the service, planned, applied and measured without touching the app.

The tier, each part on its own loopback port and started and stopped by PID::

    client → nginx (its own cache of POST /ask, per host) → cache add-on (answers shared through Redis,
    single flight, Redis outages bypassed) → the app

nginx answers repeats from its per-host cache; what it misses goes to the cache add-on, which every
nginx and every app instance (Phase 4) share through one Redis. Both key an answer by the question and
the mode; the add-on also folds Unicode form, case and spacing. Each layer marks its answers
(``X-Cache-Status`` for nginx, ``X-Shared-Cache-Status`` for the add-on) and the load test records
both, so the results say which layer served each request.

:func:`desired` derives the tier from the target and the parameters; :func:`plan` compares it with
what runs (a pure function of both); the change model applies it (``redis``, ``cacheproxy`` and
``nginx`` changes, in that order) and ``ragperf rollback phase2`` undoes it from the journal.
"""

from __future__ import annotations

import logging
import threading
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pandas as pd

from ragperf.measure import metrics, scenarios
from ragperf.measure.loadgen import LoadResult
from ragperf.measure.workload import WorkItem, read_pool, zipf_workload
from ragperf.phases import phase
from ragperf.phases.phase import PhaseContext
from ragperf.runs import targets
from ragperf.systems import cachetier, rediscache

log = logging.getLogger(__name__)

PHASE = "phase2"
REPLAY_SOURCE = "phase1"  # the phase whose recorded requests are replayed when no query log is given


# --- the hit-rate workloads ----------------------------------------------------------------------


def replay_items(ctx: PhaseContext) -> tuple[list[WorkItem], str]:
    """The replayed sequence: a query log from the parameters, else the requests Phase 1 sent, in order."""
    if ctx.params.workload.kind == "replay" and ctx.workloads is not None:
        return list(ctx.workloads.concurrent), f"the query log {ctx.params.workload.log_file}"
    path = ctx.run.path / REPLAY_SOURCE / "requests.parquet"
    if not path.exists():
        return [], f"nothing to replay: no query log given and no {REPLAY_SOURCE} in run {ctx.run.id}"
    records = pd.read_parquet(path, columns=["start", "question_id", "mode", "scenario"])
    records = records[records["scenario"].isin(["fixed", "ladder"])].sort_values("start")
    by_id = {(item.id, item.mode): item for item in read_pool(phase.question_pool(ctx))}
    items = [by_id[key] for key in zip(records["question_id"], records["mode"], strict=True) if key in by_id]
    return items, f"the {len(items):,} requests {REPLAY_SOURCE} of run {ctx.run.id} sent, in the order it sent them"


@dataclass
class HitRateRun:
    """One workload run from an empty cache: its records and what the add-on counted meanwhile."""

    label: str
    source: str
    result: LoadResult | None
    proxy_delta: dict[str, int]

    def summary(self) -> dict[str, Any]:
        if self.result is None:
            return {"workload": self.label, "source": self.source, "requests": 0}
        layers = metrics.cache_layers(self.result.records).iloc[0].to_dict()
        requests = int(layers["requests"])
        reached = cachetier.app_requests(self.proxy_delta)
        return {
            "workload": self.label,
            "source": self.source,
            "requests": requests,
            "hit_rate": layers["hit_rate"],
            "nginx_pct": layers["nginx_pct"],
            "redis_pct": layers["redis_pct"],
            "coalesced_pct": layers["coalesced_pct"],
            "reached_app": reached,
            "backend_load_reduction": 100.0 * (1 - reached / requests) if requests else None,
            "hit_p50_ms": 1000 * layers["hit_p50"],
            "hit_p95_ms": 1000 * layers["hit_p95"],
            "miss_p50_ms": 1000 * layers["miss_p50"],
            "miss_p95_ms": 1000 * layers["miss_p95"],
            "success_rate": metrics.summarize(self.result.records)["success_rate"],
        }


def hit_rate_workloads(ctx: PhaseContext, tier: cachetier.Tier) -> list[HitRateRun]:
    """The two Zipf workloads and the replayed log, each from empty caches, ``cache.workload_users`` users."""
    c, questions = ctx.params.cache, phase.question_pool(ctx)
    plans: list[tuple[str, list[WorkItem], str]] = []
    for label, exponent in zip(("zipf_low", "zipf_high"), c.zipf_exponents, strict=True):
        items = zipf_workload(questions, phase.ZIPF_DRAWS, exponent, ctx.params.workload.seed + 1)
        plans.append((label, items, f"the question pool with Zipf exponent {exponent:g}"))
    replayed, source = replay_items(ctx)
    plans.append(("replay", replayed, source))
    runs = []
    for label, items, source in plans:
        if not items:
            runs.append(HitRateRun(label, source, None, {}))
            continue
        cachetier.purge(tier)
        before = cachetier.counters(tier)
        result = scenarios.run_step(tier.url, items, ctx.params, ctx.dir("hit_rate") / label,
                                    users=c.workload_users, duration_s=c.workload_duration_s,
                                    scenario=f"hit_rate_{label}", cycle=True)  # fmt: skip
        runs.append(HitRateRun(label, source, result, cachetier.delta(cachetier.counters(tier), before)))
    return runs


def hit_rate_table(runs: Sequence[HitRateRun]) -> pd.DataFrame:
    return pd.DataFrame([r.summary() for r in runs])


# --- a Redis outage in the middle of a load step ------------------------------------------------


@dataclass
class Outage:
    """What happened while Redis was stopped in the middle of a load step."""

    result: LoadResult
    stopped_at: float  # epoch seconds
    restarted_at: float
    proxy_delta: dict[str, int]

    def summary(self) -> dict[str, Any]:
        records = self.result.records
        during = records[(records["start"] >= self.stopped_at) & (records["start"] < self.restarted_at)]
        # an answer nginx stored during the outage replays its BYPASS later: count what reached the add-on
        shared = metrics.cache_status_of(records, metrics.SHARED_COLUMN)[metrics.served_by(records) == "app"]
        return {
            "requests": len(records),
            "success_rate": metrics.summarize(records)["success_rate"],
            "requests_while_down": len(during),
            "success_rate_while_down": metrics.summarize(during)["success_rate"] if len(during) else None,
            "bypassed (X-Shared-Cache-Status)": int((shared == "BYPASS").sum()),
            "bypassed (add-on counter)": self.proxy_delta.get("bypassed", 0),
            "outages the add-on saw": self.proxy_delta.get("outages", 0),
            "redis_down_s": round(self.restarted_at - self.stopped_at, 1),
        }

    def text(self) -> str:
        s = self.summary()
        happened = s["bypassed (add-on counter)"] > 0
        return (
            f"Redis was stopped for {s['redis_down_s']:g} s in the middle of a {self.result.users}-user step: "
            f"{s['requests_while_down']} requests started meanwhile, "
            f"{(s['success_rate_while_down'] or 0):.1f} % of them succeeded; "
            f"{s['bypassed (add-on counter)']} went past the cache straight to the app "
            f"({'the outage shows in the results' if happened else 'no request saw it: nginx answered them all'}); "
            f"overall success {s['success_rate']:.1f} %."
        )


def redis_outage(
    ctx: PhaseContext, tier: cachetier.Tier, *, users: int | None = None, duration_s: float | None = None
) -> Outage:
    """Run a load step and stop Redis (by its PID) for its middle third, then start it again as it was."""
    c = ctx.params.cache
    users, duration_s = users or c.workload_users, duration_s or c.workload_duration_s
    server = rediscache.RedisServer(tier.redis.state_dir)
    marks: dict[str, float] = {}

    def outage() -> None:
        time.sleep(duration_s / 3)
        marks["stopped"] = time.time()
        server.stop()
        time.sleep(duration_s / 3)
        server.start(tier.redis)
        marks["restarted"] = time.time()

    exponent, seed = max(c.zipf_exponents), ctx.params.workload.seed + 2
    items = zipf_workload(phase.question_pool(ctx), phase.ZIPF_DRAWS, exponent, seed)
    cachetier.purge(tier)
    before = cachetier.counters(tier)
    thread = threading.Thread(target=outage, name="redis-outage", daemon=True)
    thread.start()
    try:
        result = scenarios.run_step(tier.url, items, ctx.params, ctx.dir("redis_outage"), users=users,
                                    duration_s=duration_s, scenario="redis_outage", cycle=True)  # fmt: skip
    finally:
        thread.join()
        if not server.running:
            server.start(tier.redis)
    return Outage(result, marks["stopped"], marks["restarted"], cachetier.delta(cachetier.counters(tier), before))


# --- what the phase measured ----------------------------------------------------------------------


def main_metrics(records: pd.DataFrame, proxy_delta: Mapping[str, int]) -> dict[str, float | None]:
    """Phase 2's own metrics of the main measurement: hit rate, cached/uncached latency, backend load."""
    served = metrics.served_by(records)
    cached = records.loc[served.isin(metrics.CACHED), "latency_s"]
    uncached = records.loc[served.isin(("app", "coalesced")), "latency_s"]
    n = len(records)
    reached = cachetier.app_requests(proxy_delta)
    return {
        "hit_rate": metrics.hit_rate(records),
        "cached_p50": float(cached.quantile(0.5)) if len(cached) else None,
        "cached_p95": float(cached.quantile(0.95)) if len(cached) else None,
        "uncached_p95": float(uncached.quantile(0.95)) if len(uncached) else None,
        "backend_load_reduction": 100.0 * (1 - reached / n) if n else None,
    }


JUDGED_WORKLOADS = ("replay", "zipf_high")  # the workloads the plan's hit rate is judged on, first found
EXPECTED = (
    ("Cache hit rate 50–70 % for frequent queries", "hit_rate", "%"),
    ("Response time for cached queries < 100 ms (p95 of cached answers)", "cached_p95", "s"),
    ("Backend load −60 % (requests reaching the app)", "backend_load_reduction", "%"),
)


def expected_impact(result: Mapping[str, Any], hit_rates: pd.DataFrame) -> pd.DataFrame:
    """The plan's "Expected Impact" for Phase 2 beside what was measured.

    Hit rate and backend load are judged on a workload run from empty caches: the replayed log (the
    traffic this run really sent), else the steeper Zipf workload. The Phase 0/1 scenarios cycle over one
    stream of a few thousand draws, so once its distinct questions are cached nearly every request hits:
    their hit rate is shown beside, not judged.
    """
    cached = metrics.value_of(result, "cached_p95")
    cycled = metrics.value_of(result, "hit_rate")
    columns = ["workload", "hit_rate", "backend_load_reduction"]
    rates = hit_rates.dropna(subset=["hit_rate"]) if "hit_rate" in hit_rates else pd.DataFrame(columns=columns)
    judged = next((rates[rates["workload"] == w].iloc[0] for w in JUDGED_WORKLOADS if w in set(rates["workload"])),
                  None)  # fmt: skip
    per_workload = ", ".join(f"{w} {h:.0f} %" for w, h in zip(rates["workload"], rates["hit_rate"], strict=True))
    cycled_text = "" if cycled is None else f"; the cycled Phase 0/1 scenarios: {cycled:.0f} %"
    if judged is None:
        hit_row = ("not measured" + cycled_text, False)
        load_row = ("not measured", False)
    else:
        hit_row = (f"{judged['hit_rate']:.1f} % ({judged['workload']}, from empty caches; {per_workload}{cycled_text})",
                   judged["hit_rate"] >= 50.0)  # fmt: skip
        reduction = judged["backend_load_reduction"]
        load_row = (f"−{reduction:.0f} % ({judged['workload']}, requests reaching the app counted by the add-on)",
                    reduction >= 60.0)  # fmt: skip
    rows = [
        (EXPECTED[0][0], *hit_row),
        (EXPECTED[1][0], "not measured" if cached is None else f"{1000 * cached:.0f} ms",
         cached is not None and cached < 0.1),
        (EXPECTED[2][0], *load_row),
    ]  # fmt: skip
    return pd.DataFrame(
        [{"expected (PLAN.md)": e, "measured": m, "met": "met" if ok else "not met"} for e, m, ok in rows]
    )


# --- live checks of the tier ---------------------------------------------------------------------


def _ask(client: httpx.Client, question: str, mode: str = "fast") -> httpx.Response:
    return client.post("/ask", json={"question": question, "mode": mode})


def _layer(response: httpx.Response) -> str:
    frame = pd.DataFrame([{"cache_status": response.headers.get("x-cache-status", ""),
                           metrics.SHARED_COLUMN: response.headers.get("x-shared-cache-status", "")}])  # fmt: skip
    return str(metrics.served_by(frame).iloc[0])


def checks(tier: cachetier.Tier, questions: Sequence[str]) -> pd.DataFrame:
    """What the caches must get right, checked through nginx on the live tier (from empty caches).

    ``questions``: at least two different questions the service answers. Returns one row per check with
    ``passed`` and what was seen.
    """
    if len(set(questions)) < 2:
        raise ValueError("checks need at least two different questions")
    first, second = list(dict.fromkeys(questions))[:2]
    cachetier.purge(tier)
    rows = []
    with httpx.Client(base_url=tier.url, timeout=60) as client:
        a1, b1 = _ask(client, first), _ask(client, second)
        a2, b2 = _ask(client, first), _ask(client, second)
        rows.append(
            (
                "a repeated question is served from a cache",
                _layer(a2) in metrics.CACHED,
                f"first ask: {_layer(a1)}, second: {_layer(a2)}",
            )
        )
        rows.append(
            (
                "two different questions never get each other's answer",
                a1.json() == a2.json() and b1.json() == b2.json() and a1.json() != b1.json(),
                "each answer identical to its own first answer, and different from the other's",
            )
        )
        nfd = unicodedata.normalize("NFD", first.upper().replace(" ", "  "))
        variant = _ask(client, nfd)
        rows.append(
            (
                "NFD, upper case and doubled spaces hit the same entry",
                _layer(variant) in metrics.CACHED and variant.json() == a1.json(),
                f"{_layer(variant)} (nginx keys the raw body, so Redis answers)",
            )
        )
        other_mode = _ask(client, first, "quality")
        rows.append(
            ("another mode is another entry", _layer(other_mode) == "app", f"mode quality: {_layer(other_mode)}")
        )
        bad = [client.post("/ask", json={"question": "", "mode": "fast"}) for _ in range(2)]
        rows.append(
            (
                "an error answer is never cached",
                all(r.status_code == 422 for r in bad) and _layer(bad[1]) not in metrics.CACHED,
                f"HTTP {bad[1].status_code}, second time {bad[1].headers.get('x-cache-status', 'no status')}",
            )
        )
    cachetier.purge(tier)  # the measurements after this start from empty caches
    return pd.DataFrame([{"check": c, "passed": bool(ok), "seen": seen} for c, ok, seen in rows])  # fmt: skip


def start_tier(
    ctx: PhaseContext, tier: cachetier.Tier, planned: Sequence[Any], appliers: Mapping[str, Any], journal: Any
) -> str:
    """Apply the tier's plan, then route the phase's requests through nginx (``ctx.target.base_url``);
    returns what the service is measured through."""
    from ragperf.core import changes

    app_url = ctx.target.base_url
    changes.apply(changes.groups(list(planned), appliers), journal)
    ctx.target.base_url = tier.url  # from now on, every request of the phase goes through nginx
    targets.check_reachable(ctx.target)
    return f"the service is measured through {tier.url} (nginx) -> {tier.proxy_url} (cache add-on) -> {app_url}"


def sections(
    ctx: PhaseContext,
    *,
    app_url: str,
    tier: cachetier.Tier,
    proxy_delta: Mapping[str, int],
    tier_checks: pd.DataFrame,
    hit_rates: pd.DataFrame,
    outage: Outage | None,
    overhead: pd.DataFrame | None,
) -> dict[str, Any]:
    """metrics.json's ``cache`` section: where the tier ran, its parts, the add-on's counters, the live checks,
    the hit-rate workloads, the Redis outage and the cost of a hit."""
    return {
        "cache": {
            "entrypoint": ctx.target.base_url,
            "app_url": app_url,
            "tier": {k: getattr(tier, k).to_dict() for k in cachetier.PARTS},
            "proxy_counters": dict(proxy_delta),
            "checks": tier_checks.to_dict("records"),
            "hit_rate_workloads": hit_rates.to_dict("records"),
            "redis_outage": outage.summary() if outage is not None else None,
            "hit_cost": overhead.to_dict("records") if overhead is not None else None,
        }
    }
