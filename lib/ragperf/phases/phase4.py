"""Phase 4: the frozen app as several supervised instances behind nginx's load balancer, PgBouncer behind them.

The tier (:mod:`ragperf.systems.scaletier`) is planned from the target, applied through the change model and
measured five ways:

- the scaling curve: backend capacity at the load balancer for 1, 2, 3, 4 instances, through PgBouncer and without
  it, with questions no cache and no instance has seen, each step beside the load generator's CPU and each
  process's;
- what PgBouncer saves: connection set-up time through it and direct, PostgreSQL's backends under load;
- the users' seven metrics through the whole stack (the same scenarios as every phase);
- the capacity of the whole stack from empty caches with the Zipf mix, on a ladder well past 200 users, with the
  share of requests that missed every cache;
- failover: one instance killed by its PID in the middle of a load step, the requests nginx retried on another
  instance, the time until supervisord had it serving again; then a rolling restart of every instance under load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg.conninfo import conninfo_to_dict

from ragperf import lab
from ragperf.core import changes, procs
from ragperf.core.changes import Change
from ragperf.core.params import Params
from ragperf.core.target import TargetError
from ragperf.lab import labdb
from ragperf.measure import metrics, sampling, scenarios
from ragperf.measure.loadgen import LoadResult
from ragperf.measure.workload import WorkItem, zipf_workload
from ragperf.phases import phase
from ragperf.phases.phase import PhaseContext
from ragperf.systems import cachetier, nginx, nginxconf, pgbouncer, scaletier, supervisor
from ragperf.systems.monitoring import prometheus as prom
from ragperf.systems.monitoring import stack

log = logging.getLogger(__name__)

PHASE = "phase4"
CONNECT_SAMPLES = 50  # connections timed through PgBouncer and direct
CAPACITY_DRAWS = 20_000  # the Zipf stream of the capacity ladder: more than any step asks
ROLL_DELAY_S = 5.0  # seconds into the rolling-restart step before the first restart
PLACEHOLDER_COMMAND = "/path/to/the/app --port {port}"  # what a deployment's plan shows without scale.app_command


# --- the target and the plan ----------------------------------------------------------------------


def app(ctx: PhaseContext) -> scaletier.App:
    """How one instance runs: the lab's command line and environment, or a deployment's ``scale.app_command``."""
    if ctx.target.kind == "lab":
        provider = lab.provider(ctx.target.lab_dir)
        return scaletier.App(tuple(lab.app_argv("{port}")), tuple(sorted(lab.app_environment(provider).items())),
                             api_key=bool(provider.api_key.get_secret_value()))  # fmt: skip
    return scaletier.app_of_command(ctx.params.scale.app_command or PLACEHOLDER_COMMAND)


def database(ctx: PhaseContext) -> scaletier.Database:
    """Where the instances' database is and as whom they connect (the lab's app role, else ``changes.app_role``)."""
    if not ctx.target.admin_dsn:
        raise TargetError("phase4 needs the database's address for PgBouncer: give target.dsn")
    parts = conninfo_to_dict(ctx.target.admin_dsn)
    host = str(parts.get("host") or "127.0.0.1")
    if host.startswith("/"):
        raise TargetError(f"target.dsn names the socket directory {host}: PgBouncer connects over TCP, so give the "
                          "database's host name or address (host=127.0.0.1 locally)")  # fmt: skip
    role = labdb.APP_ROLE if ctx.target.kind == "lab" else (ctx.params.changes.app_role or ctx.target.app_role)
    dbname = str(parts.get("dbname") or labdb.DATABASE)
    return scaletier.Database(host, int(parts.get("port") or 5432), dbname, role or "app")


def desired(ctx: PhaseContext, **kwargs: Any) -> scaletier.Tier:
    """The tier the parameters ask for in front of this phase's database (see :func:`scaletier.desired`)."""
    tier = cachetier.running(cachetier.state_dir(ctx.target, ctx.params))
    return scaletier.desired(ctx.target, ctx.params, app(ctx), database(ctx), tier, run_as=labdb.run_as_user(),
                             **kwargs)  # fmt: skip


def plan(ctx: PhaseContext, tier: scaletier.Tier) -> list[Change]:
    """The changes from what runs to ``tier``."""
    now = scaletier.running(tier.base)
    proxy_now = cachetier.running(cachetier.state_dir(ctx.target, ctx.params)).proxy
    return scaletier.plan(now, tier, proxy_now)


def save_rendered(ctx: PhaseContext, tier: scaletier.Tier) -> Path:
    """Every file the tier runs with, as it would be written (none holds a secret), into ``phase4/scale/``."""
    out = ctx.dir("scale")
    (out / "balancer-nginx.conf").write_text(nginxconf.render(tier.balancer))
    (out / "pgbouncer.ini").write_text(pgbouncer.render(tier.pgbouncer))
    if tier.instances is not None:
        (out / "supervisord.conf").write_text(supervisor.render(tier.instances))
    for host, config in tier.hosts.items():
        (out / f"supervisord-{host}.conf").write_text(supervisor.render(config))
    return out


def plan_text(ctx: PhaseContext, tier: scaletier.Tier, planned: Sequence[Change]) -> str:
    """What the plan does and what would run, in Markdown."""
    mode = ctx.params.effective_mode()
    lines = []
    if tier.instances is not None:
        argv = " ".join(tier.instances.programs[0].argv)
        lines.append(f"- **{len(tier.instances.programs)} instances** under supervisord, each `{argv}` on its own "
                     f"port ({', '.join(tier.instances.addresses)}); supervisord restarts one that dies.")  # fmt: skip
    for host, config in tier.hosts.items():
        lines.append(f"- **on {host}**: {len(config.programs)} instance(s) under supervisord "
                     f"(`supervisord-{host}.conf`, ports {', '.join(str(p.port) for p in config.programs)}), each "
                     f"`{' '.join(config.programs[0].argv)}`, and PgBouncer on that host's loopback "
                     "(`pgbouncer.ini`): to be installed there (the files' paths are this machine's: adapt them); "
                     "nothing is started on it from here.")  # fmt: skip
    lines.append(f"- **the load balancer** (nginx) on {tier.balancer.url}: least_conn over "
                 f"{len(tier.balancer.upstreams)} instances with a shared zone, passive health checks, and a failed "
                 "request retried on another instance (POST too: /ask is read-only).")  # fmt: skip
    if not tier.remote:
        p = tier.pgbouncer
        lines.append(f"- **PgBouncer** on {p.listen_host}:{p.listen_port} in {p.pool_mode} mode, "
                     f"{p.default_pool_size} server connections to {p.server_host}:{p.server_port}/{p.dbname} as "
                     f"{p.role}; SCRAM from a 0600 file holding the role's verifier, not its password.")  # fmt: skip
    if tier.proxy is not None:
        lines.append("- **the cache add-on** (Phase 2) sends its misses to the balancer instead of the app, so its "
                     "single flight holds across every instance.")  # fmt: skip
    else:
        lines.append("- no Phase 2 tier runs: the balancer is the entrypoint.")
    if mode != "apply":
        lines.append(
            f"\n**Plan mode**: {len(planned)} change(s) planned, nothing started. "
            "`changes.mode: apply` (with `changes.allow_restart: true` on a deployment) applies them."
        )
    return "\n".join(lines)


def credentials(ctx: PhaseContext, tier: scaletier.Tier) -> tuple[str | None, str | None, str]:
    """The app role's password, its SCRAM verifier (read from pg_authid) and the provider's API key."""
    if ctx.target.kind == "lab":
        password = lab.credentials(ctx.target.lab_dir).app_password
        api_key = lab.provider(ctx.target.lab_dir).api_key.get_secret_value()
    else:
        import os

        password, api_key = os.environ.get("RAGPERF_APP_PGPASSWORD"), os.environ.get("RAGPERF_APP_API_KEY", "")
    verifier = None
    if not tier.remote:
        with admin(ctx) as conn:
            verifier = pgbouncer.scram_verifier(conn, tier.pgbouncer.role)
    return password, verifier, api_key


def admin(ctx: PhaseContext) -> psycopg.Connection:
    """A connection with the target's administrative access (autocommit)."""
    return psycopg.connect(ctx.target.admin_dsn, autocommit=True, **ctx.target.connect_kwargs())


def start(ctx: PhaseContext, tier: scaletier.Tier, appliers: Mapping[str, Any], journal: changes.Journal) -> None:
    """Write the credentials' files, then apply the plan to ``tier``; a failure rolls back what was applied."""
    password, verifier, api_key = credentials(ctx, tier)
    scaletier.write_secrets(tier, password=password, verifier=verifier, api_key=api_key)
    become(ctx, tier, appliers, journal)


def become(ctx: PhaseContext, tier: scaletier.Tier, appliers: Mapping[str, Any], journal: changes.Journal) -> None:
    """Take the running tier to ``tier``, journaled (so that rollback undoes it too); a failure rolls back."""
    changes.apply(changes.groups(plan(ctx, tier), appliers), journal)


def served_by(entries: pd.DataFrame) -> pd.Series:
    """The instance that answered each request of the balancer's access log (the last one nginx tried)."""
    return entries["upstreams"].map(lambda tried: tried[-1] if tried else "")


def entrypoint(ctx: PhaseContext, tier: scaletier.Tier) -> str:
    """Where the whole stack is measured: Phase 2's nginx when it runs, else the balancer."""
    cache = cachetier.running(cachetier.state_dir(ctx.target, ctx.params))
    return cache.nginx.url if cache.nginx is not None else tier.url


def checks(tier: scaletier.Tier, requests: int = 60) -> pd.DataFrame:
    """What the tier must get right, on the live tier: every instance serves, the balancer spreads requests over
    all of them (each answers ``/health``; nginx's access log says which served), and the add-on's upstream."""
    import httpx

    serving = supervisor.Supervisor(tier.instances.state_dir).processes() if tier.instances else []
    log_path = tier.balancer.state_dir / "access.log"
    since = time.time()
    with httpx.Client(base_url=tier.url, timeout=30, trust_env=False) as client:
        codes = [client.get("/health").status_code for _ in range(requests)]
    spread = served_by(nginx.entries(log_path, since=since - 1)).value_counts()
    rows = [
        ("every instance runs under supervisord", bool(serving) and all(p["state"] == "RUNNING" for p in serving),
         ", ".join(f"{p['name']} pid {p['pid']}" for p in serving) or "no instance here"),
        (f"{requests} requests through the balancer all succeed", all(c == 200 for c in codes),
         f"{sum(c == 200 for c in codes)} of {requests} answered 200"),
        ("the balancer uses every instance", len(spread) == len(tier.balancer.upstreams),
         ", ".join(f"{a}: {n}" for a, n in spread.items())),
    ]  # fmt: skip
    if tier.proxy is not None:
        running = cachetier.running(tier.proxy.state_dir.parent).proxy
        rows.append(("the cache add-on sends its misses to the balancer",
                     running is not None and running.upstream == tier.url,
                     f"upstream {running.upstream if running else 'not running'}"))  # fmt: skip
    return pd.DataFrame([{"check": c, "passed": bool(ok), "seen": seen} for c, ok, seen in rows])


# --- load steps -------------------------------------------------------------------------------------


def generator_params(params: Params) -> Params:
    """The parameters with ``scale.generator_workers`` Locust workers, so that the load generator is not the limit."""
    load = params.load.model_copy(update={"workers": params.scale.generator_workers})
    return params.model_copy(update={"load": load})


def unseen(items: Sequence[WorkItem], tag: str) -> list[WorkItem]:
    """``items`` made new by a tag no cache and no instance has seen (``… (tag n)``), so that the app answers all."""
    return [replace(item, question=f"{item.question} ({tag} {n})") for n, item in enumerate(items)]


def probes(ctx: PhaseContext, tier: scaletier.Tier) -> dict[str, sampling.Probe]:
    """CPU of the instances (together), the balancer, PgBouncer and PostgreSQL, and PostgreSQL's client backends."""
    instances = supervisor.Supervisor(tier.instances.state_dir) if tier.instances else None
    bouncer = pgbouncer.PgBouncer(tier.pgbouncer.state_dir)
    balancer = nginx.Nginx(tier.balancer.state_dir)

    def pids_of(server: Any) -> list[int]:
        proc = server.proc if server is not None else None
        return [proc.pid] if proc is not None and procs.is_alive(proc) else []

    def instance_pids() -> list[int]:
        return [p["pid"] for p in instances.processes() if p["pid"]] if instances is not None else []

    found: dict[str, sampling.Probe] = {
        "instances_cpu": sampling.cpu_probe(instance_pids),
        "balancer_cpu": sampling.cpu_probe(lambda: pids_of(balancer)),
        "pgbouncer_cpu": sampling.cpu_probe(lambda: pids_of(bouncer)),
    }
    if ctx.target.kind == "lab":
        state = lab.LabState.load(ctx.target.lab_dir)
        for name in ("postgres", "llm"):
            proc = state.processes.get(name)
            if proc is not None:
                found[f"{name}_cpu"] = sampling.cpu_probe(lambda p=proc: [p.pid] if procs.is_alive(p) else [])
    if ctx.target.admin_dsn:
        found["pg_backends"] = backends_probe(ctx)
    return found


def backends_probe(ctx: PhaseContext) -> sampling.Probe:
    """PostgreSQL's client backends of the app's database now (each reading on a connection of its own, closed)."""
    dbname = database(ctx).dbname

    def read() -> float:
        with admin(ctx) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                               "AND datname = %s AND pid <> pg_backend_pid()", (dbname,)).fetchone()  # fmt: skip
        return float(row[0])

    return read


def spread(tier: scaletier.Tier, measurement: phase.Measurement) -> dict[str, int]:
    """Requests each instance answered during the measurement, from the balancer's access log."""
    records = measurement.records()
    if records.empty:
        return {}
    start, end = float(records["start"].min()), float((records["start"] + records["latency_s"]).max())
    served = served_by(nginx.entries(tier.balancer.state_dir / "access.log", since=start - 1, until=end + 1))
    return {str(k): int(v) for k, v in served.value_counts().sort_index().items() if k}


def step_row(result: LoadResult, sampled: Mapping[str, float]) -> dict[str, Any]:
    """One load step's numbers: users, throughput, p50/p95, success, the load generator's CPU, and the samples."""
    s = metrics.summarize(result.records)
    cpu = result.generator_cpu
    running = cpu[cpu["running"]] if len(cpu) and "running" in cpu else cpu
    generator = running.groupby("t")["cpu_percent"].sum().mean() if len(running) else float("nan")
    return {
        "users": result.users, "requests": s["count"], "throughput_rps": s["throughput_rps"], "p50_s": s["p50"],
        "p95_s": s["p95"], "success_rate": s["success_rate"], "generator_cpu_pct": float(generator),
        "generator_note": result.generator_note, **sampled,
    }  # fmt: skip


def run_sampled(
    ctx: PhaseContext, tier: scaletier.Tier, url: str, items: Sequence[WorkItem], out: Path, *, users: int,
    duration_s: float, scenario: str, cycle: bool = False,
) -> tuple[LoadResult, dict[str, float]]:  # fmt: skip
    """One load step with Phase 4's load generator, sampling the probes while it runs."""
    refused = llm_refused(ctx)
    with sampling.Sampler(probes(ctx, tier)) as sampler:
        result = scenarios.run_step(url, items, generator_params(ctx.params), out, users=users,
                                    duration_s=duration_s, scenario=scenario, cycle=cycle)  # fmt: skip
    after = llm_refused(ctx)
    extra = {"llm_refused": None if refused is None or after is None else after - refused}
    if result.records.empty:
        return result, {**sampler.summary(), **extra}
    start, end = float(result.records["start"].min()), float(result.records["start"].max())
    return result, {**sampler.summary(start), **extra, "node_cpu_busy_pct": node_cpu(ctx, start, end)}


def llm_refused(ctx: PhaseContext) -> int | None:
    """Chat completions the lab's LLM simulator has refused with 429 since it started (its limit of concurrent
    completions stands for a real provider's rate limit); None elsewhere."""
    import httpx

    if ctx.target.kind != "lab":
        return None
    proc = lab.LabState.load(ctx.target.lab_dir).processes.get("llm")
    if proc is None or not procs.is_alive(proc):
        return None
    try:
        return int(httpx.get(f"http://127.0.0.1:{proc.port}/stats", timeout=5, trust_env=False).json()["rate_limited"])
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def node_cpu(ctx: PhaseContext, start: float, end: float) -> float | None:
    """The machine's busy CPU from ``start`` to ``end`` as Phase 3's Prometheus saw it (node_exporter), in percent
    of all its cores: the monitoring's view beside the processes sampled here; None when Prometheus does not run."""
    cfg = stack.running(stack.state_dir(ctx.target, ctx.params)).get("prometheus")
    if cfg is None:
        return None
    window = max(round(end - start), round(4 * cfg.scrape_interval_s))
    expr = f'100 * (1 - avg(rate(node_cpu_seconds_total{{mode="idle"}}[{window}s])))'
    try:
        frame = prom.query(cfg.url, expr, at=end)
    except prom.PrometheusError as exc:
        log.warning("no node CPU from Prometheus: %s", exc)
        return None
    return float(frame["value"].iloc[0]) if len(frame) else None


# --- the scaling curve -------------------------------------------------------------------------------


@dataclass
class Curve:
    """The scaling curve: one row per (PgBouncer or not, instances, users)."""

    steps: pd.DataFrame
    results: list[LoadResult] = field(default_factory=list)

    def best(self) -> pd.DataFrame:
        """Each configuration's highest throughput, and the p95 at the highest load."""
        rows = []
        for (pooled, n), group in self.steps.groupby(["pgbouncer", "instances"]):
            top = group.sort_values("users").iloc[-1]
            rows.append({"pgbouncer": bool(pooled), "instances": int(n),
                         "max_throughput_rps": float(group["throughput_rps"].max()),
                         "p95_at_max_users_s": float(top["p95_s"]), "max_users": int(top["users"]),
                         "instances_cpu_pct_at_max": float(top.get("instances_cpu", float("nan")))})  # fmt: skip
        return pd.DataFrame(rows)

    def text(self) -> str:
        """Where the curve flattens, and why (the processes' CPU beside the machine's cores)."""
        best = self.best()
        if best.empty:
            return "The scaling curve was not measured."
        import os

        cores = os.cpu_count() or 1
        lines = []
        for pooled, group in best.groupby("pgbouncer"):
            group = group.sort_values("instances")
            base = float(group["max_throughput_rps"].iloc[0])
            ratios = ", ".join(f"{int(r.instances)}: {r.max_throughput_rps:.1f}/s"
                               + (f" (×{r.max_throughput_rps / base:.2f})" if base > 0 else "")
                               for r in group.itertuples())  # fmt: skip
            gains = group["max_throughput_rps"].pct_change().fillna(1.0).tolist()
            flat = next((int(n) for n, g in zip(group["instances"], gains, strict=True) if g < 0.10), None)
            where = (f"it flattens from {flat} instances on (less than 10 % more than one instance fewer)"
                     if flat else "it still rises at the last count measured")  # fmt: skip
            lines.append(f"- {'through PgBouncer' if pooled else 'without PgBouncer'}: highest throughput by "
                         f"instances {ratios}; {where}.")  # fmt: skip
        steps = self.steps
        top = steps.loc[steps["throughput_rps"].idxmax()]

        def cpu(key: str) -> float:
            value = top.get(key)
            return 0.0 if value is None or pd.isna(value) else float(value)

        parts = {
            "the instances": "instances_cpu",
            "PostgreSQL": "postgres_cpu",
            "the LLM simulator": "llm_cpu",
            "PgBouncer": "pgbouncer_cpu",
            "nginx": "balancer_cpu",
            "the load generator": "generator_cpu_pct",
        }
        busy = sum(cpu(key) for key in parts.values())
        used = ", ".join(f"{name} {cpu(key):.0f} %" for name, key in parts.items() if key in top)
        lines.append(f"- At the highest throughput ({top['throughput_rps']:.1f} answers/s, {int(top['instances'])} "
                     f"instances, {int(top['users'])} users), in percent of one core: {used}; together {busy:.0f} % "
                     f"of the machine's {100 * cores} %"
                     + (" — the cores are the limit, not the number of processes."
                        if busy >= 0.8 * 100 * cores else "."))  # fmt: skip
        if "llm_refused" in steps and steps["llm_refused"].fillna(0).sum() > 0:
            hit = steps[steps["llm_refused"].fillna(0) > 0]
            where = ", ".join(f"{int(r.instances)} instance(s) at {int(r.users)} users ({int(r.llm_refused)} refused, "
                              f"{r.success_rate:.0f} % succeeded)" for r in hit.itertuples())  # fmt: skip
            lines.append(f"- The LLM provider refused completions (HTTP 429, which the app answers as 502) at {where}: "
                         "there the provider's limit of concurrent completions, not the app, was the limit; more "
                         "instances send it more at once.")  # fmt: skip
        node = cpu("node_cpu_busy_pct")
        if node:
            lines.append(f"- Phase 3's node_exporter saw the machine {node:.0f} % busy over that step (of all its "
                         f"{cores} cores, other work on this shared machine included).")  # fmt: skip
        return "\n".join(lines)


def scaling_curve(
    ctx: PhaseContext, appliers: Mapping[str, Any], journal: changes.Journal, items: Sequence[WorkItem]
) -> Curve:
    """For PgBouncer on and off (``scale.curve_pgbouncer``) and each count of ``scale.curve_instances``, a step of
    each of ``scale.curve_users`` at the balancer with unseen questions; the tier is put back as the parameters ask
    afterwards. Every reconfiguration is journaled."""
    s = ctx.params.scale
    most = max(*s.curve_instances, s.instances)
    rows, results = [], []
    out = ctx.dir("scaling")
    try:
        for pooled in (True, False) if s.curve_pgbouncer else (True,):
            for n in s.curve_instances:
                tier = desired(ctx, instances=most, balanced=n, pooled=pooled)
                become(ctx, tier, appliers, journal)
                for users in s.curve_users:
                    label = f"{'pooled' if pooled else 'direct'}_{n}_{users}"
                    work = unseen(items, f"curve {label}")
                    result, sampled = run_sampled(ctx, tier, tier.url, work, out / label, users=users,
                                                  duration_s=s.curve_step_s, scenario=f"curve_{label}")  # fmt: skip
                    rows.append({"pgbouncer": pooled, "instances": n, **step_row(result, sampled)})
                    results.append(result)
    finally:
        become(ctx, desired(ctx), appliers, journal)
    return Curve(pd.DataFrame(rows), results)


def curve_chart(curve: Curve) -> Any:
    """Throughput and p95 against users, a line per instance count, PgBouncer on (solid) and off (dashed)."""
    from ragperf.measure import charts

    @charts.chart
    def build() -> Any:
        fig = charts.figure(11, 4.2)
        left, right = fig.subplots(1, 2)
        palette = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]
        for (pooled, n), group in curve.steps.groupby(["pgbouncer", "instances"]):
            group = group.sort_values("users")
            style = {"color": palette[(int(n) - 1) % len(palette)], "ls": "-" if pooled else "--", "marker": "o"}
            label = f"{int(n)} instance{'s' if n > 1 else ''}{'' if pooled else ', no PgBouncer'}"
            left.plot(group["users"], group["throughput_rps"], label=label, **style)
            right.plot(group["users"], group["p95_s"], label=label, **style)
        left.set(xlabel="users", ylabel="answers/s", title="Throughput at the balancer (unseen questions)")
        right.set(xlabel="users", ylabel="p95 (s)", title="p95 at the balancer")
        left.legend(fontsize=8)
        return fig

    return build()


def connection_setup(ctx: PhaseContext, tier: scaletier.Tier) -> pd.DataFrame:
    """Connection set-up (connect, ``SELECT 1``, close) through PgBouncer and direct, as the app's role, timed
    ``CONNECT_SAMPLES`` times each: what every one of the app's requests pays."""
    db, passfile = database(ctx), tier.secrets_dir / scaletier.PASSFILE
    direct = f"host={db.host} port={db.port} dbname={db.dbname} user={db.role} passfile={passfile}"
    rows = []
    for label, dsn in (("through PgBouncer", tier.pgbouncer.dsn(user=db.role, passfile=passfile)), ("direct", direct)):
        times = pd.Series(pgbouncer.connect_times(dsn, CONNECT_SAMPLES))
        rows.append({"connection": label, "samples": len(times), "p50_ms": 1000 * times.quantile(0.5),
                     "p95_ms": 1000 * times.quantile(0.95), "mean_ms": 1000 * times.mean()})  # fmt: skip
    return pd.DataFrame(rows)


def pooling_summary(curve: Curve, setup: pd.DataFrame) -> dict[str, Any]:
    """What PgBouncer saved: connection set-up, PostgreSQL's backends and p95 at the highest load, with and without."""
    result: dict[str, Any] = {"connection_setup": setup.to_dict("records")}
    steps = curve.steps
    if steps.empty or steps["pgbouncer"].nunique() < 2:
        return result
    top_n, top_users = steps["instances"].max(), steps["users"].max()
    at = steps[(steps["instances"] == top_n) & (steps["users"] == top_users)].set_index("pgbouncer")
    for pooled, key in ((True, "pooled"), (False, "direct")):
        if pooled in at.index:
            row = at.loc[pooled]
            result[key] = {"p95_s": float(row["p95_s"]), "throughput_rps": float(row["throughput_rps"]),
                           "pg_backends_max": float(row.get("pg_backends_max", float("nan"))),
                           "instances": int(top_n), "users": int(top_users)}  # fmt: skip
    return result


# --- capacity through the whole stack -----------------------------------------------------------------


@dataclass
class Capacity:
    """The whole stack's ladder from empty caches: one row per step, with the share that missed every cache."""

    steps: pd.DataFrame
    max_users: int
    breaking: str | None
    max_users_misses: int

    def text(self, slo_text: str) -> str:
        if self.steps.empty:
            return "The capacity ladder was not measured."
        tail = f"it first broke at {self.breaking}" if self.breaking else "every step held: this is a lower bound"
        misses = self.steps["miss_pct"]
        return (f"Through the whole stack from empty caches, the Zipf mix held {slo_text} up to **{self.max_users} "
                f"users**; {tail}. {misses.min():.0f}–{misses.max():.0f} % of each step's requests missed every "
                f"cache; judged on those misses alone it held up to {self.max_users_misses} users.")  # fmt: skip


def capacity(ctx: PhaseContext, tier: scaletier.Tier, entry: str) -> Capacity:
    """``scale.capacity_users`` steps through ``entry``, each from empty caches, with a Zipf stream of the pool; the
    SLO is this phase's criteria (p95 and success rate), judged on all requests and on the misses alone."""
    s, slo = ctx.params.scale, ctx.criteria
    cache = cachetier.running(cachetier.state_dir(ctx.target, ctx.params))
    items = zipf_workload(phase.question_pool(ctx), CAPACITY_DRAWS, ctx.params.workload.zipf_exponent,
                          ctx.params.workload.seed + 4)  # fmt: skip
    rows, miss_rows = [], []
    out = ctx.dir("capacity")
    for users in s.capacity_users:
        cachetier.purge(cache)
        result, sampled = run_sampled(ctx, tier, entry, items, out / f"users_{users}", users=users,
                                      duration_s=s.capacity_step_s, scenario="capacity", cycle=True)  # fmt: skip
        records = result.records
        missed = records[~metrics.served_by(records).isin(metrics.CACHED)] if len(records) else records
        row = step_row(result, sampled)
        m = metrics.summarize(missed)
        row.update({"miss_pct": 100.0 * len(missed) / len(records) if len(records) else float("nan"),
                    "miss_p95_s": m["p95"], "miss_success_rate": m["success_rate"], "step": result.step,
                    "users_target": users, "count": row["requests"], "p95": row["p95_s"]})  # fmt: skip
        rows.append(row)
        miss_rows.append({"users_target": users, "step": result.step, "count": m["count"], "p95": m["p95"],
                          "success_rate": m["success_rate"]})  # fmt: skip
    steps = pd.DataFrame(rows)
    held, breaking = metrics.ladder_verdict(steps, slo)
    held_misses, _ = metrics.ladder_verdict(pd.DataFrame(miss_rows), slo)
    return Capacity(steps, held, breaking, held_misses)


# --- failover ----------------------------------------------------------------------------------------


@dataclass
class Failover:
    """One instance killed in the middle of a load step, and a rolling restart of every instance under load."""

    kill: LoadResult
    instances: int
    killed: str
    killed_pid: int
    killed_at: float
    recovered_s: float
    retried: pd.DataFrame
    rolling: LoadResult | None
    rolling_restarts: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        kill = metrics.summarize(self.kill.records)
        during = self.retried
        rolling = metrics.summarize(self.rolling.records) if self.rolling is not None else None
        return {
            "instances": self.instances,
            "killed": self.killed,
            "killed_pid": self.killed_pid,
            "requests": kill["count"],
            "success_rate": kill["success_rate"],
            "failed": kill["failures"],
            "requests_retried": len(during),
            "recovered_s": self.recovered_s,
            "rolling_requests": rolling["count"] if rolling else None,
            "rolling_failed": rolling["failures"] if rolling else None,
            "rolling_success_rate": rolling["success_rate"] if rolling else None,
            "rolling_under_load": self.rolling_under_load(),
            "rolling_restarts": self.rolling_restarts,
        }

    def rolling_under_load(self) -> bool | None:
        """True when every restart began after the rolling step's first request and ended before its last one."""
        if self.rolling is None or self.rolling.records.empty or not self.rolling_restarts:
            return None
        starts = self.rolling.records["start"]
        return bool(starts.min() < min(r["started"] for r in self.rolling_restarts)
                    and max(r["ended"] for r in self.rolling_restarts) < starts.max())  # fmt: skip

    def text(self) -> str:
        s = self.summary()
        head = (f"{s['killed']} (pid {s['killed_pid']}) was killed with SIGKILL in the middle of a "
                f"{self.kill.users}-user step: {s['requests']} requests, {s['success_rate']:.2f} % succeeded "
                f"({s['failed']} failed); nginx retried {s['requests_retried']} on another instance; supervisord had "
                f"it serving again after {s['recovered_s']:.1f} s.")  # fmt: skip
        if s["rolling_requests"] is None:
            return head
        slowest = max((r["serving_after_s"] for r in self.rolling_restarts), default=0.0)
        return (f"{head} Then every instance was restarted in turn under load (each served again within "
                f"{slowest:.1f} s): {s['rolling_requests']} requests, {s['rolling_failed']} failed.")  # fmt: skip


def failover(ctx: PhaseContext, tier: scaletier.Tier, entry: str, items: Sequence[WorkItem]) -> Failover:
    """Kill one instance (SIGKILL, by the PID supervisord reports) halfway through a step of unseen questions through
    ``entry``; then restart every instance in turn (SIGTERM: uvicorn finishes what it has) during another step."""
    if tier.instances is None:
        raise ValueError("failover needs instances started here")
    s = ctx.params.scale
    server = supervisor.Supervisor(tier.instances.state_dir)
    victim = tier.instances.programs[len(tier.instances.programs) // 2].name
    marks: dict[str, Any] = {}

    def kill() -> None:
        time.sleep(s.failover_step_s / 2)
        marks["at"] = time.time()
        try:
            marks["pid"] = server.kill(victim)
            marks["recovered_s"] = server.wait_serving(victim, not_pid=marks["pid"])
        except Exception as exc:  # said once the step is over
            marks["error"] = exc

    out = ctx.dir("failover")
    thread = threading.Thread(target=kill, name="failover-kill", daemon=True)
    thread.start()
    try:
        result = scenarios.run_step(entry, unseen(items, "failover"), generator_params(ctx.params), out / "kill",
                                    users=s.failover_users, duration_s=s.failover_step_s, scenario="failover_kill",
                                    cycle=False)  # fmt: skip
    finally:
        thread.join()
    if "error" in marks:
        raise RuntimeError(f"failover: {victim} was not killed and back: {marks['error']}") from marks["error"]
    start = float(result.records["start"].min()) if len(result.records) else marks["at"]
    retried = nginx.retried(tier.balancer.state_dir / "access.log", since=start - 1)
    restarts: list[dict[str, Any]] = []

    def roll() -> None:
        time.sleep(ROLL_DELAY_S)  # the load generator's users are running by then
        try:
            for program in tier.instances.programs:
                before, started = server.pid_of(program.name), time.time()
                seconds = server.restart_program(program.name)
                restarts.append({"instance": program.name, "old_pid": before, "new_pid": server.pid_of(program.name),
                                 "serving_after_s": seconds, "started": started, "ended": time.time()})  # fmt: skip
                time.sleep(1.0)
        except Exception as exc:  # said once the step is over
            marks["error"] = exc

    # long enough for every restart (each about 4 s here) to happen under load
    rolling_s = max(s.failover_step_s, ROLL_DELAY_S + 6.0 * len(tier.instances.programs) + 4.0)
    roller = threading.Thread(target=roll, name="rolling-restart", daemon=True)
    roller.start()
    try:
        rolling = scenarios.run_step(entry, unseen(items, "rolling"), generator_params(ctx.params), out / "rolling",
                                     users=s.failover_users, duration_s=rolling_s, scenario="failover_rolling",
                                     cycle=False)  # fmt: skip
    finally:
        roller.join()
    if "error" in marks:
        raise RuntimeError(f"rolling restart: {marks['error']}") from marks["error"]
    return Failover(
        result,
        len(tier.instances.programs),
        victim,
        marks["pid"],
        marks["at"],
        marks["recovered_s"],
        retried,
        rolling,
        restarts,
    )


def failover_chart(f: Failover) -> Any:
    """Requests per second that succeeded and failed through the kill step, with the kill and the recovery marked."""
    from ragperf.measure import charts

    @charts.chart
    def build() -> Any:
        fig = charts.figure(11, 3.6)
        ax = fig.subplots(1, 1)
        records, t0 = f.kill.records, f.killed_at
        if not records.empty:
            second = ((records["start"] + records["latency_s"]) - t0).round()
            counts = records.assign(second=second).groupby(["second", "ok"]).size().unstack(fill_value=0)
            for ok, colour, label in ((True, charts.BETTER, "succeeded"), (False, charts.WORSE, "failed")):
                if ok in counts:
                    ax.plot(counts.index, counts[ok], color=colour, label=label)
        if len(f.retried):
            ax.scatter(f.retried["time"] - t0, [0] * len(f.retried), marker="|", s=200, color="#7570b3",
                       label="retried on another instance")  # fmt: skip
        ax.axvline(0, color=charts.WORSE, ls="--", label=f"{f.killed} killed")
        ax.axvline(f.recovered_s, color=charts.BETTER, ls=":", label="serving again")
        ax.set(xlabel="seconds since the kill", ylabel="answers/s", title="Failover: one instance killed mid-step")
        ax.legend(fontsize=8)
        return fig

    return build()


def topology_chart(tier: scaletier.Tier) -> Any:
    """The path of a request, box by box, with each part's address."""
    from ragperf.measure import charts

    @charts.chart
    def build() -> Any:
        fig = charts.figure(11, 3.4)
        ax = fig.subplots(1, 1)
        ax.set_axis_off()
        cache = tier.proxy is not None
        columns: list[list[str]] = [["client\n(Locust)"]]
        if cache:
            columns += [["nginx cache\n(Phase 2)"], [f"cache add-on\n{tier.proxy.url.split('//')[1]}\n+ Redis"]]
        columns.append([f"load balancer\n{tier.url.split('//')[1]}\nleast_conn, retries"])
        names = [p.name for p in tier.instances.programs] if tier.instances else list(tier.balancer.upstreams)
        ports = [f":{p.port}" for p in tier.instances.programs] if tier.instances else list(tier.balancer.upstreams)
        columns.append([f"{n}\n{p}" for n, p in zip(names, ports, strict=True)])
        if tier.pooled:
            columns.append([f"PgBouncer\n:{tier.pgbouncer.listen_port}\n{tier.pgbouncer.pool_mode}"])
        columns.append(["PostgreSQL\n+ pgvector"])
        xs = [i / (len(columns) - 1) for i in range(len(columns))]
        centres: list[list[tuple[float, float]]] = []
        for x, boxes in zip(xs, columns, strict=True):
            ys = [0.5] if len(boxes) == 1 else [0.9 - 0.8 * j / (len(boxes) - 1) for j in range(len(boxes))]
            centres.append([(x, y) for y in ys])
            for y, text in zip(ys, boxes, strict=True):
                ax.text(x, y, text, ha="center", va="center", fontsize=8,
                        bbox={"boxstyle": "round,pad=0.4", "fc": "#f2f2f2", "ec": "#555555"})  # fmt: skip
        for left, right in zip(centres, centres[1:], strict=False):
            for a in left:
                for b in right:
                    ax.annotate("", xy=(b[0] - 0.045, b[1]), xytext=(a[0] + 0.045, a[1]),
                                arrowprops={"arrowstyle": "->", "color": "#777777", "lw": 0.8})  # fmt: skip
        ax.set_xlim(-0.08, 1.08)
        ax.set_ylim(0, 1)
        ax.set_title("Phase 4: the path of a request")
        return fig

    return build()


# --- metrics.json -------------------------------------------------------------------------------------


def sections(
    ctx: PhaseContext,
    *,
    tier: scaletier.Tier,
    entry: str,
    tier_checks: pd.DataFrame,
    curve: Curve | None,
    pooling: Mapping[str, Any] | None,
    cap: Capacity | None,
    fail: Failover | None,
    final: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """metrics.json's Phase 4 sections: ``scale`` (the tier and its checks), ``scaling``, ``capacity``,
    ``failover`` and ``final_verdict``."""
    return {
        "scale": {
            "entrypoint": entry,
            "balancer": tier.balancer.to_dict(),
            "instances": tier.instances.to_dict() if tier.instances else None,
            "pgbouncer": tier.pgbouncer.to_dict(),
            "checks": tier_checks.to_dict("records"),
        },
        "scaling": {
            "steps": curve.steps.drop(columns=["generator_note"], errors="ignore").to_dict("records"),
            "best": curve.best().to_dict("records"),
            "pgbouncer": dict(pooling or {}),
        }
        if curve is not None
        else None,
        "capacity": {
            "steps": cap.steps.drop(columns=["generator_note"], errors="ignore").to_dict("records"),
            "max_users": cap.max_users,
            "first_breaking_step": cap.breaking,
            "max_users_misses": cap.max_users_misses,
        }
        if cap is not None
        else None,  # fmt: skip
        "failover": fail.summary() if fail is not None else None,
        "final_verdict": dict(final) if final is not None else None,
    }
