"""The monitoring's panels, defined once: drawn in the notebook from Prometheus and shipped as Grafana dashboards.

Grafana is not a Debian, PyPI or npm package, so ragperf cannot run one; it writes provisioning files for an
existing Grafana instead (:func:`write_provisioning`), generated from the same :data:`PANELS` the notebook draws
(:func:`panel_frames`, :func:`chart`). A panel's expressions use Grafana's ``$__rate_interval``; the notebook
puts its own window in its place (:func:`expression`), four scrape intervals by default.

The dashboards follow the panel sets engineers know: the service through each layer (nginx, the cache add-on,
the app), PostgreSQL (as postgres_exporter's overview, from ragperf's own queries file), the host (node), nginx
and Redis, and what the monitoring itself costs. Metric names are those of :mod:`.mtail` (``ragperf_nginx_*``),
the cache add-on (``ragperf_cache_*``), :mod:`.healthmon` (``ragperf_probe_*``), :mod:`.pgexporter`
(``pg_*``) and the Debian exporters.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ragperf.core import procs
from ragperf.measure import charts

RATE = "$__rate_interval"
DATASOURCE_UID = "${DS_PROMETHEUS}"


@dataclass(frozen=True)
class Panel:
    """One chart: a title, a unit (Grafana's unit id), and its series as (legend, PromQL) pairs."""

    dashboard: str
    title: str
    unit: str
    series: tuple[tuple[str, str], ...]
    legend_label: str = ""  # a label whose value names each series of one expression (``state``), if any

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.title.lower()).strip("_")


def _p95(histogram: str, where: str = "") -> str:
    return f"histogram_quantile(0.95, sum by (le) (rate({histogram}_bucket{where}[{RATE}])))"


def _ratio(part: str, whole: str) -> str:
    """``part / whole`` of two rates, 0 when the part has no series (no errors yet) and none while ``whole`` is 0."""
    return f"(sum(rate({part}[{RATE}])) or vector(0)) / sum(rate({whole}[{RATE}]))"


_NGINX = "ragperf_nginx_requests_total"
_ADDON = "ragperf_cache_requests_total"
_APP = "ragperf_cache_upstream_requests_total"
_HITS = (f"(sum(rate({_NGINX}{{cache=\"HIT\"}}[{RATE}])) or vector(0)) + "
         f"(sum(rate({_ADDON}{{result=~\"hit|coalesced\"}}[{RATE}])) or vector(0))")  # fmt: skip

PANELS: tuple[Panel, ...] = (
    # the service, layer by layer
    Panel("service", "Request rate by layer", "reqps", (
        ("nginx (every request)", f"sum(rate({_NGINX}[{RATE}]))"),
        ("cache add-on (nginx's misses)", f"sum(rate({_ADDON}[{RATE}]))"),
        ("app (both caches missed)", f"sum(rate({_APP}[{RATE}]))"),
    )),
    Panel("service", "p95 latency by layer", "s", (
        ("nginx", _p95("ragperf_nginx_request_duration_seconds")),
        ("cache add-on", _p95("ragperf_cache_request_duration_seconds")),
        ("app", _p95("ragperf_cache_upstream_duration_seconds")),
    )),
    Panel("service", "Error rate", "percentunit", (
        ("nginx: not 2xx", _ratio(f'{_NGINX}{{code!~"2.."}}', _NGINX)),
        ("health probes: failed", _ratio('ragperf_probe_requests_total{code!~"2.."}', "ragperf_probe_requests_total")),
    )),
    Panel("service", "Cache hit ratio", "percentunit", (
        ("either cache", f"({_HITS}) / sum(rate({_NGINX}[{RATE}]))"),
        ("nginx", _ratio(f'{_NGINX}{{cache="HIT"}}', _NGINX)),
        ("cache add-on (of what reached it)", _ratio(f'{_ADDON}{{result=~"hit|coalesced"}}', _ADDON)),
    )),
    Panel("service", "Health monitor: probe p95 and success", "s", (
        ("p95 of POST /ask probes", _p95("ragperf_probe_duration_seconds", '{endpoint="ask"}')),
        ("p95 of GET /health probes", _p95("ragperf_probe_duration_seconds", '{endpoint="health"}')),
    )),
    # PostgreSQL
    Panel("postgres", "Connections by state", "short",
          (("{state}", 'sum by (state) (pg_connections_count{state!=""})'),), "state"),
    Panel("postgres", "Backends by type", "short", (("{backend_type}", "sum by (backend_type) (pg_backends_count)"),),
          "backend_type"),
    Panel("postgres", "Transactions per second", "ops", (
        ("commits", f"sum(rate(pg_database_stats_xact_commit[{RATE}]))"),
        ("rollbacks", f"sum(rate(pg_database_stats_xact_rollback[{RATE}]))"),
    )),
    Panel("postgres", "Buffer cache hit ratio", "percentunit", (
        ("shared buffers", f"sum(rate(pg_database_stats_blks_hit[{RATE}])) / (sum(rate(pg_database_stats_blks_hit"
                           f"[{RATE}])) + sum(rate(pg_database_stats_blks_read[{RATE}])))"),
    )),
    Panel("postgres", "Checkpoints", "short", (
        ("timed (total)", "sum(pg_checkpoints_timed)"),
        ("requested (total)", "sum(pg_checkpoints_requested)"),
    )),
    Panel("postgres", "Statement time per second (top 5)", "s",
          (("{query}", f"topk(5, sum by (query) (rate(pg_statements_exec_seconds[{RATE}])))"),), "query"),
    # the host
    Panel("node", "CPU busy", "percentunit", (
        ("all cores", f'1 - avg(rate(node_cpu_seconds_total{{mode="idle"}}[{RATE}]))'),
    )),
    Panel("node", "Memory", "bytes", (
        ("used", "node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes"),
        ("total", "node_memory_MemTotal_bytes"),
    )),
    Panel("node", "Load average (1 min)", "short", (("load1", "node_load1"),)),
    # nginx (stub_status)
    Panel("nginx", "nginx connections", "short",
          tuple((state, f"nginx_connections_{state}") for state in ("active", "reading", "writing", "waiting"))),
    Panel("nginx", "nginx requests per second (stub_status)", "reqps",
          (("requests", f"sum(rate(nginx_http_requests_total[{RATE}]))"),)),
    # Redis
    Panel("redis", "Redis memory", "bytes", (("used", "redis_memory_used_bytes"), ("limit", "redis_memory_max_bytes"))),
    Panel("redis", "Redis commands per second", "ops",
          (("commands", f"sum(rate(redis_commands_processed_total[{RATE}]))"),)),
    Panel("redis", "Redis keys and evictions", "short", (
        ("keys", "sum(redis_db_keys)"),
        ("evicted (total)", "sum(redis_evicted_keys_total)"),
    )),
    # what the monitoring costs
    Panel("monitoring", "CPU of each monitoring process", "percentunit",
          (("{job}", f"sum by (job) (rate(process_cpu_seconds_total[{RATE}]))"),), "job"),
    Panel("monitoring", "Memory of each monitoring process", "bytes",
          (("{job}", "sum by (job) (process_resident_memory_bytes)"),), "job"),
)  # fmt: skip

DASHBOARDS = {
    "service": "ragperf: the service through each layer",
    "postgres": "ragperf: PostgreSQL",
    "node": "ragperf: the host",
    "nginx": "ragperf: nginx",
    "redis": "ragperf: Redis",
    "monitoring": "ragperf: the monitoring's own cost",
}


def panels(dashboard: str | None = None) -> list[Panel]:
    """The panels of one dashboard (None: all), in order."""
    if dashboard is not None and dashboard not in DASHBOARDS:
        raise ValueError(f"unknown dashboard {dashboard!r}: allowed are {', '.join(DASHBOARDS)}")
    return [p for p in PANELS if dashboard in (None, p.dashboard)]


def expression(expr: str, window_s: float) -> str:
    """``expr`` with Grafana's ``$__rate_interval`` replaced by a window of ``window_s`` seconds."""
    return expr.replace(RATE, f"{max(1, math.ceil(window_s))}s")


# --- Grafana provisioning ---------------------------------------------------------------------------------


def grafana_dashboard(dashboard: str) -> dict[str, Any]:
    """One dashboard as Grafana's JSON model (schema 38; time series panels, two per row)."""
    items = []
    for index, panel in enumerate(panels(dashboard)):
        targets = [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": _legend_format(legend),
             "datasource": {"type": "prometheus", "uid": DATASOURCE_UID}}
            for i, (legend, expr) in enumerate(panel.series)
        ]  # fmt: skip
        items.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": panel.title,
                "gridPos": {"x": 12 * (index % 2), "y": 8 * (index // 2), "w": 12, "h": 8},
                "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": targets,
            }
        )
    return {
        "uid": f"ragperf-{dashboard}",
        "title": DASHBOARDS[dashboard],
        "tags": ["ragperf"],
        "schemaVersion": 38,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "templating": {
            "list": [{"name": "DS_PROMETHEUS", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
        },  # fmt: skip
        "panels": items,
    }


def _legend_format(legend: str) -> str:
    """Grafana's legend template: ``{state}`` becomes ``{{state}}``."""
    return re.sub(r"\{(\w+)\}", r"{{\1}}", legend)


def write_provisioning(out_dir: Path, prometheus_url: str | None = None) -> list[Path]:
    """Grafana's provisioning files in ``out_dir``: ``dashboards/*.json``, the dashboard provider
    (``provisioning/dashboards/ragperf.yaml``) and, with ``prometheus_url``, a Prometheus data source
    (``provisioning/datasources/ragperf.yaml``). Returns the files written."""
    import yaml

    written = []
    boards = out_dir / "dashboards"
    boards.mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        path = boards / f"ragperf-{name}.json"
        procs.write_atomic(path, json.dumps(grafana_dashboard(name), indent=2) + "\n")
        written.append(path)
    provider = {"apiVersion": 1, "providers": [{
        "name": "ragperf", "folder": "ragperf", "type": "file", "disableDeletion": False,
        "allowUiUpdates": True, "options": {"path": str(boards.absolute()), "foldersFromFilesStructure": False},
    }]}  # fmt: skip
    files: dict[str, Mapping[str, Any]] = {"provisioning/dashboards/ragperf.yaml": provider}
    if prometheus_url:
        files["provisioning/datasources/ragperf.yaml"] = {"apiVersion": 1, "datasources": [{
            "name": "Prometheus (ragperf)", "type": "prometheus", "uid": "ragperf-prometheus", "access": "proxy",
            "url": prometheus_url, "isDefault": False, "jsonData": {"timeInterval": "2s"},
        }]}  # fmt: skip
    for relative, content in files.items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        procs.write_atomic(path, yaml.safe_dump(content, sort_keys=False))
        written.append(path)
    return written


# --- the same panels in the notebook --------------------------------------------------------------------


def panel_frames(
    query_range: Any, start: float, end: float, window_s: float, step_s: float, only: Iterable[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Every panel's series over [start, end] by panel title: a long frame with ``time``, ``value`` and ``series``
    (the legend, with the label of :attr:`Panel.legend_label` filled in). ``query_range(expr, start, end, step_s)``
    asks Prometheus (:func:`ragperf.systems.monitoring.prometheus.query_range` with its URL bound)."""
    wanted = set(only) if only is not None else None
    frames = {}
    for panel in PANELS:
        if wanted is not None and panel.dashboard not in wanted:
            continue
        parts = []
        for legend, expr in panel.series:
            frame = query_range(expression(expr, window_s), start, end, step_s)
            if frame.empty:
                continue
            label = re.fullmatch(r"\{(\w+)\}", legend)
            if label and label.group(1) in frame:
                names = frame[label.group(1)].astype(str).str.slice(0, 60)
            else:
                names = pd.Series(legend, index=frame.index)
            parts.append(frame[["time", "value"]].assign(series=names.to_numpy()))
        frames[panel.title] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            columns=["time", "value", "series"])  # fmt: skip
    return frames


def coverage(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Which panels have data: one row per panel, with its dashboard and the number of points."""
    by_title = {p.title: p for p in PANELS}
    rows = [{"dashboard": by_title[t].dashboard, "panel": t, "points": int(f["value"].notna().sum()),
             "has data": bool(f["value"].notna().any())} for t, f in frames.items()]  # fmt: skip
    return pd.DataFrame(rows, columns=["dashboard", "panel", "points", "has data"])


_UNIT_LABEL = {"reqps": "requests/s", "s": "seconds", "percentunit": "share (0-1)", "short": "count",
               "ops": "per second", "bytes": "bytes"}  # fmt: skip


@charts.chart
def chart(
    frames: Mapping[str, pd.DataFrame],
    dashboard: str,
    marks: Sequence[tuple[str, float, float]] = (),
    origin: float | None = None,
) -> Any:
    """A dashboard's panels as a grid of seaborn line charts, time in seconds since ``origin``; ``marks`` are
    (label, start, end) spans in epoch seconds (the load steps, a fault) shaded behind every panel."""
    import seaborn as sns

    chosen = [p for p in panels(dashboard) if p.title in frames]
    columns = 2
    rows = max(1, math.ceil(len(chosen) / columns))
    fig = charts.figure(12, 3.2 * rows)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    t0 = origin if origin is not None else min((float(f["time"].min().timestamp()) for f in frames.values()
                                                if not f.empty), default=0.0)  # fmt: skip
    for ax, panel in zip(axes, chosen, strict=False):
        frame = frames[panel.title]
        for index, (label, start, end) in enumerate(marks):
            ax.axvspan(start - t0, end - t0, color=charts.PALETTE[index % len(charts.PALETTE)], alpha=0.08)
            if ax is axes[0]:
                ax.text(start - t0, 0.98, label, transform=ax.get_xaxis_transform(), fontsize=6, va="top",
                        rotation=90, color=charts.NEUTRAL)  # fmt: skip
        if frame.empty or not frame["value"].notna().any():
            charts.empty(ax, "no data")
        else:
            data = frame.assign(t=frame["time"].map(lambda ts: ts.timestamp() - t0))
            sns.lineplot(data=data, x="t", y="value", hue="series", ax=ax, linewidth=1.2)
            ax.legend(fontsize=7, title=None)
        ax.set_title(panel.title)
        ax.set_xlabel("seconds since the phase started")
        ax.set_ylabel(_UNIT_LABEL.get(panel.unit, panel.unit))
    for ax in axes[len(chosen) :]:
        ax.set_visible(False)
    fig.suptitle(DASHBOARDS[dashboard])
    return fig
