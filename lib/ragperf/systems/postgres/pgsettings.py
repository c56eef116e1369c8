"""PostgreSQL settings read, compared and changed: pg_settings snapshots, ALTER SYSTEM, and their applier.

:class:`SettingsApplier` writes ``postgresql.auto.conf`` through ``ALTER SYSTEM`` and undoes with
``ALTER SYSTEM RESET`` (or ``SET`` back, when the setting was already in postgresql.auto.conf).
Restoring a backup of postgresql.conf would not roll anything back: postgresql.auto.conf wins.
:func:`settings_snapshot` and :func:`settings_differences` check that an undo came back exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError, NotAllowed, own
from ragperf.systems.postgres.pgvalues import LIST_SETTINGS, parse_list, setting_equals, with_unit

log = logging.getLogger(__name__)

KIND = "setting"
SNAPSHOT_SQL = "SELECT name, setting, unit, source, pending_restart, sourcefile, context FROM pg_settings ORDER BY name"


# ----------------------------------------------------------------------------------------------
# Reading and comparing pg_settings

# Per-connection values (application_name, client_encoding, DateStyle set by the connecting client,
# or SET in that session) describe the session that took the snapshot, not the server.
_SESSION_SOURCES = frozenset({"client", "session"})


def settings_snapshot(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """Every row of pg_settings with sourcefile and context (visible to superusers) for exact undo."""
    rows = conn.execute(SNAPSHOT_SQL).fetchall()
    keys = ("setting", "unit", "source", "pending_restart", "sourcefile", "context")
    return {name: dict(zip(keys, rest, strict=True)) for name, *rest in rows}


def settings_differences(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Human-readable differences between two pg_settings snapshots (value, source, pending_restart,
    and sourcefile when both snapshots have it); empty when the server is configured the same."""
    for label, snapshot in (("before", before), ("after", after)):
        bad = [name for name, row in snapshot.items() if not isinstance(row, Mapping)]
        if bad:
            raise ValueError(f"the {label} snapshot is not pg_settings by name (entry {bad[0]!r} is not a row)")
    out: list[str] = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old is None or new is None:
            row = old or new
            where = "before" if new is None else "after"
            out.append(f"{name}: only {where} (setting {row.get('setting')!r}, source {row.get('source')})")
            continue
        if old.get("source") in _SESSION_SOURCES or new.get("source") in _SESSION_SOURCES:
            continue
        out.extend(_row_differences(name, old, new))
    return out


def _row_differences(name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    out = []
    if old.get("setting") != new.get("setting"):
        unit = f" (unit {old.get('unit')})" if old.get("unit") else ""
        out.append(f"{name}: setting {old.get('setting')!r} → {new.get('setting')!r}{unit}")
    if old.get("source") != new.get("source"):
        out.append(f"{name}: source {old.get('source')!r} → {new.get('source')!r}")
    if bool(old.get("pending_restart")) != bool(new.get("pending_restart")):
        out.append(f"{name}: pending_restart {bool(old.get('pending_restart'))} → {bool(new.get('pending_restart'))}")
    if "sourcefile" in old and "sourcefile" in new and old["sourcefile"] != new["sourcefile"]:
        out.append(f"{name}: sourcefile {old['sourcefile']!r} → {new['sourcefile']!r}")
    return out


# ----------------------------------------------------------------------------------------------
# Applying


def alter_system_set(name: str, value: str) -> sql.Composed:
    """``ALTER SYSTEM SET name = value``, list settings as one literal per element (never 'a,b')."""
    if name in LIST_SETTINGS:
        items = parse_list(value)
        if not items:
            raise ValueError(f"{name}: an empty list cannot be SET (it would be written as '\"\"'); use RESET")
        rendered = sql.SQL(", ").join(sql.Literal(item) for item in items)
    else:
        rendered = sql.Literal(str(value))
    return sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), rendered)


def alter_system_reset(name: str) -> sql.Composed:
    """``ALTER SYSTEM RESET name``: removes it from postgresql.auto.conf."""
    return sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name))


def _undo_statement(change: Change) -> tuple[sql.Composed, str]:
    """The statement that restores ``change.before``, and the value pg_settings then shows."""
    unit = change.details.get("unit")
    before = with_unit(change.before, unit)
    in_auto_conf = change.details.get("sourcefile_is_auto_conf") is True
    if in_auto_conf and not (change.name in LIST_SETTINGS and not parse_list(before)):
        return alter_system_set(change.name, before), before
    # Not in postgresql.auto.conf before (or an empty list, which SET cannot write): remove our entry.
    return alter_system_reset(change.name), before


class SettingsApplier:
    """Makes ``setting`` changes with ALTER SYSTEM, reloads, and restarts when a change needs it.

    ``connect`` opens a superuser connection; ``restart`` restarts the server and returns once it
    accepts connections (None: this target may not be restarted from here, and a change needing a
    restart raises :class:`~ragperf.core.changes.NotAllowed`); ``restart_hint`` is what to tell the user.
    """

    kind = KIND

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        restart: Callable[[], None] | None = None,
        restart_hint: str = "sudo systemctl restart postgresql",
        *,
        reload_timeout: float = 10.0,
    ) -> None:
        self._connect = connect
        self._restart = restart
        self.restart_hint = restart_hint
        self.reload_timeout = reload_timeout

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """pg_settings now, with sourcefile and context (see :func:`settings_snapshot`)."""
        with self._connect() as conn:
            return settings_snapshot(conn)

    def apply(self, changes: Sequence[Change]) -> None:
        """ALTER SYSTEM SET each change, reload, and restart if any of them is pending a restart."""
        changes = list(own(self, changes))
        if not changes:
            return
        restart = [c.name for c in changes if c.restart]
        if restart and self._restart is None:
            raise NotAllowed(self._no_restart("apply", restart) + " Nothing was changed.")
        targets = {c.name: str(c.after) for c in changes}
        self._execute([alter_system_set(c.name, str(c.after)) for c in changes])
        self._settle(targets, "apply")

    def undo(self, changes: Sequence[Change]) -> None:
        """RESET (or SET back) each change, reload, and restart if needed; idempotent."""
        changes = list(own(self, changes))
        if not changes:
            return
        statements, targets = [], {}
        for change in changes:
            statement, expected = _undo_statement(change)
            statements.append(statement)
            targets[change.name] = expected
        self._execute(statements)
        self._settle(targets, "undo")

    def _execute(self, statements: Sequence[sql.Composed]) -> None:
        with self._connect() as conn:
            conn.autocommit = True  # ALTER SYSTEM cannot run inside a transaction block
            for statement in statements:
                conn.execute(statement)

    def _settle(self, targets: Mapping[str, str], action: str) -> None:
        pending = self._reload(targets)
        if not pending:
            return
        if self._restart is None:
            raise NotAllowed(self._no_restart(action, pending))
        log.info("%s: restarting PostgreSQL for %s", action, ", ".join(pending))
        self._restart()
        rows = self._rows(targets)
        wrong = [f"{n} = {rows[n]['setting']!r} (expected {targets[n]!r})" for n in targets
                 if not setting_equals(rows[n], targets[n]) or rows[n]["pending_restart"]]  # fmt: skip
        if wrong:
            raise ChangeError(f"{action}: after the restart these settings are not as expected: {'; '.join(wrong)}")

    def _no_restart(self, action: str, names: Sequence[str]) -> str:
        return (
            f"{action}: {', '.join(names)} take effect only after a PostgreSQL restart, and restarting this server "
            "is not allowed here (no restart command in the target's parameters). Give one "
            f"(target.restart_command), or restart it yourself: {self.restart_hint}."
        )

    def _rows(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        with self._connect() as conn:
            return self._query(conn, list(names))

    @staticmethod
    def _query(conn: psycopg.Connection, names: list[str]) -> dict[str, dict[str, Any]]:
        rows = conn.execute(
            "SELECT name, setting, unit, pending_restart FROM pg_settings WHERE name = ANY(%s)", (names,)
        ).fetchall()
        found = {name: {"setting": setting, "unit": unit, "pending_restart": pending}
                 for name, setting, unit, pending in rows}  # fmt: skip
        missing = [n for n in names if n not in found]
        if missing:
            raise ChangeError(f"pg_settings has no {', '.join(missing)}")
        return found

    def _reload(self, targets: Mapping[str, str]) -> list[str]:
        """pg_reload_conf(), then wait until each setting shows its target or is pending a restart."""
        names = list(targets)
        with self._connect() as conn:
            conn.autocommit = True
            conn.execute("SELECT pg_reload_conf()")
            rows: dict[str, dict[str, Any]] = {}

            def waiting() -> str | None:
                rows.update(self._query(conn, names))
                late = [n for n in names if not (rows[n]["pending_restart"] or setting_equals(rows[n], targets[n]))]
                if not late:
                    return None
                shown = "; ".join(f"{n} = {rows[n]['setting']!r} (expected {targets[n]!r})" for n in late)
                return f"{shown}; is the setting also given on the command line or per role/database?"

            what = "after pg_reload_conf(), the settings did not take their new values"
            procs.wait_until(waiting, timeout=self.reload_timeout, what=what, error=ChangeError)
            return sorted(n for n in names if rows[n]["pending_restart"])
