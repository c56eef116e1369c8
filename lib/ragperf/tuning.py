"""Changing a target, and undoing it: who may do what, the appliers that do it, and ``ragperf rollback``.

A phase notebook plans its changes with the pure planners (:mod:`ragperf.pgtune`,
:mod:`ragperf.indexes`, :mod:`ragperf.hosttune`) and applies them with the appliers
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

import json
import logging
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ragperf import cacheproxy, changes, hosttune, lab, nginx, pgtune, procs, rediscache, runs
from ragperf.changes import Applier, Change, ChangeError
from ragperf.params import Params
from ragperf.phase import Target, TargetError, resolve_target
from ragperf.systems.postgres import indexbuild, indexes

log = logging.getLogger(__name__)

ROLE_KIND = "role_setting"
SETTINGS_BEFORE = "settings_before.json"
RESTART_TIMEOUT_S = 300.0


def connector(target: Target) -> Callable[[], psycopg.Connection]:
    """Opens a new connection to the target's database with its admin DSN (password from the environment)."""
    if not target.admin_dsn:
        raise TargetError("no database DSN for this target: set target.dsn in its parameter file")
    dsn, kwargs = target.admin_dsn, target.connect_kwargs()
    return lambda: psycopg.connect(dsn, connect_timeout=10, **kwargs)


def restarter(target: Target, params: Params) -> tuple[Callable[[], None] | None, str]:
    """How this target's PostgreSQL may be restarted (None: not from here) and what to tell people."""
    if target.kind == "lab":
        return (lambda: lab.restart_postgres(target.lab_dir)), "ragperf restarts the lab's own PostgreSQL"
    command = params.target.restart_command
    hint = command or "your usual restart (e.g. sudo systemctl restart postgresql)"
    if command and params.changes.allow_restart:
        return (lambda: _run_restart(command, connector(target))), hint
    return None, hint


def _run_restart(command: str, connect: Callable[[], psycopg.Connection]) -> None:
    log.info("restarting PostgreSQL: %s", command)
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=RESTART_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ChangeError(f"the restart command {command!r} failed: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-500:]
        raise ChangeError(f"the restart command {command!r} exited with {done.returncode}: {tail}")

    def accepting() -> str | None:
        try:
            with connect():
                return None
        except psycopg.OperationalError as exc:
            return str(exc).strip()

    what = f"PostgreSQL did not accept connections after {command!r}"
    procs.wait_until(accepting, timeout=RESTART_TIMEOUT_S, what=what, interval=0.5, error=ChangeError)


def host_facts(target: Target, params: Params) -> dict[str, Any]:
    """The database host's facts the settings depend on: measured for the lab, from the parameters elsewhere."""
    if target.kind == "lab":
        return runs.host_facts(target.lab_dir or Path("."))
    host = params.target.host
    if host is None:
        raise TargetError(
            "target.host is needed to plan a deployment's settings (the database host is not this machine): "
            "give memory_gb, cpus and disk (hdd, ssd or nvme) in the target's parameter file"
        )
    return {"memory_total_bytes": int(host.memory_gb * pgtune.GB), "cpu_usable": host.cpus, "disk": {"kind": host.disk}}


# --- per-role settings ------------------------------------------------------------------------


def role_settings(conn: psycopg.Connection, role: str) -> dict[str, str]:
    """The role's own settings (ALTER ROLE ... SET, for every database), by name."""
    rows = conn.execute(
        "SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
        "WHERE r.rolname = %s AND s.setdatabase = 0",
        (role,),
    ).fetchall()
    return dict(row[0].split("=", 1) for row in rows)


def plan_role_settings(role: str, current: Mapping[str, str], desired: Mapping[str, str], reason: str) -> list[Change]:
    """``ALTER ROLE role SET name = value`` for each desired setting the role does not have yet (pure)."""
    return [
        Change(ROLE_KIND, f"{role}.{name}", current.get(name), str(v), reason, details={"role": role, "setting": name})
        for name, v in desired.items()
        if current.get(name) != str(v)
    ]


class RoleSettingApplier:
    """Makes ``role_setting`` changes: ALTER ROLE ... SET, undone by SET back or RESET; new connections see them."""

    kind = ROLE_KIND

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self.connect = connect

    def apply(self, group: Sequence[Change]) -> None:
        self._alter([(c, c.after) for c in group])

    def undo(self, group: Sequence[Change]) -> None:
        self._alter([(c, c.before) for c in group])

    def _alter(self, items: Sequence[tuple[Change, str | None]]) -> None:
        with self.connect() as conn:
            conn.autocommit = True
            for change, value in items:
                role, name = sql.Identifier(change.details["role"]), sql.Identifier(change.details["setting"])
                if value is None:
                    conn.execute(sql.SQL("ALTER ROLE {} RESET {}").format(role, name))
                else:
                    conn.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(role, name, sql.Literal(value)))


# --- the appliers of a target, the snapshot, and rollback ------------------------------------


def appliers(target: Target, params: Params, *, progress: bool = True) -> dict[str, Applier]:
    """One applier per change kind, allowed what this target and these parameters allow.

    The database's kinds need the target's DSN and are left out without one; the caching tier's kinds
    (Phase 2) run processes of ragperf's own and need nothing of the target.
    """
    kinds: dict[str, Applier] = {
        rediscache.KIND: rediscache.RedisApplier(),
        cacheproxy.KIND: cacheproxy.ProxyApplier(),
        nginx.KIND: nginx.NginxApplier(),
        hosttune.KIND: hosttune.HostApplier(allowed=target.kind != "lab" and params.changes.allow_host_changes),
    }
    if not target.admin_dsn:
        return kinds
    connect = connector(target)
    restart, hint = restarter(target, params)
    ram = None if target.kind == "lab" or params.target.host is None else int(params.target.host.memory_gb * pgtune.GB)
    return {
        pgtune.KIND: pgtune.SettingsApplier(connect, restart, hint),
        "column": indexbuild.ColumnApplier(connect),
        indexes.ANALYZE_KIND: indexbuild.AnalyzeApplier(connect),
        "index": indexbuild.IndexApplier(connect, progress=progress, ram_bytes=ram),
        ROLE_KIND: RoleSettingApplier(connect),
        **kinds,
    }


def save_settings_before(phase_dir: Path, snapshot: Mapping[str, Mapping[str, Any]]) -> Path:
    """Keep pg_settings as they were before the phase's first change (an existing snapshot is kept)."""
    path = phase_dir / SETTINGS_BEFORE
    if not path.exists():
        path.write_text(json.dumps(snapshot, indent=1, sort_keys=True, default=str), encoding="utf-8")
    return path


@dataclass
class Rollback:
    """What ``ragperf rollback`` did: the changes undone and any pg_settings still different."""

    run_id: str
    phase: str
    undone: list[str]
    differences: list[str] | None  # None: the phase kept no pg_settings snapshot (it changed no settings)

    def text(self) -> str:
        lines = [f"{self.phase} of run {self.run_id}: undid {len(self.undone)} change(s)"]
        lines += [f"  - {key}" for key in self.undone]
        if self.differences:
            lines.append("pg_settings still differ from before the phase:")
            lines += [f"  - {d}" for d in self.differences]
        elif self.differences is not None:
            lines.append("pg_settings are identical to the snapshot taken before the phase.")
        return "\n".join(lines)


def rollback_phase(run: runs.Run, phase: str, target: Target, params: Params) -> Rollback:
    """Undo ``phase`` of ``run`` from its journal, then compare pg_settings with the snapshot from before it."""
    out = run.path / phase
    journal = changes.Journal(out)
    if not journal.path.exists():
        raise ChangeError(f"run {run.id} has no {phase}/{changes.JOURNAL}: {phase} changed nothing there")
    kinds = appliers(target, params, progress=False)
    undone = changes.rollback(journal, kinds)
    differences: list[str] | None = None
    before_path = out / SETTINGS_BEFORE
    if before_path.exists():
        before = json.loads(before_path.read_text(encoding="utf-8"))
        differences = pgtune.settings_differences(before, kinds[pgtune.KIND].snapshot())
    return Rollback(run.id, phase, undone, differences)


def rollback_run(run_id: str, phase: str) -> Rollback:
    """:func:`rollback_phase` with the target and parameters the run recorded for the phase."""
    run = runs.open_run(run_id)
    params = Params.model_validate(run.recorded_params(phase))
    return rollback_phase(run, phase, resolve_target(params, bring_up=False, same_profile=False), params)


def outstanding_runs(phase: str) -> list[str]:
    """Runs, newest first, whose ``phase`` journal shows changes not undone."""
    found = []
    for run_id in runs.list_runs():
        journal = changes.Journal(runs.open_run(run_id).path / phase)
        if journal.path.exists() and journal.outstanding():
            found.append(run_id)
    return found
