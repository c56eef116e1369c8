"""Making and unmaking Phase 1.2's changes: the column's type, ANALYZE, and concurrent index builds with progress."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import psycopg

from ragperf.core.changes import Change, ChangeError, own
from ragperf.core.progress import bar as progress_bar
from ragperf.systems.postgres.embeddings import EMBEDDING, pretty_bytes
from ragperf.systems.postgres.indexes import ANALYZE_KIND, hnsw_graph_bytes

log = logging.getLogger(__name__)

GRAPH_NOTICE = "hnsw graph no longer fits into maintenance_work_mem"


def maintenance_work_mem_kb(
    rows: int, dims: int, m: int, *, ram_bytes: int, ram_share: float = 0.25, current_kb: int = 65_536
) -> int:
    """The maintenance_work_mem (kB) for an HNSW build: the graph plus 20 %, capped at ``ram_share`` of RAM.

    Never below ``current_kb`` (the server's own setting): a build must not get less than it would anyway.
    """
    if not 0 < ram_share <= 0.9:
        raise ValueError(f"ram_share {ram_share}: allowed is 0 < ram_share <= 0.9")
    wanted = math.ceil(hnsw_graph_bytes(rows, dims, m) * 1.2 / 1024)
    cap = int(ram_bytes * ram_share / 1024)
    return max(current_kb, min(wanted, cap))


def _autocommit(connect: Callable[[], psycopg.Connection]) -> psycopg.Connection:
    conn = connect()
    if not conn.autocommit:
        conn.autocommit = True  # CREATE INDEX CONCURRENTLY cannot run in a transaction block
    return conn


def _current_type(conn: psycopg.Connection, regclass: str) -> str | None:
    row = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s",
        (regclass, EMBEDDING),
    ).fetchone()
    return row[0] if row else None


class ColumnApplier:
    """Changes the type of ``embedding`` (kind ``column``): ``vector`` <-> ``vector(N)``; idempotent both ways.

    Attributes:
        timings: seconds each ALTER took, by change name.
    """

    kind = "column"

    def __init__(self, connect: Callable[[], psycopg.Connection], *, lock_timeout: str = "10s") -> None:
        """``lock_timeout`` bounds the wait for the exclusive lock, so the app is not queued behind the ALTER."""
        self.connect = connect
        self.lock_timeout = lock_timeout
        self.timings: dict[str, float] = {}

    def apply(self, changes: Sequence[Change]) -> None:
        """Alter each column to its ``after`` type (skipped when it already has it)."""
        for change in changes:
            self._alter(change, change.after, change.details["sql"])

    def undo(self, changes: Sequence[Change]) -> None:
        """Alter each column back to its ``before`` type (skipped when it already has it)."""
        for change in changes:
            self._alter(change, change.before, change.details["undo_sql"])

    def _alter(self, change: Change, target: str, statement: str) -> None:
        with _autocommit(self.connect) as conn:
            current = _current_type(conn, change.details["regclass"])
            if current is None:
                raise ChangeError(f"{change.name}: column not found")
            if current == target:
                log.info("%s is already %s", change.name, target)
                return
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (self.lock_timeout,))
            started = time.perf_counter()
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                hint = (
                    " (drop the HNSW index on it first: undo the index changes before this one)"
                    if ("does not have dimensions" in str(exc))
                    else ""
                )
                raise ChangeError(f"{change.name}: {current} -> {target} failed: {exc}{hint}") from exc
            self.timings[change.name] = round(time.perf_counter() - started, 3)
            log.info("%s: %s -> %s in %.1f s", change.name, current, target, self.timings[change.name])


class AnalyzeApplier:
    """Runs ANALYZE (kind ``analyze``) so that the planner sees the table as it now is.

    Statistics are not configuration, and no statement restores older ones: undo leaves them, which is
    what autovacuum would do anyway (a rolled-back table is analyzed again by it when enough changed).
    """

    kind = ANALYZE_KIND

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self.connect = connect
        self.timings: dict[str, float] = {}

    def apply(self, changes: Sequence[Change]) -> None:
        """ANALYZE each change's table."""
        with _autocommit(self.connect) as conn:
            for change in own(self, changes):
                started = time.perf_counter()
                conn.execute(change.details["sql"])
                self.timings[change.name] = round(time.perf_counter() - started, 3)

    def undo(self, changes: Sequence[Change]) -> None:
        """Nothing to restore: the statistics stay (see the class)."""
        for change in own(self, changes):
            log.info("%s: statistics are kept on undo", change.name)


@dataclass
class BuildReport:
    """What one index build did."""

    seconds: float = 0.0
    maintenance_work_mem: str = ""
    max_parallel_maintenance_workers: int = 0
    phases: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    @property
    def graph_spilled(self) -> bool:
        """True when pgvector said the HNSW graph outgrew maintenance_work_mem (a much slower build)."""
        return any(GRAPH_NOTICE in n for n in self.notices)


class IndexApplier:
    """Builds and drops indexes (kind ``index``) with CREATE/DROP INDEX CONCURRENTLY.

    Attributes:
        timings: seconds each build took, by index name.
        builds: a :class:`BuildReport` per index built (settings, progress phases, notices).
    """

    kind = "index"

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        *,
        progress: bool = True,
        maintenance_work_mem: str | None = None,
        max_parallel_maintenance_workers: int = 2,
        ram_bytes: int | None = None,
        ram_share: float = 0.25,
        poll_s: float = 0.2,
    ) -> None:
        """Args:
        connect: opens a new connection to the app's database (made autocommit here).
        progress: show a progress bar fed from pg_stat_progress_create_index.
        maintenance_work_mem: a fixed value (e.g. "2GB") for every build; by default HNSW builds get
            :func:`maintenance_work_mem_kb` (the graph, capped at ``ram_share`` of ``ram_bytes``).
        max_parallel_maintenance_workers: for the build's session (pgvector >= 0.6 builds HNSW in parallel).
        ram_bytes: the database server's RAM; by default this machine's, right for the lab.
        ram_share: the largest share of RAM one build may take.
        poll_s: how often progress is read.
        """
        if max_parallel_maintenance_workers < 0:
            raise ValueError(f"max_parallel_maintenance_workers {max_parallel_maintenance_workers}: must be >= 0")
        self.connect = connect
        self.progress = progress
        self.maintenance_work_mem = maintenance_work_mem
        self.max_parallel_maintenance_workers = max_parallel_maintenance_workers
        self.ram_bytes = ram_bytes or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        self.ram_share = ram_share
        self.poll_s = poll_s
        self.timings: dict[str, float] = {}
        self.builds: dict[str, BuildReport] = {}

    def apply(self, changes: Sequence[Change]) -> None:
        """Build each index; an INVALID leftover of the same name is dropped first, a valid one kept."""
        with _autocommit(self.connect) as conn:
            for change in changes:
                state = _index_state(conn, change.details["regclass"])
                if state == "valid":
                    log.info("%s already exists and is valid: kept", change.name)
                    continue
                if state == "invalid":
                    log.info("dropping the INVALID leftover %s before rebuilding it", change.name)
                    conn.execute(change.details["undo_sql"])
                report = self._configure(conn, change)
                self._build(conn, change, report)
                if _index_state(conn, change.details["regclass"]) != "valid":
                    raise ChangeError(
                        f"index {change.name} was built but pg_index.indisvalid is false: drop it "
                        "(undo) and look for its error in the server log"
                    )

    def undo(self, changes: Sequence[Change]) -> None:
        """Drop each index (DROP INDEX CONCURRENTLY IF EXISTS); an INVALID ``before`` is not recreated."""
        with _autocommit(self.connect) as conn:
            for change in changes:
                conn.execute(change.details["undo_sql"])

    def report(self) -> pd.DataFrame:
        """One row per build: seconds, settings, whether the graph spilled out of memory."""
        rows = [
            {
                "index": name,
                "seconds": b.seconds,
                "maintenance_work_mem": b.maintenance_work_mem,
                "workers": b.max_parallel_maintenance_workers,
                "graph_spilled": b.graph_spilled,
                "phases": " > ".join(b.phases),
            }
            for name, b in self.builds.items()
        ]
        return pd.DataFrame(
            rows, columns=["index", "seconds", "maintenance_work_mem", "workers", "graph_spilled", "phases"]
        )

    def _configure(self, conn: psycopg.Connection, change: Change) -> BuildReport:
        setting = self.maintenance_work_mem
        if setting is None:
            current = int(
                conn.execute("SELECT setting FROM pg_settings WHERE name = 'maintenance_work_mem'").fetchone()[0]
            )
            setting = f"{current}kB"
            if change.details.get("method") == "hnsw":
                d = change.details
                kb = maintenance_work_mem_kb(
                    d["rows_estimate"],
                    d["dims"],
                    d["m"],
                    ram_bytes=self.ram_bytes,
                    ram_share=self.ram_share,
                    current_kb=current,
                )
                setting = f"{kb}kB"
                if kb * 1024 < d["graph_bytes"]:
                    log.warning(
                        "%s: the HNSW graph (~%s) exceeds %s of RAM; the build will spill to disk",
                        change.name,
                        pretty_bytes(d["graph_bytes"]),
                        f"{self.ram_share:.0%}",
                    )
        conn.execute("SELECT set_config('maintenance_work_mem', %s, false)", (setting,))
        conn.execute(
            "SELECT set_config('max_parallel_maintenance_workers', %s, false)",
            (str(self.max_parallel_maintenance_workers),),
        )
        return BuildReport(
            maintenance_work_mem=setting, max_parallel_maintenance_workers=self.max_parallel_maintenance_workers
        )

    def _build(self, conn: psycopg.Connection, change: Change, report: BuildReport) -> None:
        self.builds[change.name] = report

        def on_notice(diag: psycopg.errors.Diagnostic) -> None:
            report.notices.append(diag.message_primary or "")
            if GRAPH_NOTICE in (diag.message_primary or ""):
                log.warning("%s: %s (slow build: raise maintenance_work_mem)", change.name, diag.message_primary)

        conn.add_notice_handler(on_notice)
        started = time.perf_counter()
        try:
            if self.progress:
                self._build_watched(conn, change, report)
            else:
                conn.execute(change.details["sql"])
        finally:
            conn.remove_notice_handler(on_notice)
            report.seconds = round(time.perf_counter() - started, 3)
        self.timings[change.name] = report.seconds

    def _build_watched(self, conn: psycopg.Connection, change: Change, report: BuildReport) -> None:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                conn.execute(change.details["sql"])
            except BaseException as exc:  # re-raised in the caller's thread
                errors.append(exc)

        pid = conn.info.backend_pid
        worker = threading.Thread(target=run, name=f"build {change.name}", daemon=True)
        with _autocommit(self.connect) as watch, progress_bar(desc=change.name, unit="tuple", leave=True) as bar:
            worker.start()
            try:
                while worker.is_alive():
                    _show_progress(watch, pid, bar, report)
                    worker.join(self.poll_s)
            except BaseException:
                conn.cancel_safe()  # a KeyboardInterrupt must not leave the build running; undo drops the leftover
                worker.join()
                raise
        if errors:
            raise errors[0]


def _show_progress(watch: psycopg.Connection, pid: int, bar: Any, report: BuildReport) -> None:
    row = watch.execute(
        "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total "
        "FROM pg_stat_progress_create_index WHERE pid = %s",
        (pid,),
    ).fetchone()
    if row is None:
        return
    phase, blocks_done, blocks_total, tuples_done, tuples_total = row
    if not report.phases or report.phases[-1] != phase:
        report.phases.append(phase)
    done, total, unit = (tuples_done, tuples_total, "tuple") if tuples_total else (blocks_done, blocks_total, "block")
    bar.unit, bar.total, bar.n = unit, total or None, done
    bar.set_postfix_str(phase, refresh=False)
    bar.refresh()


def _index_state(conn: psycopg.Connection, regclass: str) -> str | None:
    row = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (regclass,)).fetchone()
    return None if row is None else "valid" if row[0] else "invalid"
