"""Reaching a target's PostgreSQL: a connection with its admin DSN, and how (and whether) it may be restarted."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Callable

import psycopg

from ragperf.core import procs
from ragperf.core.changes import ChangeError
from ragperf.core.params import Params
from ragperf.core.target import Target, TargetError

log = logging.getLogger(__name__)


RESTART_TIMEOUT_S = 300.0


def connector(target: Target) -> Callable[[], psycopg.Connection]:
    """Opens a new connection to the target's database with its admin DSN (password from the environment)."""
    if not target.admin_dsn:
        raise TargetError("no database DSN for this target: set target.dsn in its parameter file")
    dsn, kwargs = target.admin_dsn, target.connect_kwargs()
    return lambda: psycopg.connect(dsn, connect_timeout=10, **kwargs)


def restarter(target: Target, params: Params) -> tuple[Callable[[], None] | None, str]:
    """How this target's PostgreSQL may be restarted (None: not from here) and what to tell people."""
    if target.restart is not None:  # the lab: ragperf runs its PostgreSQL itself
        return target.restart, "ragperf restarts the lab's own PostgreSQL"
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
