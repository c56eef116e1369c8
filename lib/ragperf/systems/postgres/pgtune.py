"""PostgreSQL settings planned from the target (Phase 1.1), applied with ALTER SYSTEM and undone exactly.

The plan's settings are hard-coded "for a 4 GB system"; here every value is computed from the
target's memory, CPUs, disk kind, max_connections and major version with PGTune's formulas for a
"web" application (le0pard/pgtune, re-implemented here). :data:`USERS_4GB` keeps the plan's values
so :func:`compare_with_users` can show, setting by setting, why ours differ.

Values are compared normalised (``16384`` with unit ``8kB`` equals ``128MB``), so a setting that
already has its planned value yields no :class:`~ragperf.core.changes.Change`, and planning twice after
applying gives an empty plan. Memory values are floored to the unit the server stores them in, so
what the server shows after ``ALTER SYSTEM`` is exactly what was planned. The values and their units are
:mod:`~ragperf.systems.postgres.pgvalues`; the changes are made by
:class:`~ragperf.systems.postgres.pgsettings.SettingsApplier`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ragperf.core.changes import Change
from ragperf.systems.postgres.pgsettings import KIND
from ragperf.systems.postgres.pgvalues import (
    GB,
    KB,
    MB,
    format_bytes,
    human_bytes,
    parse_list,
    setting_equals,
    unit_bytes,
)

log = logging.getLogger(__name__)

DISK_KINDS = ("hdd", "ssd", "nvme", "unknown")

# PGTune ("web") constants.
WORK_MEM_MIN = 4 * MB
# PGTune caps maintenance_work_mem at 8 GB (2 GB only on Windows up to PostgreSQL 17; older PGTune
# releases capped it at 2 GB everywhere). PITFALLS.md, checked against PGTune's source, says 8 GB.
MAINTENANCE_WORK_MEM_CAP = 8 * GB
WAL_BUFFERS_CAP = 16 * MB
WAL_BUFFERS_NEAR_CAP = 14 * MB  # PGTune rounds 14..16 MB up to 16 MB
PARALLEL_MIN_CPUS = 4
PARALLEL_WORKERS_CAP = 4  # per gather and for maintenance, for non-warehouse workloads
WEB_MIN_WAL_SIZE = 1 * GB
WEB_MAX_WAL_SIZE = 4 * GB
RANDOM_PAGE_COST = {"hdd": "4", "ssd": "1.1", "nvme": "1.1"}
EFFECTIVE_IO_CONCURRENCY = {"hdd": "2", "ssd": "200", "nvme": "1000"}

# Never added to shared_preload_libraries: pgvector is an ordinary extension that PostgreSQL loads
# on first use after CREATE EXTENSION vector; it has no _PG_init work that needs the postmaster.
# Preloading it only costs a restart. (If the list already holds it, it is kept: we never remove.)
NEVER_PRELOAD = frozenset({"vector"})

# Used when the snapshot does not carry pg_settings.context: settings that take effect only at
# server start (context 'postmaster').
POSTMASTER_SETTINGS = frozenset({
    "shared_buffers", "shared_preload_libraries", "max_worker_processes", "wal_buffers", "max_connections",
    "max_locks_per_transaction", "superuser_reserved_connections", "huge_pages", "max_prepared_transactions",
    "max_wal_senders", "wal_level", "max_files_per_process", "max_pred_locks_per_transaction", "io_method",
})  # fmt: skip


# Sources whose value ALTER SYSTEM cannot override (they rank above the configuration files).
_ABOVE_FILES = frozenset({"command line", "global", "database", "user", "database user", "client", "override",
                          "interactive", "session"})  # fmt: skip
# Sources that certainly do not come from postgresql.auto.conf.
_NOT_FROM_FILES = frozenset({"default", "environment variable"})

# The plan's hard-coded settings "for a 4 GB RAM system" (PLAN.md, Phase 1.1), verbatim.
USERS_4GB: dict[str, str] = {
    "max_connections": "200",
    "superuser_reserved_connections": "3",
    "shared_buffers": "1GB",
    "effective_cache_size": "3GB",
    "work_mem": "8MB",
    "maintenance_work_mem": "256MB",
    "max_locks_per_transaction": "1024",
    "shared_preload_libraries": "vector",
    "random_page_cost": "1.1",
    "effective_io_concurrency": "200",
}

# Why the users' extras are not followed (PITFALLS.md, Phase 1.1).
USERS_WHY: dict[str, str] = {
    "max_connections": (
        "Not raised: 200 connections hide the real defect (the service opens a new connection per request); "
        "a pooler (PgBouncer) in front of PostgreSQL is the non-invasive fix, and every extra connection "
        "multiplies work_mem."
    ),
    "max_locks_per_transaction": (
        "Not changed: it has nothing to do with vector search; raising it to 1024 only costs shared memory "
        "and a restart."
    ),
    "shared_preload_libraries": (
        "Merged, never overwritten: pgvector needs no preload (CREATE EXTENSION vector is enough), and "
        "overwriting the list with 'vector' would drop pg_stat_statements, which Phase 3 needs."
    ),
    "superuser_reserved_connections": "Not changed: 3 is already PostgreSQL's default.",
}


# ----------------------------------------------------------------------------------------------
# Facts


@dataclass(frozen=True, kw_only=True)
class Facts:
    """What the settings depend on. ``memory_bytes`` is what PostgreSQL may use (cgroup limit if lower)."""

    memory_bytes: int
    cpus: int
    disk: str
    max_connections: int
    max_worker_processes: int = 8
    pg_major: int
    memory_note: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.memory_bytes < 64 * MB:
            problems.append(f"memory_bytes must be at least 64 MB, got {self.memory_bytes}")
        if self.cpus < 1:
            problems.append(f"cpus must be at least 1, got {self.cpus}")
        if self.disk not in DISK_KINDS:
            problems.append(f"disk must be one of {', '.join(DISK_KINDS)}, got {self.disk!r}")
        if self.max_connections < 1:
            problems.append(f"max_connections must be at least 1, got {self.max_connections}")
        if self.max_worker_processes < 0:
            problems.append(f"max_worker_processes must be >= 0, got {self.max_worker_processes}")
        if not 9 <= self.pg_major <= 99:
            problems.append(f"pg_major must be a PostgreSQL major version such as 15, got {self.pg_major}")
        if problems:
            raise ValueError("invalid facts: " + "; ".join(problems))

    @property
    def disk_kind(self) -> str:
        """The disk kind the formulas use: ``unknown`` counts as SSD."""
        return "ssd" if self.disk == "unknown" else self.disk

    @property
    def disk_phrase(self) -> str:
        """The disk kind for a sentence, saying when an unknown disk is treated as SSD."""
        names = {"hdd": "HDD", "ssd": "SSD", "nvme": "NVMe"}
        return "disk kind unknown, treated as SSD" if self.disk == "unknown" else names[self.disk]

    @property
    def memory_phrase(self) -> str:
        """``4 GB``, or ``2 GB (cgroup memory limit ...)``."""
        return human_bytes(self.memory_bytes) + (f" ({self.memory_note})" if self.memory_note else "")


def facts_from(snapshot: Mapping[str, Mapping[str, Any]], host: Mapping[str, Any]) -> Facts:
    """Facts from a pg_settings snapshot and ``hosttune.machine_facts()``; the cgroup memory limit wins when lower."""
    missing = [key for key in ("memory_total_bytes",) if not host.get(key)]
    if not (host.get("cpu_usable") or host.get("cpu_cores")):
        missing.append("cpu_usable")
    if missing:
        raise ValueError(f"host facts lack {', '.join(missing)}: pass the dict hosttune.machine_facts() returns")
    ram = int(host["memory_total_bytes"])
    limit = host.get("cgroup_memory_limit_bytes")
    memory, note = ram, ""
    if isinstance(limit, int) and 0 < limit < ram:
        memory, note = limit, f"the cgroup memory limit, below the host's {human_bytes(ram)} of RAM"
    disk = (host.get("disk") or {}).get("kind") or "unknown"
    return Facts(
        memory_bytes=memory,
        cpus=int(host.get("cpu_usable") or host["cpu_cores"]),
        disk=disk,
        max_connections=_setting_int(snapshot, "max_connections"),
        max_worker_processes=_setting_int(snapshot, "max_worker_processes", default=8),
        pg_major=_setting_int(snapshot, "server_version_num") // 10000,
        memory_note=note,
    )


def _setting_int(snapshot: Mapping[str, Mapping[str, Any]], name: str, default: int | None = None) -> int:
    row = snapshot.get(name)
    if not isinstance(row, Mapping) or row.get("setting") in (None, ""):
        if default is not None:
            return default
        raise ValueError(f"the pg_settings snapshot has no {name}: pass every row of pg_settings")
    try:
        return int(row["setting"])
    except ValueError:
        raise ValueError(f"pg_settings {name} is {row['setting']!r}, not an integer") from None


# ----------------------------------------------------------------------------------------------
# Planning


@dataclass(frozen=True)
class Recommendation:
    """One PGTune value for a target, with the sentence that explains it."""

    name: str
    value: str
    reason: str


# The unit pg_settings stores each planned memory setting in (with the default 8 kB block size).
DEFAULT_UNITS = {
    "shared_buffers": "8kB", "effective_cache_size": "8kB", "wal_buffers": "8kB", "work_mem": "kB",
    "maintenance_work_mem": "kB", "min_wal_size": "MB", "max_wal_size": "MB",
}  # fmt: skip


def recommend(facts: Facts, units: Mapping[str, str | None] | None = None) -> list[Recommendation]:
    """PGTune's "web" values for ``facts`` (shared_preload_libraries aside: see :func:`merge_preload`).

    ``units`` (name → pg_settings unit) floors memory values to what the server can store.
    """
    units = {**DEFAULT_UNITS, **{k: v for k, v in (units or {}).items() if k in DEFAULT_UNITS and v}}

    def floor(name: str, n: int) -> int:
        return n - n % unit_bytes(units[name])

    ram_kb = facts.memory_bytes // KB  # PGTune computes in kB, flooring each step
    ram = facts.memory_phrase
    shared = floor("shared_buffers", ram_kb // 4 * KB)
    cache = floor("effective_cache_size", ram_kb * 3 // 4 * KB)
    maint_raw = ram_kb // 16 * KB
    maint = floor("maintenance_work_mem", min(maint_raw, MAINTENANCE_WORK_MEM_CAP))
    maint_note = f", capped at PGTune's {human_bytes(MAINTENANCE_WORK_MEM_CAP)}" if maint_raw > maint else ""
    recs = [
        Recommendation("shared_buffers", format_bytes(shared), f"RAM/4 = {human_bytes(shared)} of {ram}."),
        Recommendation("effective_cache_size", format_bytes(cache),
                       f"3·RAM/4 = {human_bytes(cache)} of {ram}: what the planner may assume is cached."),
        Recommendation("maintenance_work_mem", format_bytes(maint),
                       f"RAM/16 = {human_bytes(maint_raw)} of {ram}{maint_note} (PGTune, web)."),
        _work_mem(facts, ram_kb // 4, floor),
        _wal_buffers(ram_kb // 4, floor),
        Recommendation("random_page_cost", RANDOM_PAGE_COST[facts.disk_kind],
                       f"{facts.disk_phrase}: random_page_cost {RANDOM_PAGE_COST[facts.disk_kind]} (PGTune)."),
        Recommendation("effective_io_concurrency", EFFECTIVE_IO_CONCURRENCY[facts.disk_kind],
                       f"{facts.disk_phrase}: {EFFECTIVE_IO_CONCURRENCY[facts.disk_kind]} concurrent reads "
                       "(PGTune: HDD 2, SSD 200, NVMe 1000)."),
        Recommendation("checkpoint_completion_target", "0.9",
                       "0.9 spreads checkpoint writes over 90% of the interval (PGTune; default since PG 14)."),
        Recommendation("default_statistics_target", "100", "100 for a web workload (PGTune)."),
        Recommendation("min_wal_size", format_bytes(floor("min_wal_size", WEB_MIN_WAL_SIZE)),
                       f"{human_bytes(WEB_MIN_WAL_SIZE)} for a web workload (PGTune): WAL segments are recycled."),
        Recommendation("max_wal_size", format_bytes(floor("max_wal_size", WEB_MAX_WAL_SIZE)),
                       f"{human_bytes(WEB_MAX_WAL_SIZE)} for a web workload (PGTune): fewer forced checkpoints."),
    ]  # fmt: skip
    if facts.pg_major >= 12:
        recs.append(Recommendation("jit", "off", f"off on PostgreSQL {facts.pg_major} (>= 12) for web/OLTP: "
                                   "JIT compiles short queries for longer than they run (PGTune)."))  # fmt: skip
    return recs + _parallel(facts)


def _parallel_workers(facts: Facts) -> int:
    """The max_worker_processes work_mem is divided for: the planned one, else the server's current one."""
    return facts.cpus if facts.cpus >= PARALLEL_MIN_CPUS else facts.max_worker_processes


def _work_mem(facts: Facts, shared_kb: int, floor: Callable[[str, int], int]) -> Recommendation:
    ram_kb = facts.memory_bytes // KB
    workers = _parallel_workers(facts)
    raw = (ram_kb - shared_kb) // ((facts.max_connections + workers) * 3) * KB
    value = floor("work_mem", max(raw, WORK_MEM_MIN))
    minimum = f", raised to PGTune's {human_bytes(WORK_MEM_MIN)} minimum" if raw < WORK_MEM_MIN else ""
    reason = (
        f"(RAM − shared_buffers)/((max_connections + max_worker_processes)·3) = ({human_bytes(ram_kb * KB)} − "
        f"{human_bytes(shared_kb * KB)})/(({facts.max_connections} + {workers})·3) = {human_bytes(raw)}{minimum}."
    )
    return Recommendation("work_mem", format_bytes(value), reason)


def _wal_buffers(shared_kb: int, floor: Callable[[str, int], int]) -> Recommendation:
    raw = 3 * shared_kb // 100 * KB
    value = min(raw, WAL_BUFFERS_CAP)
    if WAL_BUFFERS_NEAR_CAP < value < WAL_BUFFERS_CAP:
        value = WAL_BUFFERS_CAP
    value = floor("wal_buffers", max(value, 32 * KB))
    capped = f", capped at {human_bytes(WAL_BUFFERS_CAP)}" if raw > WAL_BUFFERS_CAP else ""
    reason = f"3% of shared_buffers = {human_bytes(raw)} of {human_bytes(shared_kb * KB)}{capped}."
    return Recommendation("wal_buffers", format_bytes(value), reason)


def _parallel(facts: Facts) -> list[Recommendation]:
    cpus = facts.cpus
    if cpus < PARALLEL_MIN_CPUS:
        return []
    half = math.ceil(cpus / 2)
    capped = min(half, PARALLEL_WORKERS_CAP)
    cap = f", capped at {PARALLEL_WORKERS_CAP}" if half > capped else ""
    recs = [
        Recommendation("max_worker_processes", str(cpus), f"{cpus} CPUs (>= 4): one worker process per CPU."),
        Recommendation("max_parallel_workers_per_gather", str(capped),
                       f"ceil(CPUs/2) = ceil({cpus}/2) = {half}{cap} (PGTune, web)."),
    ]  # fmt: skip
    if facts.pg_major >= 10:
        recs.append(Recommendation("max_parallel_workers", str(cpus), f"{cpus} CPUs: all may run parallel work."))
    if facts.pg_major >= 11:
        recs.append(Recommendation("max_parallel_maintenance_workers", str(capped),
                                   f"ceil(CPUs/2) = {half}{cap}: parallel index builds (PGTune)."))  # fmt: skip
    return recs


def merge_preload(current: str | None, preload: Iterable[str]) -> list[str]:
    """The current shared_preload_libraries plus ``preload``: order kept, nothing removed, never 'vector'."""
    merged = parse_list(current)
    for name in preload:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"preload entries must be library names, got {name!r}")
        if name.strip() in NEVER_PRELOAD:
            log.info("not preloading %s: CREATE EXTENSION is all it needs", name)
            continue
        if name.strip() not in merged:
            merged.append(name.strip())
    return merged


def needs_restart(name: str, row: Mapping[str, Any] | None = None) -> bool:
    """True for settings that take effect only at server start (pg_settings.context 'postmaster')."""
    context = (row or {}).get("context")
    return context == "postmaster" if context else name in POSTMASTER_SETTINGS


def _auto_conf(row: Mapping[str, Any]) -> bool | None:
    """Whether the value came from postgresql.auto.conf: None when the snapshot cannot tell."""
    sourcefile = row.get("sourcefile")
    if sourcefile:
        return str(sourcefile).endswith("postgresql.auto.conf")
    if row.get("source") in _NOT_FROM_FILES:
        return False
    return None


def _change(name: str, row: Mapping[str, Any], after: str, reason: str) -> Change:
    details = {
        "unit": row.get("unit"),
        "source": row.get("source"),
        "sourcefile_is_auto_conf": _auto_conf(row),
        "context": row.get("context"),
    }
    if row.get("source") in _ABOVE_FILES:
        reason += f" Note: now set by {row['source']}, which overrides ALTER SYSTEM."
    return Change(KIND, name, row.get("setting"), after, reason, restart=needs_restart(name, row), details=details)


def plan_settings(
    facts: Facts,
    snapshot: Mapping[str, Mapping[str, Any]],
    *,
    preload: Sequence[str] = ("pg_stat_statements",),
) -> list[Change]:
    """The setting changes that bring the server from ``snapshot`` to PGTune's values for ``facts``.

    ``snapshot`` is pg_settings by name (``{setting, unit, source, pending_restart}``, optionally
    ``sourcefile`` and ``context``: :func:`settings_snapshot` reads all of them, and undo is exact
    only when ``sourcefile`` is known). Settings the server does not have are skipped; settings that
    already hold their value give no change.
    """
    units = {name: row.get("unit") for name, row in snapshot.items() if isinstance(row, Mapping)}
    changes: list[Change] = []
    for rec in recommend(facts, units):
        row = snapshot.get(rec.name)
        if not isinstance(row, Mapping):
            log.info("%s: not a setting of this server, skipped", rec.name)
            continue
        if not setting_equals(row, rec.value):
            changes.append(_change(rec.name, row, rec.value, rec.reason))
    row = snapshot.get("shared_preload_libraries")
    if isinstance(row, Mapping):
        current = parse_list(row.get("setting"))
        merged = merge_preload(row.get("setting"), preload)
        if merged != current:
            added = [name for name in merged if name not in current]
            reason = (f"Merged: the current list ({', '.join(current) or 'empty'}) plus {', '.join(added)}; "
                      "nothing removed, no 'vector' (CREATE EXTENSION is enough).")  # fmt: skip
            changes.append(_change("shared_preload_libraries", row, ",".join(merged), reason))
    unknown = [c.name for c in changes if c.details["sourcefile_is_auto_conf"] is None]
    if unknown:
        log.warning("the snapshot does not say whether %s came from postgresql.auto.conf; undo will RESET them. "
                    "Plan from settings_snapshot() (as superuser) to know.", ", ".join(unknown))  # fmt: skip
    return changes


def compare_with_users(changes: Sequence[Change], facts: Facts) -> pd.DataFrame:
    """The plan's 4 GB values beside ours, one row per setting in either, with why they differ."""
    planned = {c.name: c for c in changes if c.kind == KIND}
    recs = {r.name: r for r in recommend(facts)}
    names = list(USERS_4GB) + [n for n in [*recs, *planned] if n not in USERS_4GB]
    rows = []
    for name in dict.fromkeys(names):
        users = USERS_4GB.get(name)
        change, rec = planned.get(name), recs.get(name)
        if change is not None:
            ours = str(change.after)
        elif rec is not None:
            ours = f"{rec.value} (already set)"
        elif name == "max_connections":
            ours = f"{facts.max_connections} (unchanged)"
        else:
            ours = "unchanged"
        reason = change.reason if change is not None else rec.reason if rec is not None else ""
        if name in USERS_WHY:
            why = USERS_WHY[name]
        elif users is None:
            why = f"Not in the users' plan. {reason}"
        elif setting_equals({"setting": users, "unit": DEFAULT_UNITS.get(name)}, ours.split(" ")[0]):
            why = f"Same value. {reason}"
        else:
            why = f"The plan hard-codes {users} for a 4 GB system; computed for this target: {reason}"
        rows.append({"setting": name, "users' value (4 GB)": users or "—", "planned here": ours, "why different": why})
    return pd.DataFrame(rows, columns=["setting", "users' value (4 GB)", "planned here", "why different"])
