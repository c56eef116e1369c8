"""The workbench as an engineer uses it: JupyterLab on a free loopback port, opened in headless Chromium, the
notebook run, a step started from the panel, its chart redrawn while it runs, then stopped."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ragperf.core import procs

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _notebook(directory: Path, params_files: list[str]) -> Path:
    """A copy of the workbench notebook (JupyterLab saves into what it opens) with a short first step."""
    nb = json.loads((REPO / "notebooks" / "workbench.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    cell["source"] = f"profile = 'smoke'\ntarget = 'lab'\nparams_files = {params_files!r}\nusers = 2\n" \
                     "duration_s = 40.0\nmode = 'as asked'\nworkload = 'fresh'\nrun_step = False\n"  # fmt: skip
    path = directory / "workbench.ipynb"
    path.write_text(json.dumps(nb))
    return path


@pytest.fixture(scope="module")
def jupyterlab(lab_up, lab_dir, tmp_path_factory) -> Iterator[dict]:
    """JupyterLab serving a copy of the workbench, its token given through the environment (not the process list);
    shut down through its API, its process group killed by PID if it lingers."""
    base = tmp_path_factory.mktemp("jupyterlab")
    (base / "notebooks").mkdir()
    _notebook(base / "notebooks", [str(REPO / "tests" / "params" / "quick.yaml")])
    port, token = procs.free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_TOKEN": token, "RAGPERF_LAB_DIR": str(lab_dir),
           "RAGPERF_OUTPUTS": str(base / "outputs"), "JUPYTER_CONFIG_DIR": str(base / "config"),
           "JUPYTER_RUNTIME_DIR": str(base / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces")}  # fmt: skip
    argv = [str(BIN / "jupyter"), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--ServerApp.root_dir={base / 'notebooks'}",
            "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *(["--allow-root"] if os.geteuid() == 0 else [])]  # fmt: skip
    settings = base / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)  # no question about Jupyter's news: it would fetch from the internet
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    log = (base / "jupyterlab.log").open("w")
    server = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, headers = f"http://127.0.0.1:{port}", {"Authorization": f"token {token}"}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (base / "jupyterlab.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "JupyterLab did not answer in 120 s"
            try:
                if httpx.get(f"{url}/api/status", headers=headers, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield {"url": url, "token": token, "outputs": base / "outputs", "log": base / "jupyterlab.log"}
    finally:
        with httpx.Client(headers=headers, timeout=30) as api:
            try:
                for kernel in api.get(f"{url}/api/kernels").json():
                    api.delete(f"{url}/api/kernels/{kernel['id']}")
                api.post(f"{url}/api/shutdown")
            except httpx.HTTPError:
                pass
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
        log.close()


def _chart_source(page) -> str:
    return page.locator("img.ragperf-live-chart").get_attribute("src") or ""


# every code cell queued or run: "[*]" or "[n]" in its prompt
RAN = (
    "() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
    ".every(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))"
)


def _run_all_cells(page, tries: int = 6) -> None:
    """Run > Run All Cells, again until every cell is queued: cells sent while the kernel is still connecting are
    dropped by JupyterLab."""
    for _ in range(tries):
        page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for(timeout=120_000)
        dialog = page.locator(".jp-Dialog")
        if dialog.count() and dialog.first.is_visible():  # JupyterLab at times asks for the kernel it already started
            dialog.locator("select").select_option(label="ragperf (.venv)")
            dialog.get_by_role("button", name="Select").click()
        try:
            page.get_by_role("menuitem", name="Run", exact=True).click(timeout=10_000)
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click(timeout=10_000)
            page.wait_for_function(RAN, timeout=15_000)
            return
        except Exception:  # playwright's TimeoutError (a dialog in the way, cells not queued): try again
            continue
    raise AssertionError("JupyterLab did not run the notebook's cells")


def test_a_step_started_in_jupyterlab_is_drawn_while_it_runs_and_stopped_from_the_panel(jupyterlab, browser):
    url = jupyterlab["url"]
    elsewhere, page_errors = [], []
    context = browser.new_context(viewport={"width": 1400, "height": 1300})
    page = context.new_page()
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
               else (elsewhere.append(route.request.url), route.abort()))  # fmt: skip
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    try:
        page.goto(f"{url}/lab/tree/workbench.ipynb?token={jupyterlab['token']}")
        page.locator(".jp-Notebook").first.wait_for(timeout=120_000)
        _run_all_cells(page)
        start = page.locator("button.ragperf-start")
        start.wait_for(timeout=60_000)
        before = _chart_source(page)
        start.click()
        status = page.locator(".ragperf-status").last
        page.wait_for_function("() => document.querySelector('.ragperf-status')?.textContent.includes('running')",
                               timeout=30_000)  # fmt: skip
        seen, deadline = {before}, time.monotonic() + 60
        while len(seen) < 4 and time.monotonic() < deadline:  # redrawn once a second from the records so far
            seen.add(_chart_source(page))
            time.sleep(0.3)
        assert len(seen) >= 4, (
            f"the live chart was redrawn {len(seen) - 1} times in 60 s; status: {status.inner_text()}"
        )
        assert "running" in status.inner_text()
        sessions = sorted((jupyterlab["outputs"] / "workbench").iterdir())
        shot = sessions[-1] / "workbench-screenshot.png"
        page.locator(".ragperf-workbench").screenshot(path=str(shot))
        assert shot.read_bytes().startswith(b"\x89PNG")
        page.locator("button.ragperf-stop").click()
        page.wait_for_function("() => document.querySelector('.ragperf-status')?.textContent.includes('stopped')",
                               timeout=60_000)  # fmt: skip
        assert page.locator(".ragperf-steps td", has_text="stopped").count() == 1
        assert "step 1: 2 users, 40 s, fresh" in status.inner_text()
    except Exception:
        page.screenshot(path=str(jupyterlab["outputs"].parent / "failure.png"), full_page=True)
        raise
    finally:
        context.close()
    assert elsewhere == [], f"the page asked beyond JupyterLab: {elsewhere}"
    assert page_errors == []
