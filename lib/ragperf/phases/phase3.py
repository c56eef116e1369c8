"""Phase 3: monitoring and alerting that see the whole stack, prove their alerts fire, and cost nothing measurable.

The stack (:mod:`ragperf.systems.monitoring.stack`) is planned from the target, applied through the change model
(database first: pg_stat_statements, the monitoring role, the plan's views; then the exporters, the webhook
receiver, Alertmanager and Prometheus) and measured three ways:

- the Phase 0–2 scenarios through the service's entrypoint while everything is scraped, charted from Prometheus
  with the same panels the Grafana dashboards ship (:mod:`ragperf.systems.monitoring.dashboards`);
- a fault drill: a lab service stopped by its PID in the middle of a load step, and the SLO alert followed from
  pending to firing to resolved, up to the notification the webhook receiver wrote into the run directory;
- the monitoring's own cost: load steps with the whole stack stopped and running, in one run, compared with
  bootstrap intervals.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ragperf import lab
from ragperf.core import changes, procs
from ragperf.core.changes import Change
from ragperf.core.target import TargetError
from ragperf.measure import compare, metrics, scenarios
from ragperf.measure.loadgen import LoadResult
from ragperf.measure.workload import WorkItem, write_workload_jsonl
from ragperf.phases import phase1
from ragperf.phases.phase import PhaseContext
from ragperf.runs import targets
from ragperf.systems import cachetier
from ragperf.systems.monitoring import alertsink, dashboards, healthmon, stack
from ragperf.systems.monitoring import prometheus as prom
from ragperf.systems.postgres import pgmonitor

log = logging.getLogger(__name__)

PHASE = "phase3"
STATEMENTS = phase1.STATEMENTS
SLO_ALERTS = ("SLOLatencyBudgetBurn", "SLOErrorBudgetBurn")
ALERT_POLL_S = 1.0
RESOLVE_WAIT_S = 120.0
ALERT_TIME_COLUMNS = ["alertname", "severity", "sli", "pending_s", "firing_s", "resolved_after_recovery_s",
                      "notified_firing", "notified_resolved"]  # fmt: skip
COST_DRAWS = 1000  # the monitoring-cost steps' workload: the first draws of the Zipf stream


# --- the target and the plan ----------------------------------------------------------------------


def entrypoint(ctx: PhaseContext) -> tuple[str, cachetier.Running]:
    """Where the service is measured: Phase 2's nginx when its tier runs (then every layer is monitored), else the
    app's own URL; and what of the tier runs."""
    tier = cachetier.running(cachetier.state_dir(ctx.target, ctx.params))
    if tier.nginx is not None:
        return tier.nginx.url, tier
    return ctx.target.base_url, tier


def database(ctx: PhaseContext) -> stack.Database | None:
    """Where the postgres exporter connects (the target's database; its version picks the queries), or None."""
    if not ctx.target.admin_dsn:
        return None
    parts = conninfo_to_dict(ctx.target.admin_dsn)
    host = str(parts.get("host") or "127.0.0.1")
    if host.startswith("/"):
        raise TargetError(
            f"target.dsn names the socket directory {host}: the postgres exporter connects "
            "over TCP, so give the database's host name or address (host=127.0.0.1 locally)"
        )
    with admin(ctx) as conn:
        version = pgmonitor.server_version(conn)
        dbname = conn.execute("SELECT current_database()").fetchone()[0]
    return stack.Database(host, int(parts.get("port") or 5432), dbname, version)


def admin(ctx: PhaseContext) -> psycopg.Connection:
    """A connection with the target's administrative access (autocommit)."""
    return psycopg.connect(ctx.target.admin_dsn, autocommit=True, **ctx.target.connect_kwargs())


def as_monitor(ctx: PhaseContext, stk: stack.Stack) -> psycopg.Connection:
    """A connection as the monitoring role (pg_monitor), with the password from its 0600 file: what the DBA view
    reads, with no more rights than the exporter has."""
    if stk.pgexporter is None:
        raise ValueError("no monitoring role: the target has no database access (target.dsn)")
    dsn = make_conninfo(ctx.target.admin_dsn or "", user=stk.pgexporter.user)
    password = pgmonitor.read_password(stk.pgexporter.password_file)
    return psycopg.connect(dsn, password=password, autocommit=True)


def plan_database(ctx: PhaseContext, stk: stack.Stack) -> list[Change]:
    """The database's changes: pg_stat_statements, the monitoring role, the plan's two views (in that order)."""
    if stk.pgexporter is None:
        return []
    with admin(ctx) as conn:
        planned = pgmonitor.plan_extension(conn)
        planned += pgmonitor.plan_monitor_role(conn, stk.pgexporter.user, stk.pgexporter.password_file)
        planned += pgmonitor.plan_monitor_views(conn, stk.pgexporter.user)
    return planned


def save_rendered(ctx: PhaseContext, stk: stack.Stack) -> Path:
    """Every configuration and rules file the monitoring runs with, and the Grafana provisioning, in the run
    directory (``phase3/monitoring/``): the audit trail of what monitored the run. None holds a secret."""
    out = ctx.dir("monitoring")
    for name, text in stack.rendered_files(stk).items():
        procs.write_atomic(out / name, text)
    dashboards.write_provisioning(out / "grafana", stk.url)
    return out


def start(ctx: PhaseContext, planned: Sequence[Change], appliers: Mapping[str, Any], journal: Any,
          stk: stack.Stack) -> pd.DataFrame:  # fmt: skip
    """Apply the plan, then wait until Prometheus has scraped every target but the health monitor's (which starts
    with the measurement) once; returns the targets. A failure of either undoes everything this phase applied."""
    applied = changes.apply(changes.groups(list(planned), appliers), journal)
    jobs = [job for job in stk.scrape_targets()["job"].unique() if job != stack.HEALTHMON]
    try:
        found = prom.wait_for_targets(stk.url, jobs, timeout=90)
    except prom.PrometheusError as exc:
        undone = changes.undo(changes.groups(applied, appliers), journal)
        raise changes.RolledBack(f"{exc}; rolled back {len(undone)} change(s): {', '.join(undone)}") from exc
    return found[found["job"] != stack.HEALTHMON].reset_index(drop=True)


def start_health_monitor(
    ctx: PhaseContext, stk: stack.Stack, entry: str, appliers: Mapping[str, Any], journal: Any, duration_s: float
) -> tuple[Change, pd.DataFrame]:
    """Start the health monitor on the service's entrypoint for ``duration_s`` at most (a change, undone when the
    phase is done or rolled back), and wait until Prometheus scrapes it; its questions are ones no scenario asks,
    rotating. Returns the change and every scrape target's health, now all up."""
    assert ctx.workloads is not None
    questions = ctx.out / "health_questions.jsonl"
    write_workload_jsonl(questions, ctx.workloads.spare[-200:])
    cfg = stack.health_monitor(stk, ctx.params, entry, questions, ctx.out, duration_s)
    planned = healthmon.plan(stack.running(stk.base).get(stack.HEALTHMON), cfg)
    changes.apply(changes.groups(planned, appliers), journal)
    prom.wait_for_targets(stk.url, [stack.HEALTHMON], timeout=60)
    return planned[0], prom.targets(stk.url)


def stop_health_monitor(change: Change, appliers: Mapping[str, Any], journal: Any) -> pd.DataFrame:
    """Stop the health monitor (its change undone) and read the samples it wrote."""
    changes.undo([(appliers[healthmon.KIND], [change])], journal)
    return healthmon.read_samples(Path(change.after["out_path"]))


def health_summary(samples: pd.DataFrame) -> pd.DataFrame:
    """Per endpoint: probes, success, p50/p95, and which layer answered the asks."""
    if samples.empty:
        return pd.DataFrame()
    rows = []
    for endpoint, group in samples.groupby("endpoint"):
        latency = group["latency_s"].dropna()
        served = group["served_by"].value_counts(normalize=True)
        rows.append({"endpoint": endpoint, "probes": len(group), "success_pct": 100.0 * group["ok"].mean(),
                     "p50_s": latency.quantile(0.5), "p95_s": latency.quantile(0.95),
                     "answered by": ", ".join(f"{k} {100 * v:.0f} %" for k, v in served.items())})  # fmt: skip
    return pd.DataFrame(rows)


# --- what Prometheus saw --------------------------------------------------------------------------------


def marks(results: Sequence[LoadResult]) -> list[tuple[str, float, float]]:
    """(label, start, end) in epoch seconds of each load step, for shading the charts."""
    spans = []
    for r in results:
        if r.records.empty:
            continue
        spans.append((f"{r.scenario} {r.step}", float(r.records["start"].min()),
                      float((r.records["start"] + r.records["latency_s"]).max())))  # fmt: skip
    return spans


def panel_frames(stk: stack.Stack, start: float, end: float, only: Sequence[str] | None = None) -> dict[str, Any]:
    """Every dashboard panel's series over [start, end] from Prometheus, a rate window of four scrapes."""
    interval = stk.prometheus.scrape_interval_s

    def ask(expr: str, a: float, b: float, step: float) -> pd.DataFrame:
        return prom.query_range(stk.url, expr, a, b, step)

    step = prom.range_step(start, end, None, interval)
    return dashboards.panel_frames(ask, start, end, 4 * interval, step, only)


# --- the DBA view ------------------------------------------------------------------------------------


def earlier_statements(ctx: PhaseContext) -> tuple[list[dict[str, Any]], str]:
    """The statements of the earliest measurement of this run that kept them: Phase 1 before its indexes (1a),
    else Phase 1 after them; Phase 0 has none (the untuned server does not load pg_stat_statements)."""
    for relative, label in (("phase1/1a", "Phase 1 before the indexes (settings only)"),
                            ("phase1", "Phase 1 after the indexes")):  # fmt: skip
        path = ctx.run.path / relative / STATEMENTS
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8")), label
    return [], ""


def dba_view(conn: psycopg.Connection) -> dict[str, pd.DataFrame]:
    """The PgHero view: buffer cache hit ratio, index usage (unused by size), scans of LangChain's table,
    connections by state and wait event, blocked locks."""
    return {
        "Buffer cache hit ratio": pgmonitor.buffer_hit_ratio(conn),
        "Index usage (unused first, by size)": pgmonitor.index_usage(conn),
        "Sequential vs index scans on langchain_pg_embedding": pgmonitor.table_scans(conn),
        "Connections by state and wait event": pgmonitor.activity(conn),
        "Blocked locks": pgmonitor.blocked_locks(conn),
    }


def plan_views(conn: psycopg.Connection) -> dict[str, pd.DataFrame]:
    """The plan's two views, as they read now (created with correct columns)."""
    return {name: _select(conn, f"SELECT * FROM {pgmonitor.SCHEMA}.{name}")
            for name in ("connection_stats", "query_performance")}  # fmt: skip


def _select(conn: psycopg.Connection, query: str) -> pd.DataFrame:
    cur = conn.execute(query)
    return pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description or []])


# --- the fault drill ----------------------------------------------------------------------------------


@dataclass
class Drill:
    """A fault in the middle of a monitored load step, and what the alerting did about it."""

    service: str
    result: LoadResult
    fault_start: float
    fault_end: float
    timeline: pd.DataFrame  # t, alertname, state, severity, sli (one row per poll per active alert)
    notifications: pd.DataFrame
    rules: pd.DataFrame = field(default_factory=pd.DataFrame)

    def alert_times(self) -> pd.DataFrame:
        """Per alert that went active: when it was first pending, first firing, and resolved (gone after firing),
        in seconds from the fault's start, and when its notifications arrived."""
        rows = []
        if self.timeline.empty:
            return pd.DataFrame(columns=ALERT_TIME_COLUMNS)
        polls = sorted(self.timeline["t"].unique())
        active = self.timeline[self.timeline["alertname"].notna()]
        for (name, severity, sli), group in active.groupby(["alertname", "severity", "sli"], dropna=False):
            pending = group.loc[group["state"] == "pending", "t"]
            firing = group.loc[group["state"] == "firing", "t"]
            resolved = None
            if len(firing):
                later = [t for t in polls if t > firing.max()]
                resolved = later[0] if later else None
            sent = _notifications_of(self.notifications, name, severity, sli)
            rows.append({
                "alertname": name, "severity": severity, "sli": sli,
                "pending_s": _since(pending.min() if len(pending) else None, self.fault_start),
                "firing_s": _since(firing.min() if len(firing) else None, self.fault_start),
                "resolved_after_recovery_s": _since(resolved, self.fault_end),
                "notified_firing": _any_status(sent, "firing"),
                "notified_resolved": _any_status(sent, "resolved"),
            })  # fmt: skip
        return pd.DataFrame(rows, columns=ALERT_TIME_COLUMNS)

    def slo_alert(self) -> dict[str, Any] | None:
        """The first SLO alert that fired and resolved, with its times; None if none did."""
        times = self.alert_times()
        if times.empty:
            return None
        slo = times[times["alertname"].isin(SLO_ALERTS) & times["firing_s"].notna()]
        if slo.empty:
            return None
        return slo.sort_values("firing_s").iloc[0].to_dict()

    def summary(self) -> dict[str, Any]:
        records = self.result.records
        during = records[(records["start"] >= self.fault_start) & (records["start"] < self.fault_end)]
        slo = self.slo_alert()
        return {
            "fault": f"{self.service} stopped by its PID",
            "fault_s": round(self.fault_end - self.fault_start, 1),
            "requests": len(records),
            "success_rate_during_fault": metrics.summarize(during)["success_rate"] if len(during) else None,
            "slo_alert": slo["alertname"] if slo else None,
            "fault_to_firing_s": slo["firing_s"] if slo else None,
            "recovery_to_resolved_s": slo["resolved_after_recovery_s"] if slo else None,
            "notified_firing": bool(slo and slo["notified_firing"]),
            "notified_resolved": bool(slo and slo["notified_resolved"]),
            "alerts_that_fired": sorted(set(self.timeline.loc[self.timeline["state"] == "firing", "alertname"]))
            if not self.timeline.empty
            else [],
        }

    def text(self) -> str:
        s = self.summary()
        if s["slo_alert"] is None:
            return (f"The {self.service} fault lasted {s['fault_s']:g} s; no SLO alert fired "
                    f"(alerts that fired: {', '.join(s['alerts_that_fired']) or 'none'}).")  # fmt: skip
        resolved = s["recovery_to_resolved_s"]
        return (
            f"The {self.service} was stopped for {s['fault_s']:g} s in the middle of a {self.result.users}-user step; "
            f"{s['success_rate_during_fault'] or 0:.1f} % of the requests started meanwhile succeeded. "
            f"**{s['slo_alert']}** fired {s['fault_to_firing_s']:.0f} s after the fault began and "
            + (f"resolved {resolved:.0f} s after the service was back" if resolved is not None else "had not resolved")
            + f"; the webhook received the firing notification: {'yes' if s['notified_firing'] else 'no'}, "
            f"the resolved one: {'yes' if s['notified_resolved'] else 'no'}."
        )


def _since(t: float | None, origin: float) -> float | None:
    return None if t is None or pd.isna(t) else round(float(t) - origin, 1)


def _notifications_of(sent: pd.DataFrame, name: str, severity: Any, sli: Any) -> pd.DataFrame | None:
    """The notifications of one alert: its name, and its severity and SLI where it has them."""
    if sent.empty:
        return None

    def same(labels: Mapping[str, Any]) -> bool:
        return all(pd.isna(want) or labels.get(key) == want for key, want in (("severity", severity), ("sli", sli)))

    return sent[(sent["alertname"] == name) & sent["labels"].map(same)]


def _any_status(frame: pd.DataFrame | None, status: str) -> bool:
    return frame is not None and bool((frame["status"] == status).any())


class AlertWatch:
    """Polls Prometheus's alerts in a thread until stopped: the timeline of pending and firing alerts."""

    def __init__(self, url: str, interval_s: float = ALERT_POLL_S) -> None:
        self.url, self.interval_s = url, interval_s
        self.rows: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-watch", daemon=True)

    def __enter__(self) -> AlertWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            try:
                frame = prom.alerts(self.url)
            except prom.PrometheusError as exc:  # Prometheus restarting: a gap, not an end
                log.warning("alert poll failed: %s", exc)
                frame = pd.DataFrame()
            self.rows.append({"t": now, "alertname": None, "state": "poll"})
            for row in frame.to_dict("records"):
                self.rows.append({"t": now, "alertname": row.get("alertname"), "state": row.get("state"),
                                  "severity": row.get("severity"), "sli": row.get("sli")})  # fmt: skip
            self._stop.wait(self.interval_s)

    def firing(self, names: Sequence[str]) -> bool:
        last = max((r["t"] for r in self.rows), default=None)
        return any(r["t"] == last and r["alertname"] in names and r["state"] == "firing" for r in self.rows)

    def timeline(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows, columns=["t", "alertname", "state", "severity", "sli"])
        return frame


def fault_drill(
    ctx: PhaseContext,
    stk: stack.Stack,
    entry: str,
    items: Sequence[WorkItem],
    interrupt: Callable[[str], Any] | None = None,
) -> Drill:
    """One load step of ``monitor.drill_users`` users with ``items``; in its middle, ``monitor.drill`` (the LLM
    simulator or PostgreSQL) is stopped by its PID for ``monitor.drill_fault_s`` and started again; the alerts are
    polled throughout and until the SLO alert has resolved and its resolved notification arrived (at most 2 min)."""
    m = ctx.params.monitor
    interrupt = interrupt or (lambda service: lab.interrupted(service, ctx.target.lab_dir))
    pre = max(10.0, 3 * m.scrape_interval_s)
    post = max(20.0, 6 * m.scrape_interval_s)
    marks_: dict[str, float] = {}

    def fault() -> None:
        time.sleep(pre)
        with interrupt(m.drill) as stopped:
            marks_["start"] = stopped
            time.sleep(m.drill_fault_s)
        marks_["end"] = time.time()

    thread = threading.Thread(target=fault, name="fault-drill", daemon=True)
    with AlertWatch(stk.url) as watch:
        thread.start()
        try:
            result = scenarios.run_step(entry, items, ctx.params, ctx.dir("drill"), users=m.drill_users,
                                        duration_s=pre + m.drill_fault_s + post, scenario="drill")  # fmt: skip
        finally:
            thread.join()
        if _ever_fired(watch):  # until it resolved and said so (the summary shows it if it did not)
            with contextlib.suppress(TimeoutError):
                procs.wait_until(lambda: _settled(watch, stk), timeout=RESOLVE_WAIT_S, interval=1.0,
                                 what="the drill's SLO alert did not resolve", error=TimeoutError)  # fmt: skip
    return Drill(m.drill, result, marks_["start"], marks_["end"], watch.timeline(),
                 alertsink.notifications(stk.sink.out_dir), prom.rules(stk.url))  # fmt: skip


def _ever_fired(watch: AlertWatch) -> bool:
    return any(r["alertname"] in SLO_ALERTS and r["state"] == "firing" for r in watch.rows)


def _settled(watch: AlertWatch, stk: stack.Stack) -> str | None:
    if watch.firing(SLO_ALERTS):
        return "an SLO alert still fires"
    sent = alertsink.notifications(stk.sink.out_dir)
    if not ((sent["alertname"].isin(SLO_ALERTS)) & (sent["status"] == "resolved")).any():
        return "no resolved notification yet"
    return None


def drill_chart(drill: Drill) -> Any:
    """The drill on one time axis: requests per second that succeeded and failed, the fault, and each alert's
    pending and firing spans."""
    from ragperf.measure import charts

    @charts.chart
    def build() -> Any:
        fig = charts.figure(11, 4.5)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[2, 1])
        records = drill.result.records
        t0 = drill.fault_start
        if not records.empty:
            second = (records["start"] - t0).round()
            counts = records.assign(second=second).groupby(["second", "ok"]).size().unstack(fill_value=0)
            for ok, colour, label in ((True, charts.BETTER, "succeeded"), (False, charts.WORSE, "failed")):
                if ok in counts:
                    top.plot(counts.index, counts[ok], color=colour, label=label)
        top.axvspan(0, drill.fault_end - t0, color=charts.WORSE, alpha=0.12, label=f"{drill.service} stopped")
        top.set_ylabel("requests/s")
        top.set_title("Fault drill: the service's requests and the alerts")
        top.legend(fontsize=8)
        timeline = drill.timeline[drill.timeline["alertname"].notna()] if not drill.timeline.empty else drill.timeline
        rows = timeline["alertname"] + timeline["sli"].map(lambda sli: f" ({sli})" if isinstance(sli, str) else "")
        names = sorted(set(rows))
        for row, name in enumerate(names):
            for state, colour in (("pending", "#e6ab02"), ("firing", charts.WORSE)):
                ts = timeline[(rows == name) & (timeline["state"] == state)]["t"] - t0
                bottom.scatter(ts, [row] * len(ts), color=colour, s=12, label=state if row == 0 else None)
        bottom.set_yticks(range(len(names)), names, fontsize=8)
        bottom.axvspan(0, drill.fault_end - t0, color=charts.WORSE, alpha=0.12)
        bottom.set_xlabel("seconds since the fault began")
        if names:
            bottom.legend(fontsize=8, loc="upper right")
        else:
            charts.empty(bottom, "no alert went pending")
        return fig

    return build()


# --- the monitoring's own cost ------------------------------------------------------------------------


@dataclass
class Cost:
    """Load steps with the monitoring stopped and running, alternated (off, on, on, off ...), of two kinds: hits
    (questions both caches hold) and misses (questions no cache has seen, answered by the app)."""

    results: list[tuple[str, str, LoadResult]]  # (kind, state, result)
    usage: pd.DataFrame  # per monitoring process: cpu_pct (of one core), rss_mb, while it ran

    def records(self, kind: str, state: str) -> pd.DataFrame:
        frames = [r.records for k, s, r in self.results if (k, s) == (kind, state)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def kinds(self) -> list[str]:
        return list(dict.fromkeys(k for k, _, _ in self.results))

    def table(self) -> pd.DataFrame:
        """Per kind, without and with the monitoring: requests, the share a cache answered, success, p50, p95,
        answers per second, and whether the load generator was the limit."""
        rows = []
        for kind in self.kinds():
            for state, label in (("off", "without monitoring"), ("on", "with monitoring")):
                records = self.records(kind, state)
                s = metrics.summarize(records)
                steps = [r for k, st, r in self.results if (k, st) == (kind, state)]
                wall = sum(r.duration_s for r in steps)
                rows.append({"kind": kind, "": label, "requests": s["count"],
                             "answered by a cache %": metrics.hit_rate(records), "success %": s["success_rate"],
                             "p50 s": s["p50"], "p95 s": s["p95"], "answers/s": s["ok_count"] / wall if wall else None,
                             "load generator": "saturated" if any(r.generator_note for r in steps)
                             else "ok"})  # fmt: skip
        return pd.DataFrame(rows).set_index(["kind", ""])

    def difference(self, kind: str | None = None) -> dict[str, Any]:
        """The p50 and p95 change with the monitoring on, with bootstrap intervals, and the throughput ratio, of
        one kind of step (default: each kind, by kind)."""
        if kind is None:
            return {k: self.difference(k) for k in self.kinds()}
        off, on = self.records(kind, "off"), self.records(kind, "on")
        if off.empty or on.empty:
            return {}
        a, b = off["latency_s"].to_numpy(float), on["latency_s"].to_numpy(float)
        result: dict[str, Any] = {}
        for q in (50, 95):
            diff, low, high = compare.bootstrap_diff_ci(a, b, q)
            result[f"p{q}_diff_s"] = diff
            result[f"p{q}_ci_s"] = [low, high]
            result[f"p{q}_verdict"] = "noise" if low <= 0 <= high else ("slower" if diff > 0 else "faster")
        table = self.table().loc[kind]
        t_off, t_on = table.loc["without monitoring", "answers/s"], table.loc["with monitoring", "answers/s"]
        p95_off = table.loc["without monitoring", "p95 s"]
        result["p95_change_pct"] = 100.0 * result["p95_diff_s"] / p95_off if p95_off else None
        result["throughput_ratio"] = float(t_on / t_off) if t_off else None
        result["steps"] = [s for k, s, _ in self.results if k == kind]
        return result

    def negligible(self) -> bool:
        """True when no kind of step got slower beyond noise at p95 with the monitoring running."""
        found = [d for d in self.difference().values() if d]
        return bool(found) and all(d["p95_verdict"] in ("noise", "faster") for d in found)

    def text(self) -> str:
        parts = []
        for kind, d in self.difference().items():
            if not d:
                continue
            low, high = d["p95_ci_s"]
            relative = "" if d["p95_change_pct"] is None else f" ({d['p95_change_pct']:+.1f} %)"
            ratio = d["throughput_ratio"]
            throughput = ("throughput could not be compared (no answer without the monitoring)" if ratio is None
                          else f"throughput by a factor of {ratio:.3f}")  # fmt: skip
            interval = f"95 % interval {1000 * low:+.3f} to {1000 * high:+.3f} ms: {d['p95_verdict']}"
            parts.append(f"on {kind}, p95 changed by {1000 * d['p95_diff_s']:+.3f} ms{relative} ({interval}) and "
                         f"{throughput}")  # fmt: skip
        if not parts:
            return "The monitoring's cost was not measured."
        rounds = len(self.difference(self.kinds()[0]).get("steps", []))
        return f"With the whole monitoring stack running, over {rounds} alternating steps of each kind: " + "; ".join(
            parts) + "."  # fmt: skip


def usage_sampler(stk: stack.Stack) -> Callable[[], list[dict[str, Any]]]:
    """Samples the CPU (percent of one core since the last call) and memory of every monitoring process."""
    handles: dict[str, psutil.Process] = {}

    def sample() -> list[dict[str, Any]]:
        rows = []
        for name, status in stack.status(stk.base).items():
            pid = status.get("pid")
            if not pid:
                continue
            try:
                handle = handles.get(name)
                if handle is None or handle.pid != pid:
                    handle = handles[name] = psutil.Process(pid)
                    handle.cpu_percent(None)
                    continue
                rows.append({"process": name, "cpu_pct": handle.cpu_percent(None),
                             "rss_mb": handle.memory_info().rss / 2**20})  # fmt: skip
            except psutil.Error:
                handles.pop(name, None)
        return rows

    return sample


def monitoring_cost(ctx: PhaseContext, stk: stack.Stack, entry: str, items: Sequence[WorkItem]) -> Cost:
    """``monitor.cost_rounds`` pairs of steps (off, on, then on, off ..., so that drift cancels) through the
    entrypoint, of two kinds; "off" stops every process of the stack by its PID (the database's changes stay), "on"
    starts them again as they were.

    - hits: the first :data:`COST_DRAWS` of the Phase 2 Zipf stream, every question asked once first, so that both
      caches hold them all: the path where the monitoring's share of the time is largest;
    - misses: the same questions, each made new by a tag no cache has seen (``… (cost 3-17)``), so that the app
      answers every one: the path the users' capacity depends on.
    """
    m = ctx.params.monitor
    order = [s for i in range(m.cost_rounds) for s in (("off", "on") if i % 2 == 0 else ("on", "off"))]
    saved = {name: cfg for name, cfg in stack.running(stk.base).configs.items() if cfg is not None}
    out = ctx.dir("cost")
    hits = list(items)[:COST_DRAWS]
    distinct = list({(i.question, i.mode): i for i in hits}.values())
    scenarios.run_step(entry, distinct, ctx.params, out / "warmup", users=m.cost_users, cycle=False,
                       duration_s=max(60.0, 4 * m.cost_step_s), scenario="cost_warmup")  # fmt: skip
    sample = usage_sampler(stk)
    results: list[tuple[str, str, LoadResult]] = []
    usage: list[dict[str, Any]] = []
    try:
        for index, state in enumerate(order):
            if state == "off":
                stack.stop_all(stk.base)
            else:
                stack.start_again(stk.base, saved)
            stop = threading.Event()
            sampler = threading.Thread(target=_sample_loop, args=(sample, usage, stop), daemon=True)
            if state == "on":
                sampler.start()
            try:
                misses = [replace(item, question=f"{item.question} (cost {index}-{n})") for n, item in enumerate(hits)]
                for kind, work, cycle in (("hits", hits, True), ("misses", misses, False)):
                    result = scenarios.run_step(entry, work, ctx.params, out / f"{index}_{kind}_{state}", cycle=cycle,
                                                users=m.cost_users, duration_s=m.cost_step_s,
                                                scenario=f"cost_{kind}_{state}")  # fmt: skip
                    results.append((kind, state, result))
            finally:
                stop.set()
                if sampler.is_alive():
                    sampler.join()
    finally:
        stack.start_again(stk.base, saved)
    frame = pd.DataFrame(usage, columns=["process", "cpu_pct", "rss_mb"])
    per_process = frame.groupby("process").agg(cpu_pct=("cpu_pct", "mean"), rss_mb=("rss_mb", "max")).reset_index()
    return Cost(results, per_process)


def _sample_loop(sample: Callable[[], list[dict[str, Any]]], into: list[dict[str, Any]], stop: threading.Event) -> None:
    sample()
    while not stop.wait(1.0):
        into.extend(sample())


# --- the phase's judgement ------------------------------------------------------------------------------


def expected_impact(coverage: pd.DataFrame, drill: Drill | None, rule_test: prom.PromtoolResult | None,
                    cost: Cost | None, retention_hours: int) -> pd.DataFrame:  # fmt: skip
    """The plan's "Expected Impact" for Phase 3 beside what was measured."""
    with_data = int(coverage["has data"].sum()) if len(coverage) else 0
    summary = drill.summary() if drill is not None else {}
    fired = summary.get("slo_alert")
    resolved = summary.get("notified_resolved")

    rows = [
        ("Real-time performance visibility", f"{with_data} of {len(coverage)} dashboard panels have data from the "
         "live Prometheus", len(coverage) > 0 and with_data == len(coverage)),
        ("Automated alerting", ("promtool test rules: " + ("passed" if rule_test and rule_test.ok else "FAILED"))
         + (f"; the drill fired {fired} and the webhook got its firing and resolved notifications" if fired and
            resolved else "; the drill proved no SLO alert end to end"),
         bool(rule_test and rule_test.ok and fired and resolved)),
        ("Performance trend tracking", f"Prometheus keeps {retention_hours} h of samples; Grafana dashboards "
         "written for an existing Grafana; every run's metrics.json in outputs/", True),
        ("Proactive issue detection", f"SLO alert firing {summary.get('fault_to_firing_s')} s after the fault began"
         if fired else "not proven (no fault drill, or no SLO alert fired)", bool(fired)),
        ("Monitoring costs nothing measurable (this workbook's own bar)",
         cost.text() if cost is not None else "not measured", cost is not None and cost.negligible()),
    ]  # fmt: skip
    return pd.DataFrame([{"expected (PLAN.md)": e, "measured": m, "met": "met" if ok else "not met"}
                         for e, m, ok in rows])  # fmt: skip


def sections(
    ctx: PhaseContext,
    *,
    stk: stack.Stack,
    entry: str,
    target_health: pd.DataFrame,
    coverage: pd.DataFrame,
    rule_test: prom.PromtoolResult | None,
    drill: Drill | None,
    cost: Cost | None,
    health: pd.DataFrame,
    top: pd.DataFrame,
) -> dict[str, Any]:
    """metrics.json's ``monitoring`` section."""
    return {
        "monitoring": {
            "entrypoint": entry,
            "prometheus": stk.url,
            "scrape_interval_s": stk.prometheus.scrape_interval_s,
            "scrape_targets": stk.scrape_targets().to_dict("records"),
            "targets_up": target_health[["job", "instance", "health"]].to_dict("records") if len(target_health) else [],
            "panels": coverage.to_dict("records"),
            "rule_tests_passed": bool(rule_test and rule_test.ok),
            "drill": drill.summary() if drill is not None else None,
            "drill_alerts": drill.alert_times().to_dict("records") if drill is not None else [],
            "cost": cost.difference() if cost is not None else None,
            "cost_usage": cost.usage.to_dict("records") if cost is not None else [],
            "health_monitor": health.to_dict("records"),
            "top_statements": top.head(10).to_dict("records"),
            "notes": list(stk.notes),
        }
    }


def plan_text(ctx: PhaseContext, stk: stack.Stack) -> str:
    """What would run, with which role, scraping what (for plan mode, and the top of the notebook)."""
    lines = [
        f"- **Prometheus** on {stk.url}, scraping every {stk.prometheus.scrape_interval_s:g} s, keeping "
        f"{stk.prometheus.retention_time_h} h; rules for the SLO (p95 < {ctx.params.slo.p95_s:g} s, success ≥ "
        f"{ctx.params.slo.success_rate_pct:g} %), burn windows × {ctx.params.monitor.burn_window_scale:.4g}"
    ]
    if stk.pgexporter is not None:
        p = stk.pgexporter
        lines.append(f"- **postgres_exporter** reads {p.db_host}:{p.db_port}/{p.dbname} as the role `{p.user}` "
                     f"(pg_monitor), its password only in {p.password_file} (0600)")  # fmt: skip
    lines += [f"- {note}" for note in stk.notes]
    return "\n".join(lines)


def targets_reachable(ctx: PhaseContext, entry: str) -> None:
    """Measure through ``entry`` from now on (and check it answers)."""
    ctx.target.base_url = entry
    targets.check_reachable(ctx.target)
