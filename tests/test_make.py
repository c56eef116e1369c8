"""The make targets as people run them: here, as root (as CI and most containers run)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from ragperf.core import procs

REPO = Path(__file__).resolve().parents[1]


def test_make_lab_serves_jupyterlab_on_the_workbench_as_whoever_runs_it(tmp_path: Path):
    """JupyterLab exits at once as root unless given --allow-root; ``make lab`` gives it when it is root, and opens
    the workbench."""
    port = procs.free_port()
    log = tmp_path / "lab.log"
    with log.open("wb") as out:
        # setup has run (the suite's own make test ran it): skip it, run the target's command as make does
        lab = subprocess.Popen(["make", "-o", "setup", "lab", f"LAB_PORT={port}"], cwd=REPO, stdout=out,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                               env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")})  # fmt: skip
    try:
        deadline, url = time.monotonic() + 90, None
        while url is None and time.monotonic() < deadline and lab.poll() is None:
            found = re.search(rf"http://127\.0\.0\.1:{port}/\S*\?token=\w+", log.read_text(errors="replace"))
            url = found[0] if found else None
            time.sleep(0.5)
        assert url is not None, f"make lab (as uid {os.getuid()}) served nothing:\n{log.read_text()[-2000:]}"
        page = httpx.get(url, timeout=30, follow_redirects=True)
        assert page.status_code == 200 and "JupyterLab" in page.text
        assert page.url.path == "/lab/tree/workbench.ipynb", page.url
    finally:
        if lab.poll() is None:
            os.killpg(lab.pid, signal.SIGTERM)  # the group make started: make, then jupyter lab under it
            try:
                lab.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(lab.pid, signal.SIGKILL)
                lab.wait()
