"""Shared fixtures. The lab fixture starts the real stack once per session, in its own directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from ragperf import lab


@pytest.fixture(scope="session")
def lab_dir() -> Path:
    """A lab directory of the test session's own, reachable by the unprivileged PostgreSQL user."""
    path = Path(tempfile.mkdtemp(prefix="ragperf-test-lab-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    lab.down(path)
    if not os.environ.get("RAGPERF_KEEP_TEST_LAB"):
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def lab_up(lab_dir: Path) -> dict:
    """The smoke-profile lab, up; returns ``lab.status()``."""
    lab.up("smoke", lab_dir=lab_dir)
    info = lab.status(lab_dir)
    assert info["up"], info
    return info
