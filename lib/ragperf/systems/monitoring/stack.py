"""Phase 3's monitoring as one system: what runs, what is wanted, in which order, and the rendered files.

The parts, each a process of ragperf's own on a loopback port, started from a state directory of its own and
stopped by its recorded PID::

    PostgreSQL ── postgres_exporter (as the monitoring role, pg_monitor) ─┐
    the host ──── node_exporter ─────────────────────────────────────────┤
    nginx ─────── stub_status → nginx exporter; JSON access log → mtail ──┤
    Redis ─────── redis_exporter ─────────────────────────────────────────┼─→ Prometheus ─→ Alertmanager ─→ webhook
    cache add-on ─ /__cache/metrics ──────────────────────────────────────┤       (rules)                (run directory)
    health monitor ─ /metrics (probes GET /health, POST /ask) ───────────┘

On the database, three changes come first: pg_stat_statements (the extension), the monitoring role and the
plan's two views. nginx gets its ``stub_status`` port by a reload. Then the exporters, the webhook receiver,
Alertmanager and, last, Prometheus, so that its first scrape finds every target; undo runs in reverse. The parts
of Phase 2 are optional: without its tier (rolled back, or a deployment without it) nginx's and Redis's exporters,
mtail and the add-on's metrics are left out and the service is probed where it is.

:func:`desired` derives the stack from the target, the parameters, the tier and the run directory; :func:`plan`
compares it with what runs. :func:`stop_all` stops whatever runs from a directory, by the process records, which is
how the lab stops it without knowing any phase.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ragperf.core import procs
from ragperf.core.changes import Change
from ragperf.core.params import Params
from ragperf.core.target import Target
from ragperf.systems import cachetier, nginx
from ragperf.systems.monitoring import alerting, alertmanager, alertsink, exporters, healthmon, mtail, pgexporter
from ragperf.systems.monitoring import prometheus as prom

log = logging.getLogger(__name__)

PROCESSES = ("pgexporter", "node", "nginx_exporter", "redis_exporter", "mtail", "alertsink", "alertmanager",
             "prometheus")  # fmt: skip
"""The stack's processes in start order, by their directory under the stack's state directory."""
HEALTHMON = "healthmon"
CACHE_JOB = "cache"


@dataclass(frozen=True)
class Stack:
    """The monitoring the parameters ask for (None: a part left out, with the reason in ``notes``)."""

    base: Path
    prometheus: prom.PrometheusConfig
    alertmanager: alertmanager.AlertmanagerConfig
    sink: alertsink.SinkConfig
    node: exporters.ExporterConfig
    pgexporter: pgexporter.PgExporterConfig | None
    nginx: nginx.CacheConfig | None  # the tier's nginx, with its stub_status port
    nginx_exporter: exporters.ExporterConfig | None
    redis_exporter: exporters.ExporterConfig | None
    mtail: mtail.MtailConfig | None
    cache_metrics: str | None  # the add-on's metrics address, host:port/path
    slis: tuple[alerting.Sli, ...]
    notes: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """Prometheus."""
        return self.prometheus.url

    def scrape_targets(self) -> pd.DataFrame:
        """One row per scrape job: what it reads, where."""
        rows = [{"job": t.job, "address": t.address, "path": t.path}
                for t in map(prom.ScrapeTarget.parse, self.prometheus.targets)]  # fmt: skip
        return pd.DataFrame(rows, columns=["job", "address", "path"])

    def table(self) -> pd.DataFrame:
        """One row per part: where it listens, what it reads, its state directory."""
        rows = [("Prometheus", self.prometheus.url, f"{len(self.prometheus.targets)} scrape targets every "
                 f"{self.prometheus.scrape_interval_s:g} s", self.prometheus.state_dir),
                ("Alertmanager", self.alertmanager.url, f"notifies {self.alertmanager.webhook_url}",
                 self.alertmanager.state_dir),
                ("webhook receiver", self.sink.url, f"writes {self.sink.out_dir}/notifications.jsonl",
                 self.sink.state_dir),
                ("node exporter", self.node.url, "this machine", self.node.state_dir)]  # fmt: skip
        if self.pgexporter is not None:
            p = self.pgexporter
            rows.append(("postgres exporter", p.url, f"{p.db_host}:{p.db_port}/{p.dbname} as {p.user}", p.state_dir))
        for name, cfg in (("nginx exporter", self.nginx_exporter), ("redis exporter", self.redis_exporter)):
            if cfg is not None:
                rows.append((name, cfg.url, cfg.target, cfg.state_dir))
        if self.mtail is not None:
            rows.append(("mtail", self.mtail.url, f"nginx's access log {self.mtail.log_path}", self.mtail.state_dir))
        if self.cache_metrics is not None:
            rows.append(("cache add-on", f"http://{self.cache_metrics}", "its own /__cache/metrics", ""))
        return pd.DataFrame(rows, columns=["part", "listens", "reads", "files"]).astype({"files": str})


def state_dir(target: Target, params: Params) -> Path:
    """Where the monitoring keeps its files: ``monitor.state_dir``, else the lab's directory, else ~/.local/state."""
    if params.monitor.state_dir is not None:
        return Path(params.monitor.state_dir).expanduser().absolute()
    if target.kind == "lab" and target.lab_dir is not None:
        return Path(target.lab_dir).absolute() / "monitor"
    return Path.home() / ".local" / "state" / "ragperf" / "monitor"


@dataclass(frozen=True)
class Running:
    """What of the stack runs from a directory now, by part (None: not running)."""

    configs: Mapping[str, Any]

    def get(self, name: str) -> Any:
        return self.configs.get(name)

    def any(self) -> bool:
        return any(cfg is not None for cfg in self.configs.values())


def _servers(base: Path) -> dict[str, procs.Server]:
    return {
        "pgexporter": pgexporter.PgExporterServer(base / "pgexporter"),
        "node": exporters.ExporterServer(base / "node"),
        "nginx_exporter": exporters.ExporterServer(base / "nginx_exporter"),
        "redis_exporter": exporters.ExporterServer(base / "redis_exporter"),
        "mtail": mtail.MtailServer(base / "mtail"),
        "alertsink": alertsink.SinkServer(base / "alertsink"),
        "alertmanager": alertmanager.AlertmanagerServer(base / "alertmanager"),
        "prometheus": prom.PrometheusServer(base / "prometheus"),
        HEALTHMON: healthmon.HealthMonServer(base / HEALTHMON),
    }


def running(base: Path) -> Running:
    """The stack's parts running from ``base``, by their process records."""
    return Running({name: server.config for name, server in _servers(base).items()})


def _port(now: Any, wanted: int = 0) -> int:
    if wanted:
        return wanted
    return int(now.listen_port) if now is not None else procs.free_port()


@dataclass(frozen=True)
class Database:
    """Where the postgres exporter connects, as whom, and which major version it reads."""

    host: str
    port: int
    dbname: str
    server_version_num: int


def desired(
    target: Target,
    params: Params,
    out_dir: Path,
    tier: cachetier.Running,
    database: Database | None,
    now: Running | None = None,
) -> Stack:
    """The stack the parameters ask for around ``target``: ``tier`` is what of Phase 2 runs, ``database`` where
    the postgres exporter connects (None: no database access given), ``out_dir`` the phase's run directory (the
    webhook receiver writes its notifications there). Ports are the running parts' where they run, else free."""
    base = state_dir(target, params)
    now = now or running(base)
    m, slo = params.monitor, params.slo
    notes: list[str] = []
    buckets = alerting.latency_buckets(slo.p95_s)
    node = exporters.ExporterConfig(which="node", listen_port=_port(now.get("node")), state_dir=base / "node")
    pg = None
    if database is not None:
        pg = pgexporter.PgExporterConfig(
            listen_port=_port(now.get("pgexporter")), state_dir=base / "pgexporter", db_host=database.host,
            db_port=database.port, dbname=database.dbname, user=m.role, password_file=base / "pgexporter" / "password",
            server_version_num=database.server_version_num)  # fmt: skip
    else:
        notes.append("no database access given (target.dsn): PostgreSQL is not monitored")
    front = nginx_exp = redis_exp = log_metrics = None
    cache_metrics = None
    slis = [alerting.Sli("probe", "ragperf_probe_requests_total", "ragperf_probe_duration_seconds", 'endpoint="ask"')]
    if tier.nginx is not None:
        running_front = tier.nginx
        front = replace(running_front, status_port=running_front.status_port or _free_other(running_front))
        nginx_exp = exporters.ExporterConfig(which="nginx", listen_port=_port(now.get("nginx_exporter")),
                                             state_dir=base / "nginx_exporter",
                                             target=front.status_url or "")  # fmt: skip
        log_metrics = mtail.MtailConfig(
            log_path=nginx.Nginx(front.state_dir).access_log,
            listen_port=_port(now.get("mtail")),
            state_dir=base / "mtail",
            buckets=buckets,
        )
        slis.insert(0, alerting.Sli("entry", "ragperf_nginx_requests_total", "ragperf_nginx_request_duration_seconds"))
    else:
        notes.append("Phase 2's nginx does not run: no nginx exporter, no per-request metrics from its log")
    if tier.redis is not None:
        redis_exp = exporters.ExporterConfig(
            which="redis",
            listen_port=_port(now.get("redis_exporter")),
            state_dir=base / "redis_exporter",
            target=tier.redis.url.rsplit("/", 1)[0],
        )
    if tier.proxy is not None:
        cache_metrics = f"{tier.proxy.listen_host}:{tier.proxy.listen_port}/__cache/metrics"
    sink = alertsink.SinkConfig(listen_port=_port(now.get("alertsink")), state_dir=base / "alertsink",
                                out_dir=Path(out_dir).absolute() / "alerts")  # fmt: skip
    manager = alertmanager.AlertmanagerConfig(
        listen_port=_port(now.get("alertmanager")), state_dir=base / "alertmanager", webhook_url=sink.webhook_url,
        group_wait_s=1, group_interval_s=max(2, round(m.scrape_interval_s * 2)), repeat_interval_s=3600)  # fmt: skip
    targets = [f"node={node.scrape_address}/metrics", f"alertmanager=127.0.0.1:{manager.listen_port}/metrics",
               f"{HEALTHMON}=127.0.0.1:{_healthmon_port(now)}/metrics"]  # fmt: skip
    if pg is not None:
        targets.append(f"postgres={pg.scrape_address}/metrics")
    for job, cfg in (("nginx", nginx_exp), ("redis", redis_exp)):
        if cfg is not None:
            targets.append(f"{job}={cfg.scrape_address}/metrics")
    if log_metrics is not None:
        targets.append(f"mtail=127.0.0.1:{log_metrics.listen_port}/metrics")
    if cache_metrics is not None:
        targets.append(f"{CACHE_JOB}={cache_metrics}")
    rules = alerting.render_rules(p95_s=slo.p95_s, success_rate_pct=slo.success_rate_pct, slis=slis,
                                  scale=m.burn_window_scale, scrape_interval_s=m.scrape_interval_s)  # fmt: skip
    prometheus = prom.PrometheusConfig(
        listen_port=_port(now.get("prometheus"), m.prometheus_port), state_dir=base / "prometheus",
        scrape_interval_s=m.scrape_interval_s, targets=tuple(targets), alertmanager=f"127.0.0.1:{manager.listen_port}",
        rules_yaml=rules, retention_time_h=m.retention_hours, retention_size_mb=m.retention_size_mb)  # fmt: skip
    return Stack(base, prometheus, manager, sink, node, pg, front, nginx_exp, redis_exp, log_metrics, cache_metrics,
                 tuple(slis), tuple(notes))  # fmt: skip


def _free_other(cfg: nginx.CacheConfig) -> int:
    port = procs.free_port()
    return port if port != cfg.listen_port else procs.free_port()


def _healthmon_port(now: Running) -> int:
    """The health monitor's port: fixed when the stack is planned, because Prometheus's configuration names it."""
    return _port(now.get(HEALTHMON))


def plan(now: Running, stack: Stack, tier: cachetier.Running) -> list[Change]:
    """The processes' changes from what runs to ``stack``, in start order (nginx's reload before its exporter).
    The database's changes come from :mod:`ragperf.systems.postgres.pgmonitor` and go first."""
    planned: list[Change] = []
    if stack.pgexporter is not None:
        planned += pgexporter.plan(now.get("pgexporter"), stack.pgexporter)
    planned += exporters.plan(now.get("node"), stack.node)
    if stack.nginx is not None:
        planned += nginx.plan(tier.nginx, stack.nginx)
    for name in ("nginx_exporter", "redis_exporter"):
        cfg = getattr(stack, name)
        if cfg is not None:
            planned += exporters.plan(now.get(name), cfg)
    if stack.mtail is not None:
        planned += mtail.plan(now.get("mtail"), stack.mtail)
    planned += alertsink.plan(now.get("alertsink"), stack.sink)
    planned += alertmanager.plan(now.get("alertmanager"), stack.alertmanager)
    planned += prom.plan(now.get("prometheus"), stack.prometheus)
    return planned


def health_monitor(stack: Stack, params: Params, base_url: str, questions: Path, out_dir: Path,
                   duration_s: float) -> healthmon.HealthMonConfig:  # fmt: skip
    """The health monitor for a monitored window of ``duration_s``: probes ``base_url`` on the port Prometheus
    scrapes, writes its samples to ``out_dir/health.parquet``."""
    m = params.monitor
    port = next(int(t.address.rsplit(":", 1)[1]) for t in map(prom.ScrapeTarget.parse, stack.prometheus.targets)
                if t.job == HEALTHMON)  # fmt: skip
    return healthmon.HealthMonConfig(
        base_url=base_url, questions_file=questions, out_path=Path(out_dir).absolute() / "health.parquet",
        listen_port=port, state_dir=stack.base / HEALTHMON, interval_s=m.health_interval_s, duration_s=duration_s,
        buffer=m.health_buffer, timeout_s=params.load.timeout_s, ask_share=m.health_ask_share,
        buckets=alerting.latency_buckets(params.slo.p95_s))  # fmt: skip


def rendered_files(stack: Stack) -> dict[str, str]:
    """Every configuration and rules file the stack runs with, by a name for the run directory (no secret is in
    any: the postgres exporter reads its password from a 0600 file that is not among them)."""
    files = {
        "prometheus.yml": prom.render(stack.prometheus),
        "rules.yml": stack.prometheus.rules_yaml,
        "alertmanager.yml": alertmanager.render(stack.alertmanager),
    }
    if stack.pgexporter is not None:
        files["postgres_exporter_queries.yaml"] = pgexporter.render_queries(stack.pgexporter.server_version_num)
    if stack.mtail is not None:
        files["nginx.mtail"] = mtail.render_program(stack.mtail.buckets)
    if stack.nginx is not None:
        from ragperf.systems import nginxconf

        files["nginx.conf"] = nginxconf.render(stack.nginx)
    return files


def stop_all(base: Path) -> list[str]:
    """Stop every part of a stack kept in ``base`` by its recorded PID, Prometheus first; the names of those that
    ran. The files stay (Prometheus's samples among them); the database's changes are the journal's to undo."""
    stopped = []
    for name, server in reversed(list(_servers(base).items())):
        if server.stop():
            stopped.append(name)
    return stopped


def start_again(base: Path, configs: Mapping[str, Any]) -> list[str]:
    """Start the parts of ``configs`` (what :func:`running` read before a :func:`stop_all`) again as they were, in
    start order; the names of those started."""
    started = []
    for name, server in _servers(base).items():
        cfg = configs.get(name)
        if cfg is not None and not server.running:
            server.start(cfg)
            started.append(name)
    return started


def status(base: Path) -> dict[str, procs.ServerStatus]:
    """What of the stack runs from ``base`` (JSON values), by part."""
    return {name: server.status() for name, server in _servers(base).items()}
