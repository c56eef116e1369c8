"""Phase 0 end to end: papermill runs the notebook against the lab, twice, and the audit trail holds."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ragperf import lab, runs
from ragperf.core import redact
from ragperf.measure import metrics

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUICK = REPO / "tests" / "params" / "quick.yaml"


@pytest.fixture(scope="module")
def first_run(env, ragperf) -> runs.Run:
    """``ragperf run phase0`` on the smoke profile, as a user would type it (with the tests' shorter steps)."""
    done = ragperf(env, "run", "phase0", "--profile", "smoke", "--params", str(QUICK))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_id,) = os.listdir(env["RAGPERF_OUTPUTS"])
    return runs.Run(run_id, Path(env["RAGPERF_OUTPUTS"]) / run_id)  # open_run: only in this process's outputs/


def _digests(root: Path) -> dict[str, str]:
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_the_run_holds_the_notebook_records_metrics_charts_and_manifest(first_run):
    out = first_run.path / "phase0"
    assert (first_run.path / "phase0.ipynb").exists()
    for name in ("metrics.json", "requests.parquet", "params.yaml", "percentiles_vs_users.png",
                 "latency_distributions.png", "throughput_vs_users.png", "failures_by_class.png"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    manifest = first_run.manifest()
    entry = manifest["phases"]["phase0"]
    assert entry["pg_settings"]["shared_buffers"]["setting"] == "16384"  # the lab's stock settings, recorded
    assert entry["legacy"]["status"] == "unchanged"
    assert entry["packages"]["locust"] and entry["host"]["cpu_cores"] and entry["git"]["revision"]
    assert entry["reproduce"].startswith("ragperf run phase0 --profile smoke")
    nb = json.loads((first_run.path / "phase0.ipynb").read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]


def test_metrics_agree_with_the_request_records(first_run):
    out = first_run.path / "phase0"
    result = metrics.read_metrics_json(out / "metrics.json")
    records = pd.read_parquet(out / "requests.parquet")
    assert set(metrics.USERS_KEYS) <= set(result)
    for users in (5, 10):
        step = records[(records["scenario"] == "fixed") & (records["step"] == f"users={users}")]
        assert len(step) > 0
        p95 = float(np.percentile(step["latency_s"], 95))
        rate = 100.0 * step["ok"].mean()
        assert metrics.value_of(result, f"response_time_{users}_users") == pytest.approx(p95, rel=1e-9)
        assert metrics.value_of(result, f"success_rate_{users}_users") == pytest.approx(rate, rel=1e-9)
    ladder = records[records["scenario"] == "ladder"]
    assert metrics.value_of(result, "max_concurrent_users") in {0, *ladder["users_target"].unique()}
    first = records[(records["scenario"] == "cache_speedup") & (records["ask"] == "first")]
    assert len(first) > 0 and metrics.value_of(result, "cache_speedup") > 0


def test_a_phase_already_in_the_run_is_refused_and_left_alone(env, ragperf, first_run):
    before = _digests(first_run.path)
    done = ragperf(env, "run", "phase0", "--run-id", first_run.id)
    assert done.returncode == 2
    assert f"run {first_run.id} already has phase0" in done.stderr
    assert _digests(first_run.path) == before


def test_the_report_has_tables_and_charts_and_no_code(env, ragperf, first_run):
    done = ragperf(env, "report", first_run.id)
    assert done.returncode == 0, done.stderr
    html = (first_run.path / "report.html").read_text()
    assert "Phase 0" in html and "<img" in html and "<table" in html
    assert "scenarios.query_latency_test" not in html  # the code cells are left out


def test_plain_papermill_against_a_deployment_with_a_password_from_the_environment(env, first_run, lab_dir, tmp_path):
    """The lab seen as a deployment: URL and DSN from a file, the password only in the environment."""
    info = lab.status(lab_dir)
    password = lab.credentials(lab_dir).superuser_password
    short = {
        "target": {"kind": "deployment", "base_url": info["app_url"], "dsn": info["admin_dsn"]},
        "load": {"query_latency_questions": 5, "query_latency_time_limit_s": 10, "fixed_duration_s": 4,
                 "ladder_users": [5], "ladder_step_s": 4, "cache_speedup_questions": 3},
    }  # fmt: skip
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(short))
    notebook_params = {"profile": "smoke", "params_files": [str(tmp_path / "short.yaml")]}
    (tmp_path / "nb.yaml").write_text(yaml.safe_dump(notebook_params))
    output = tmp_path / "plain.ipynb"
    done = subprocess.run(
        [str(BIN / "papermill"), str(REPO / "notebooks" / "phase0_baseline.ipynb"), str(output),
         "-f", str(tmp_path / "nb.yaml"), "--cwd", str(REPO / "notebooks")],
        env={**env, "RAGPERF_PGPASSWORD": password}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    run_dirs = sorted(Path(env["RAGPERF_OUTPUTS"]).iterdir())
    assert len(run_dirs) == 2  # a second run never reuses the first one's directory
    (second,) = [d for d in run_dirs if d != first_run.path]
    manifest = runs.Run(second.name, second).manifest()
    assert manifest["phases"]["phase0"]["pg_settings"]["max_connections"]["setting"] == "100"  # the password worked
    assert redact.scan_for_secrets(second, [password]) == []
    assert password.encode() not in output.read_bytes()
