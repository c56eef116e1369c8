"""Per-role settings (``ALTER ROLE ... SET``): how the app gets hnsw.ef_search without a code change."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import psycopg
from psycopg import sql

from ragperf.core.changes import Change

ROLE_KIND = "role_setting"


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
