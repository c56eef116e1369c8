"""Whether and how a target's PostgreSQL may be restarted from here, and a failed restart said in words."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ragperf.core import params
from ragperf.core.changes import ChangeError
from ragperf.core.target import Target, TargetError
from ragperf.systems.postgres.access import connector, restarter

DSN = "host=127.0.0.1 port=1 dbname=rag user=ops"


def _params(tmp_path: Path, restart_command: str | None, allow_restart: bool) -> params.Params:
    target = {"kind": "deployment", "base_url": "http://127.0.0.1:8000", "dsn": DSN}
    if restart_command:
        target["restart_command"] = restart_command
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"target": target, "changes": {"allow_restart": allow_restart}}))
    return params.load("smoke", "lab", [path])


def _deployment() -> Target:
    return Target("deployment", "http://127.0.0.1:8000", DSN)


def test_the_lab_is_restarted_by_its_own_restart(tmp_path: Path):
    calls = []
    lab = Target("lab", "http://127.0.0.1:8000", DSN, restart=lambda: calls.append("restart"))
    restart, how = restarter(lab, _params(tmp_path, None, False))
    assert how == "ragperf restarts the lab's own PostgreSQL"
    restart()
    assert calls == ["restart"]


def test_a_deployment_is_restarted_only_when_allowed_and_a_command_is_given(tmp_path: Path):
    command = "sudo systemctl restart postgresql@16-main"
    restart, hint = restarter(_deployment(), _params(tmp_path, command, True))
    assert callable(restart) and hint == command
    assert restarter(_deployment(), _params(tmp_path, command, False)) == (None, command)  # not allowed
    restart, hint = restarter(_deployment(), _params(tmp_path, None, True))
    assert restart is None and hint == "your usual restart (e.g. sudo systemctl restart postgresql)"


def test_a_restart_command_that_fails_says_its_exit_status_and_output(tmp_path: Path):
    restart, _ = restarter(_deployment(), _params(tmp_path, "sh -c 'echo no permission >&2; exit 3'", True))
    assert restart is not None
    with pytest.raises(ChangeError, match="exited with 3: no permission"):
        restart()


def test_a_restart_command_that_cannot_run_is_named(tmp_path: Path):
    restart, _ = restarter(_deployment(), _params(tmp_path, str(tmp_path / "no-such-restart"), True))
    assert restart is not None
    with pytest.raises(ChangeError, match="no-such-restart.* failed"):
        restart()


def test_no_dsn_no_connection():
    with pytest.raises(TargetError, match="no database DSN for this target: set target.dsn"):
        connector(Target("deployment", "http://127.0.0.1:8000"))
    assert callable(connector(_deployment()))  # connects only when called
