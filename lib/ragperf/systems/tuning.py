"""Changing a target, and undoing it: who may do what, the appliers that do it, and ``ragperf rollback``.

A phase notebook plans its changes with the pure planners (:mod:`ragperf.systems.postgres.pgtune`,
:mod:`ragperf.systems.postgres.indexes`, :mod:`ragperf.systems.hosttune`) and applies them with the appliers
:func:`appliers` builds for its target. What the target allows is decided here, once:

- the lab: apply by default; its own PostgreSQL is restarted by ragperf; host settings are planned only
  (the lab shares this machine with everything else).
- a deployment: plan by default (``changes.mode: apply`` to apply); PostgreSQL is restarted only with
  ``changes.allow_restart: true`` and a ``target.restart_command``; the sysctl drop-in is written only
  with ``changes.allow_host_changes: true``, as root.

Before the first change of a phase, :func:`save_settings_before` keeps pg_settings; :func:`rollback_phase`
undoes the phase from its journal and compares pg_settings with that snapshot, name by name.
"""

from __future__ import annotations

import logging

from ragperf.core.changes import Applier
from ragperf.core.params import Params
from ragperf.core.target import Target
from ragperf.systems import cacheproxy, hosttune, nginx, pgbouncer, rediscache, supervisor
from ragperf.systems.monitoring import alertmanager, alertsink, exporters, healthmon, mtail, pgexporter, prometheus
from ragperf.systems.postgres import access, indexbuild, indexes, pgmonitor, pgsettings, pgvalues, roles

log = logging.getLogger(__name__)


# --- per-role settings ------------------------------------------------------------------------


# --- the appliers of a target, the snapshot, and rollback ------------------------------------


def appliers(target: Target, params: Params, *, progress: bool = True) -> dict[str, Applier]:
    """One applier per change kind, allowed what this target and these parameters allow.

    The database's kinds need the target's DSN and are left out without one; the caching tier's kinds
    (Phase 2), the monitoring's (Phase 3) and the scaling tier's (Phase 4) run processes of ragperf's own and need
    nothing of the target.
    """
    kinds: dict[str, Applier] = {
        rediscache.KIND: rediscache.RedisApplier(),
        cacheproxy.KIND: cacheproxy.ProxyApplier(),
        nginx.KIND: nginx.NginxApplier(),
        hosttune.KIND: hosttune.HostApplier(allowed=target.kind != "lab" and params.changes.allow_host_changes),
        exporters.KIND: exporters.ExporterApplier(),
        pgexporter.KIND: pgexporter.PgExporterApplier(),
        mtail.KIND: mtail.MtailApplier(),
        alertsink.KIND: alertsink.SinkApplier(),
        alertmanager.KIND: alertmanager.AlertmanagerApplier(),
        prometheus.KIND: prometheus.PrometheusApplier(),
        healthmon.KIND: healthmon.HealthMonApplier(),
        supervisor.KIND: supervisor.SupervisorApplier(),
        pgbouncer.KIND: pgbouncer.PgBouncerApplier(),
    }
    if not target.admin_dsn:
        return kinds
    connect = access.connector(target)
    restart, hint = access.restarter(target, params)
    host = params.target.host
    ram = None if target.kind == "lab" or host is None else int(host.memory_gb * pgvalues.GB)
    return {
        pgsettings.KIND: pgsettings.SettingsApplier(connect, restart, hint),
        "column": indexbuild.ColumnApplier(connect),
        indexes.ANALYZE_KIND: indexbuild.AnalyzeApplier(connect),
        "index": indexbuild.IndexApplier(connect, progress=progress, ram_bytes=ram),
        roles.ROLE_KIND: roles.RoleSettingApplier(connect),
        pgmonitor.EXTENSION_KIND: pgmonitor.ExtensionApplier(connect),
        pgmonitor.ROLE_KIND: pgmonitor.MonitorRoleApplier(connect),
        pgmonitor.VIEWS_KIND: pgmonitor.MonitorViewsApplier(connect),
        **kinds,
    }
