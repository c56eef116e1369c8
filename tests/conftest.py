"""Shared fixtures. The lab fixture starts the real stack once per session, in its own directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
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


@pytest.fixture(scope="module")
def env(lab_up: dict, lab_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a ``ragperf`` command on the test lab, with an outputs directory of the module's own."""
    outputs = tmp_path_factory.mktemp("outputs")
    return {**os.environ, "RAGPERF_LAB_DIR": str(lab_dir), "RAGPERF_OUTPUTS": str(outputs)}


@pytest.fixture(scope="session")
def ragperf() -> Callable[..., subprocess.CompletedProcess]:
    """Runs the ``ragperf`` command as a user would type it: ``ragperf(env, "run", "phase0", ...)``."""
    command = str(Path(sys.executable).parent / "ragperf")

    def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([command, *args], env=env, capture_output=True, text=True, timeout=1200)

    return run


# Debian's chromium, driven by playwright (no browser is downloaded). Without the background-networking flags
# Chromium keeps trying hosts this machine cannot reach.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from Debian (``playwright.sync_api.Browser``), one per test module."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: make setup installs Debian's chromium"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()
