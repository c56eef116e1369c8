"""The Target record: where the service and its database are, for a phase (the lab's or a deployment's)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr


class TargetError(RuntimeError):
    """The target cannot be measured: not reachable, or not described well enough."""


@dataclass
class Target:
    """Where the service and its database are, for this phase."""

    kind: str
    base_url: str
    admin_dsn: str | None = None  # without password
    password: SecretStr | None = None
    lab_dir: Path | None = None
    questions_file: Path | None = None
    servers: dict[str, Any] = field(default_factory=dict)
    collection: str | None = None  # the app's LangChain collection (None: the only one the database holds)
    app_role: str | None = None  # the app's database role, for its role settings (None: not known)
    restart: Callable[[], None] | None = None  # restarts its PostgreSQL from here (the lab's own; None elsewhere)

    def connect_kwargs(self) -> dict[str, Any]:
        """psycopg keyword arguments that add the password to :attr:`admin_dsn`."""
        return {"password": self.password.get_secret_value()} if self.password else {}
