"""The workbench on the smoke lab: steps in the background, watched and stopped; knobs through the change model;
the notebook headless under papermill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ragperf import lab
from ragperf.core import changes, procs, targetlock
from ragperf.phases import workbench
from ragperf.systems import cachetier
from ragperf.systems.postgres import access, roles

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[3]
QUICK = REPO / "tests" / "params" / "quick.yaml"


@pytest.fixture(scope="module")
def env(lab_up, lab_dir, tmp_path_factory) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("workbench")
    tier = base / "tier.yaml"
    # in the lab's directory: nginx's unprivileged workers must reach it (pytest's own are private)
    tier.write_text(yaml.safe_dump({"cache": {"state_dir": str(lab_dir / "test-workbench-tier")}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGPERF_LAB_DIR", str(lab_dir))
        mp.setenv("RAGPERF_OUTPUTS", str(base / "outputs"))
        yield {"params": [str(QUICK), str(tier)], "outputs": str(base / "outputs")}


@pytest.fixture(scope="module")
def bench(env) -> Iterator[workbench.Workbench]:
    with workbench.session(params_files=env["params"]) as opened:
        yield opened


def _ef_search(bench: workbench.Workbench) -> str | None:
    with access.connector(bench.target)() as conn:
        return roles.role_settings(conn, bench.target.app_role).get("hnsw.ef_search")


def _until(condition, what: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


PROBE = """
import sys
from pathlib import Path
from ragperf.core import targetlock
try:
    targetlock.acquire(targetlock.lab_target(Path(sys.argv[1])), command="a probe").release()
except targetlock.TargetBusyError as busy:
    print(busy)
    sys.exit(3)
"""


def _probe(lab_dir: Path) -> subprocess.CompletedProcess:
    """Another process trying to hold the lab, as a scheduled run would."""
    env = {k: v for k, v in os.environ.items() if k != targetlock.HOLD_ENV}
    return subprocess.run([sys.executable, "-c", PROBE, str(lab_dir)], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_a_step_runs_in_the_background_holds_the_target_is_watched_and_stops_early(bench, tmp_path, monkeypatch):
    # the target's lock under a name of this test's own: this test process holds the lab's since an earlier module
    monkeypatch.setattr(bench, "lock", targetlock.lab_target(tmp_path))
    assert _probe(tmp_path).returncode == 0
    began = time.monotonic()
    step = bench.start(2, 120, workload="fresh")
    assert time.monotonic() - began < 5, "start() waited for the step"
    assert bench.running is step
    _until(lambda: len(step.records()) >= 4, "records while the step runs")
    busy = _probe(tmp_path)
    assert busy.returncode == 3 and "the workbench (step" in busy.stdout, busy.stdout + busy.stderr
    live = bench.snapshot()
    assert "(running)" in live.get_suptitle()
    with pytest.raises(workbench.WorkbenchError, match="still running"):
        bench.start(1, 5)
    seen = len(step.records())
    bench.stop()
    assert bench.wait(60) is step and step.done.is_set()
    assert step.result is not None and step.result.stopped, step.error
    assert len(step.result.records) >= seen
    assert time.monotonic() - began < 60, "the step ran on after stop()"
    assert (step.out / "requests.parquet").exists()
    row = bench.table().iloc[-1]
    assert row["state"] == "stopped" and row["requests"] == len(step.result.records)
    assert "(stopped)" in bench.snapshot().get_suptitle()
    assert _probe(tmp_path).returncode == 0, "the target is still held after the step"


def test_bad_step_values_are_refused_naming_what_is_allowed(bench):
    with pytest.raises(ValueError, match="users: must be a whole number from 1 to"):
        bench.start(0, 5)
    with pytest.raises(workbench.WorkbenchError, match="duration_s: must be a number of seconds from 1"):
        bench.start(1, 0)
    with pytest.raises(workbench.WorkbenchError, match="mode 'slow' is not allowed: use one of as asked, fast"):
        bench.start(1, 5, mode="slow")
    with pytest.raises(workbench.WorkbenchError, match="workload 'x' is not allowed: use one of zipf, in order"):
        bench.start(1, 5, workload="x")
    with pytest.raises(workbench.WorkbenchError, match="no step 99: this session has steps 1 to"):
        bench.step(99)


def test_ef_search_goes_through_the_change_model_and_is_undone(bench):
    before = _ef_search(bench)
    knob = bench.set_ef_search(123)
    assert knob is not None and _ef_search(bench) == "123"
    assert bench.knob_values()["ef_search"] == "123"
    assert [c.key for c in changes.Journal(bench.out).outstanding()] == [f"role_setting:{bench.target.app_role}"
                                                                          ".hnsw.ef_search"]  # fmt: skip
    assert bench.set_ef_search(123) is None  # already so: nothing planned
    with pytest.raises(ValueError, match="hnsw.ef_search: must be a whole number from 1 to 1000"):
        bench.set_ef_search(5000)
    assert bench.undo() is knob
    assert _ef_search(bench) == before
    assert changes.Journal(bench.out).outstanding() == []
    assert str(bench.journal.path) in (bench.target.lab_dir / lab.JOURNALS).read_text()


def test_the_cache_knob_starts_the_tier_routes_steps_through_it_and_undo_stops_it(bench):
    base = cachetier.state_dir(bench.target, bench.params)
    assert not cachetier.running(base).any()
    bench.set_cache(True)
    assert cachetier.running(base).nginx is not None and bench.url != bench.app_url
    step = bench.start(2, 4, workload="zipf")
    bench.wait(60)
    assert step.through == bench.url and step.knobs["cache"] == "on"
    assert (step.records()["cache_status"] != "").all(), "the step did not go through nginx"
    bench.set_cache(False)
    assert not cachetier.running(base).any() and bench.url == bench.app_url
    assert changes.Journal(bench.out).outstanding() == []


def test_a_step_is_compared_with_an_earlier_one_with_bootstrap_intervals(bench):
    first = bench.start(2, 3)
    bench.wait(60)
    second = bench.start(2, 3)
    bench.wait(60)
    table, heading = bench.compare(second.number, first.number)
    assert heading == f"{first.label} → {second.label}"
    assert set(table["key"]) == {"p50", "p95", "success_rate", "throughput_rps"}
    assert table.loc[table["key"] == "p95", "ci_low"].notna().all()
    with pytest.raises(workbench.WorkbenchError, match="cannot compare with 'phase7'"):
        bench.compare(second.number, "phase7")


def test_plan_mode_changes_nothing(env, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"changes": {"mode": "plan"}}))
    with workbench.session(params_files=[*env["params"], str(plan)]) as planned:
        with pytest.raises(workbench.WorkbenchError, match="plan mode .* set changes.mode: apply"):
            planned.set_ef_search(50)
        with pytest.raises(workbench.WorkbenchError, match="plan mode"):
            planned.set_cache(True)


def test_the_notebook_headless_runs_one_step_and_shows_a_static_result(env, lab_dir, tmp_path):
    out = tmp_path / "workbench.ipynb"
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "papermill"), str(REPO / "notebooks" / "workbench.ipynb"), str(out),
         "-p", "run_step", "True", "-p", "users", "2", "-p", "duration_s", "3", "-y",
         json.dumps({"params_files": env["params"]}), "--cwd", str(REPO / "notebooks")],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "RAGPERF_LAB_DIR": str(lab_dir), "RAGPERF_OUTPUTS": env["outputs"]},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    outputs = [o for cell in json.loads(out.read_text())["cells"] for o in cell.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1
    assert "step 1 (done)" in images[0]["metadata"]["image/png"]["alt"]
    assert any("<td>done</td>" in "".join(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    panel = next(o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {}))
    assert "live in JupyterLab" in "".join(panel["data"]["text/plain"])


def test_no_process_of_a_step_outlives_it(bench):
    pids = [pid for step in bench.steps if step.result for pid in step.result.pids]
    assert pids
    assert [pid for pid in pids if procs.start_ticks(pid) is not None] == []


def test_the_panel_starts_compares_turns_a_knob_and_undoes_it_and_shows_errors_in_words(bench, monkeypatch):
    from ragperf.phases import workbenchpanel

    panel = workbenchpanel.Panel(bench, users=2, duration_s=3)
    before = len(bench.steps)
    panel.start_button.click()
    assert "running" in panel.status.value and panel.stop_button.disabled is False
    _until(lambda: "done" in panel.status.value, "the step to end in the panel")
    assert len(bench.steps) == before + 1 and panel.start_button.disabled is False
    assert f"<td>{before + 1}</td>" in panel.steps.value
    assert panel.compare_with.options, "no earlier step to compare with"
    panel.compare_with.value = panel.compare_with.options[0][1]
    panel.compare_button.click()
    assert "Compared with the baseline" in panel.comparison.value
    panel.ef_search.value = 77
    panel.ef_button.click()
    assert "ef_search 77" in panel.knobs.value and _ef_search(bench) == "77"
    panel.undo_button.click()
    assert "undone: ef_search 77" in panel.status.value and _ef_search(bench) != "77"
    monkeypatch.setenv("RAGPERF_LLM_API_KEY", "sk-panel-secret-4711")
    panel._guarded(lambda: bench.step(99))
    assert "ragperf-error" in panel.status.value and "no step 99" in panel.status.value

    def refused() -> None:
        raise RuntimeError("token sk-panel-secret-4711 refused")

    panel._guarded(refused)
    assert "sk-panel-secret-4711" not in panel.status.value
    assert "live in JupyterLab" in panel._repr_mimebundle_()["text/plain"]
