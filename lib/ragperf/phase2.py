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
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from ragperf import cacheproxy, metrics, nginx, phase, procs, rediscache, scenarios
from ragperf.changes import Change
from ragperf.loadgen import LoadResult
from ragperf.params import Params
from ragperf.phase import PhaseContext, Target
from ragperf.workload import WorkItem, read_pool, zipf_workload

log = logging.getLogger(__name__)

PHASE = "phase2"
PARTS = ("redis", "proxy", "nginx")
REPLAY_SOURCE = "phase1"  # the phase whose recorded requests are replayed when no query log is given


@dataclass(frozen=True)
class Tier:
    """The three parts of the caching tier, as configured."""

    redis: rediscache.RedisConfig
    proxy: cacheproxy.ProxyConfig
    nginx: nginx.CacheConfig

    @property
    def url(self) -> str:
        """The new entrypoint: nginx."""
        return f"http://{self.nginx.listen_host}:{self.nginx.listen_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.proxy.listen_host}:{self.proxy.listen_port}"

    def table(self) -> pd.DataFrame:
        """One row per part: where it listens, what it talks to, its settings, its files."""
        return pd.DataFrame(
            [
                {"part": "nginx", "listens": self.url, "talks to": ", ".join(self.nginx.upstreams),
                 "settings": f"ttl {self.nginx.ttl_s} s, {self.nginx.cache_size_mb} MB on disk, bodies up to "
                             f"{self.nginx.max_body_kb} KiB cached", "files": str(self.nginx.state_dir)},
                {"part": "cache add-on", "listens": self.proxy_url, "talks to": f"{self.proxy.upstream}, Redis",
                 "settings": f"ttl {self.proxy.ttl_s} s, key version {self.proxy.key_version}",
                 "files": str(self.proxy.state_dir)},
                {"part": "Redis", "listens": self.redis.url, "talks to": "",
                 "settings": f"maxmemory {self.redis.maxmemory_mb} MB, {self.redis.policy}, "
                             f"{'RDB snapshots' if self.redis.persist else 'no persistence'}",
                 "files": str(self.redis.state_dir)},
            ]
        )  # fmt: skip


def state_dir(target: Target, params: Params) -> Path:
    """Where the tier keeps its files: ``cache.state_dir``, else the lab's directory, else ~/.local/state."""
    if params.cache.state_dir is not None:
        return Path(params.cache.state_dir).expanduser().absolute()
    if target.kind == "lab" and target.lab_dir is not None:
        return Path(target.lab_dir).absolute() / "cache"
    return Path.home() / ".local" / "state" / "ragperf" / "cache"


@dataclass(frozen=True)
class Running:
    """What of the tier runs now (None for a part that does not)."""

    redis: rediscache.RedisConfig | None
    proxy: cacheproxy.ProxyConfig | None
    nginx: nginx.CacheConfig | None

    def any(self) -> bool:
        return any(part is not None for part in (self.redis, self.proxy, self.nginx))


def running(base: Path) -> Running:
    """The tier's parts running from ``base``, by their process records."""
    return Running(
        rediscache.RedisServer(base / "redis").config,
        cacheproxy.ProxyServer(base / "proxy").config,
        nginx.Nginx(base / "nginx").config,
    )


def _port(wanted: int, now: Any) -> int:
    """``wanted``, or for 0 the running part's port, else a free one."""
    if wanted:
        return wanted
    if now is not None:
        return int(getattr(now, "port", None) or now.listen_port)
    return procs.free_port()


def desired(target: Target, params: Params, now: Running | None = None) -> Tier:
    """The tier the parameters ask for in front of ``target`` (ports of 0: the running ones, else free ones)."""
    base = state_dir(target, params)
    now = now or running(base)
    c = params.cache
    redis = rediscache.RedisConfig(port=_port(c.redis_port, now.redis), state_dir=base / "redis",
                                   maxmemory_mb=c.redis_maxmemory_mb, policy=c.redis_policy)  # fmt: skip
    proxy = cacheproxy.ProxyConfig(
        listen_port=_port(c.proxy_port, now.proxy),
        upstream=target.base_url,
        redis_url=redis.url,
        state_dir=base / "proxy",
        ttl_s=c.ttl_s,
        timeout_s=max(60.0, params.load.timeout_s),
    )
    front = nginx.CacheConfig(
        listen_port=_port(c.listen_port, now.nginx),
        upstreams=(f"{proxy.listen_host}:{proxy.listen_port}",),
        state_dir=base / "nginx",
        ttl_s=c.ttl_s,
        cache_size_mb=c.nginx_cache_mb,
        max_body_kb=c.max_body_kb,
        proxy_timeout_s=max(60.0, params.load.timeout_s),
        # The add-on coalesces concurrent misses and wakes every waiter the moment the answer is there;
        # nginx's own lock would make them wait for its 500 ms poll (measured: hits at 500 ms).
        cache_lock=False,
    )
    return Tier(redis, proxy, front)


def plan(now: Running, tier: Tier) -> list[Change]:
    """The changes from what runs to ``tier``: Redis first, then the add-on, then nginx (undone in reverse)."""
    return [
        *rediscache.plan(now.redis, tier.redis),
        *cacheproxy.plan(now.proxy, tier.proxy),
        *nginx.plan(now.nginx, tier.nginx),
    ]


def stop_all(base: Path) -> list[str]:
    """Stop every part of a tier kept in ``base`` by its recorded PID, front first; the names of those that ran."""
    stopped = []
    if nginx.Nginx(base / "nginx").stop():
        stopped.append("nginx")
    if cacheproxy.ProxyServer(base / "proxy").stop():
        stopped.append("cache add-on")
    redis = rediscache.RedisServer(base / "redis")
    if redis.stop():
        stopped.append("Redis")
    redis.clear_state()
    return stopped


def purge(tier: Tier | Running) -> dict[str, int]:
    """Empty both caches, for when the corpus changed: nginx's by a new key version (a reload), Redis's by
    deleting the add-on's keys (SCAN, never FLUSHALL). A part that does not run is skipped."""
    done: dict[str, int] = {}
    if tier.nginx is not None:
        done["nginx_key_version"] = nginx.Nginx(tier.nginx.state_dir).purge()
    if tier.redis is not None:
        done["redis_keys_deleted"] = cacheproxy.purge(tier.redis.url)
    return done


def counters(tier: Tier) -> dict[str, int]:
    """The cache add-on's counters (hits, misses, coalesced, bypassed ...) since it started."""
    response = httpx.get(f"{tier.proxy_url}/__cache/health", timeout=10)
    response.raise_for_status()
    return {k: v for k, v in response.json().items() if isinstance(v, int) and not isinstance(v, bool)}


def delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """What the add-on counted between two :func:`counters` readings."""
    return {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in after}


def app_requests(delta: Mapping[str, int]) -> int:
    """Requests the add-on sent to the app: its misses, the requests it passed by Redis, and other paths."""
    return int(delta.get("misses", 0) + delta.get("bypassed", 0) + delta.get("passthrough", 0))


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
        reached = app_requests(self.proxy_delta)
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


def hit_rate_workloads(ctx: PhaseContext, tier: Tier) -> list[HitRateRun]:
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
        purge(tier)
        before = counters(tier)
        result = scenarios.run_step(tier.url, items, ctx.params, ctx.dir("hit_rate") / label,
                                    users=c.workload_users, duration_s=c.workload_duration_s,
                                    scenario=f"hit_rate_{label}", cycle=True)  # fmt: skip
        runs.append(HitRateRun(label, source, result, delta(counters(tier), before)))
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


def redis_outage(ctx: PhaseContext, tier: Tier, *, users: int | None = None, duration_s: float | None = None) -> Outage:
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
    purge(tier)
    before = counters(tier)
    thread = threading.Thread(target=outage, name="redis-outage", daemon=True)
    thread.start()
    try:
        result = scenarios.run_step(tier.url, items, ctx.params, ctx.dir("redis_outage"), users=users,
                                    duration_s=duration_s, scenario="redis_outage", cycle=True)  # fmt: skip
    finally:
        thread.join()
        if not server.running:
            server.start(tier.redis)
    return Outage(result, marks["stopped"], marks["restarted"], delta(counters(tier), before))


# --- what the phase measured ----------------------------------------------------------------------


def main_metrics(records: pd.DataFrame, proxy_delta: Mapping[str, int]) -> dict[str, float | None]:
    """Phase 2's own metrics of the main measurement: hit rate, cached/uncached latency, backend load."""
    served = metrics.served_by(records)
    cached = records.loc[served.isin(metrics.CACHED), "latency_s"]
    uncached = records.loc[served.isin(("app", "coalesced")), "latency_s"]
    n = len(records)
    reached = app_requests(proxy_delta)
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


def checks(tier: Tier, questions: Sequence[str]) -> pd.DataFrame:
    """What the caches must get right, checked through nginx on the live tier (from empty caches).

    ``questions``: at least two different questions the service answers. Returns one row per check with
    ``passed`` and what was seen.
    """
    if len(set(questions)) < 2:
        raise ValueError("checks need at least two different questions")
    first, second = list(dict.fromkeys(questions))[:2]
    purge(tier)
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
    purge(tier)  # the measurements after this start from empty caches
    return pd.DataFrame([{"check": c, "passed": bool(ok), "seen": seen} for c, ok, seen in rows])  # fmt: skip
