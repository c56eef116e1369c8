"""Phases 0 to 4 end to end on the lab, in one ``ragperf run all`` (as ``make demo`` runs them).

Phase 1: applied, measured twice, compared, rolled back; planned only on a deployment. Phase 2: the caching
tier started, checked, measured layer by layer, Redis stopped mid-test, rolled back. Phase 3: the monitoring
started, every target up and every panel with data, the fault drill's alert end to end, no password anywhere,
rolled back. Phase 4: instances under supervisord behind the balancer and PgBouncer, the scaling curve, an instance
killed mid-step with no failed request, the final verdict, planned on a deployment of several hosts, rolled back.
Rollbacks run newest phase first, as they would be undone.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import unicodedata
from pathlib import Path

import httpx
import pandas as pd
import psycopg
import pypdf
import pytest
import yaml

from ragperf import lab, runs
from ragperf.core import procs, redact
from ragperf.measure import metrics
from ragperf.systems import cachetier, scaletier, supervisor
from ragperf.systems.monitoring import stack
from ragperf.systems.postgres import appsearch, indexes, pgmonitor, pgsettings, roles

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUICK = REPO / "tests" / "params" / "quick.yaml"
# A plan-mode run still measures the target as it is; these tests look at what it planned, so shortly.
PLAN_MODE_LOAD = {"query_latency_questions": 4, "query_latency_time_limit_s": 5, "fixed_duration_s": 3,
                  "ladder_users": [5], "ladder_step_s": 3, "cache_speedup_questions": 2}  # fmt: skip
# A secret the run is given through the environment (an LLM provider's key: the lab's simulator ignores it), which
# must reach no notebook, report, PDF or chart.
SECRET_ENV = {"RAGPERF_LLM_API_KEY": f"sk-e2e-{secrets.token_hex(12)}"}
MONITOR_PROCESSES = ("pgexporter", "node", "nginx_exporter", "redis_exporter", "mtail", "alertsink", "alertmanager",
                     "prometheus")  # fmt: skip


def _connect(lab_dir: Path) -> psycopg.Connection:
    info = lab.status(lab_dir)
    return psycopg.connect(info["admin_dsn"], password=lab.credentials(lab_dir).superuser_password, autocommit=True)


def _ragperf_indexes(conn: psycopg.Connection) -> list[str]:
    return [i for i in appsearch.index_usage(conn)["index"] if i.startswith("ragperf")]


def _embedding_type(conn: psycopg.Connection) -> str:
    return conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'langchain_pg_embedding'::regclass AND attname = 'embedding'"
    ).fetchone()[0]


def _plan_on_a_deployment(notebook: str, overrides: dict, env: dict, lab_dir: Path, tmp_path: Path) -> str:
    """The lab seen as a deployment (its service URL and admin DSN, plus ``overrides``): ``notebook`` run with plain
    papermill in plan mode; the executed notebook's text."""
    info = lab.status(lab_dir)
    deployment = {"load": PLAN_MODE_LOAD, **overrides,
                  "target": {"kind": "deployment", "base_url": info["app_url"], "dsn": info["admin_dsn"],
                             **overrides.get("target", {})}}  # fmt: skip
    (tmp_path / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    (tmp_path / "nb.yaml").write_text(yaml.safe_dump({"params_files": [str(QUICK), str(tmp_path / "deployment.yaml")]}))
    output = tmp_path / Path(notebook).name
    done = subprocess.run(
        [str(BIN / "papermill"), str(REPO / "notebooks" / notebook), str(output),
         "-f", str(tmp_path / "nb.yaml"), "--cwd", str(REPO / "notebooks")],
        env={**env, "RAGPERF_PGPASSWORD": lab.credentials(lab_dir).superuser_password},
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return output.read_text()


def _second_run(env: dict, tuned, phase: str) -> Path:
    """The run a deployment test made (the only one besides the end-to-end run that has ``phase``)."""
    (second,) = [d for d in Path(env["RAGPERF_OUTPUTS"]).iterdir() if d.name != tuned[0].id and (d / phase).exists()]
    return second


@pytest.fixture(scope="module")
def tuned(env, ragperf, lab_dir) -> tuple[runs.Run, dict]:
    """``ragperf run all`` (phase0 to phase4) on the smoke lab; pg_settings as the test saw them before."""
    lab.reset_tuning(lab_dir)
    with _connect(lab_dir) as conn:
        before = pgsettings.settings_snapshot(conn)
    done = ragperf({**env, **SECRET_ENV}, "run", "all", "--profile", "smoke", "--params", str(QUICK))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run_id,) = os.listdir(env["RAGPERF_OUTPUTS"])
    return runs.Run(run_id, Path(env["RAGPERF_OUTPUTS"]) / run_id), before  # open_run: only in this process's outputs/


def test_phase4_scales_out_fails_over_without_a_failed_request_and_gives_the_final_verdict(tuned, lab_dir):
    run, _ = tuned
    out = run.path / "phase4"
    result = metrics.read_metrics_json(out / "metrics.json")
    assert all(check["passed"] for check in result["scale"]["checks"]), result["scale"]["checks"]
    steps = pd.DataFrame(result["scaling"]["steps"])
    assert set(steps["instances"]) == {1, 2} and set(steps["pgbouncer"]) == {True, False}
    assert (steps["requests"] > 0).all() and steps["generator_cpu_pct"].notna().all()
    assert steps["instances_cpu"].notna().all() and steps["pg_backends_max"].notna().all()
    assert steps["node_cpu_busy_pct"].between(0, 100).all()  # Phase 3's Prometheus, still running
    pooling = result["scaling"]["pgbouncer"]
    assert {row["connection"] for row in pooling["connection_setup"]} == {"through PgBouncer", "direct"}
    assert pooling["pooled"]["p95_s"] > 0 and pooling["direct"]["p95_s"] > 0
    failover = result["failover"]
    assert failover["instances"] == 3 and failover["requests"] > 50
    assert failover["failed"] == 0 and failover["success_rate"] == 100.0, failover
    assert failover["recovered_s"] > 0 and failover["requests_retried"] >= 1
    assert failover["rolling_failed"] == 0 and len(failover["rolling_restarts"]) == 3 and failover["rolling_under_load"]
    assert all(r["new_pid"] != r["old_pid"] for r in failover["rolling_restarts"])
    capacity = result["capacity"]
    assert [s["users"] for s in capacity["steps"]] == [20, 60] and all(s["miss_pct"] > 0 for s in capacity["steps"])
    final = result["final_verdict"]
    assert set(final["sources"]) == {"phase0", "phase1", "phase2", "phase3", "phase4"}
    assert all(ref.startswith(run.id) for ref in final["sources"].values())
    assert len(final["metrics"]) == 7 and len(final["expected_impact"]) == 4
    assert {row["phase"] for row in final["misses"]} >= {"phase0", "phase4"}
    for name in ("topology.png", "scaling_curve.png", "failover.png", "scale/balancer-nginx.conf",
                 "scale/pgbouncer.ini", "scale/supervisord.conf"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    conf = (out / "scale" / "balancer-nginx.conf").read_text()
    assert "zone ragperf_app" in conf and "non_idempotent" in conf and "least_conn" in conf
    nb = json.loads((run.path / "phase4.ipynb").read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    text = json.dumps(nb)
    assert "The plan's final verdict" in text and "ragperf rollback phase4 --run" in text
    # what runs after the phase: three instances under supervisord, the add-on sending its misses to the balancer
    base = lab_dir / "scale"
    programs = supervisor.Supervisor(base / "instances").processes()
    assert len(programs) == 3 and all(p["state"] == "RUNNING" for p in programs)
    assert cachetier.running(lab_dir / "cache").proxy.upstream == scaletier.running(base).balancer.url
    # the app role's password is only in the instances' 0600 passfile; PgBouncer's file holds its verifier
    secrets = list(json.loads((lab_dir / "secrets.json").read_text()).values())
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    texts = {"ps": listing, **{str(f): f.read_text(errors="replace") for f in base.rglob("*")
                               if f.is_file() and f.parent.name != "secrets" and f.suffix != ".sock"}}  # fmt: skip
    assert not [where for where, text in texts.items() for secret in secrets if secret in text]
    for path in (base / "secrets" / scaletier.PASSFILE, base / "pgbouncer" / "userlist.txt"):
        assert oct(path.stat().st_mode & 0o777) == "0o600", path
    # the instances reach PostgreSQL through PgBouncer with the role's password; a wrong one is refused
    bouncer = scaletier.running(base).pgbouncer
    with psycopg.connect(bouncer.dsn(user=bouncer.role), password=lab.credentials(lab_dir).app_password) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == bouncer.role
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(bouncer.dsn(user=bouncer.role), password="not-the-password", connect_timeout=5)


def test_on_a_deployment_of_several_hosts_phase4_renders_every_file_and_starts_nothing(tuned, env, lab_dir, tmp_path):
    state = tmp_path / "scale"
    addresses = ["10.0.0.5:8000", "10.0.0.5:8001", "10.0.0.6:8000"]
    overrides = {
        "changes": {"app_role": "rag_app"},
        "scale": {"state_dir": str(state), "instance_addresses": addresses,
                  "app_command": "/srv/rag/.venv/bin/uvicorn src.api.main:app --host 0.0.0.0 --port {port}"},
    }  # fmt: skip
    text = _plan_on_a_deployment("phase4_scaling.ipynb", overrides, env, lab_dir, tmp_path)
    assert "Mode: plan" in text and "on 10.0.0.5" in text and "on 10.0.0.6" in text
    assert not any(part["running"] for part in scaletier.status(state).values())
    second = _second_run(env, tuned, "phase4")
    rendered = second / "phase4" / "scale"
    conf = (rendered / "balancer-nginx.conf").read_text()
    assert all(f"server {a} max_fails=" in conf for a in addresses)
    five = (rendered / "supervisord-10.0.0.5.conf").read_text()
    assert "[program:app-1]" in five and "[program:app-2]" in five and "--port 8001" in five
    assert "auth_type = scram-sha-256" in (rendered / "pgbouncer.ini").read_text()
    assert not (second / "phase4" / "journal.jsonl").exists()


def test_rollback_phase4_stops_every_instance_the_balancer_and_the_pooler_and_the_app_serves_as_before(
    tuned, env, ragperf, lab_dir
):
    run, _ = tuned
    base = lab_dir / "scale"
    sup = supervisor.Supervisor(base / "instances")
    pids = [p["pid"] for p in sup.processes()] + [s["pid"] for s in scaletier.status(base).values() if s["running"]]
    assert len(pids) == 6 and all(pids)
    shown = ragperf(env, "scale", "status")
    assert shown.returncode == 0 and "app-3" in shown.stdout and "RUNNING" in shown.stdout, shown.stdout
    done = ragperf(env, "rollback", "phase4", "--run", run.id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any(part["running"] for part in scaletier.status(base).values())
    assert ragperf(env, "scale", "status").returncode == 3
    assert not any(procs.start_ticks(pid) for pid in pids)
    assert not (base / "secrets").exists()
    info = lab.status(lab_dir)
    assert cachetier.running(lab_dir / "cache").proxy.upstream == info["app_url"]
    assert httpx.get(f"{info['app_url']}/health", timeout=10).status_code == 200
    entry = cachetier.running(lab_dir / "cache").nginx.url
    answer = httpx.post(f"{entry}/ask", json={"question": "Hồ sơ dự thầu gồm những gì?", "mode": "fast"}, timeout=60)
    assert answer.status_code == 200


def test_phase3_monitors_every_layer_and_proves_its_slo_alert_end_to_end(tuned, lab_dir):
    run, _ = tuned
    out = run.path / "phase3"
    result = metrics.read_metrics_json(out / "metrics.json")
    monitoring = result["monitoring"]
    assert monitoring["targets_up"] and all(t["health"] == "up" for t in monitoring["targets_up"])
    jobs = {t["job"] for t in monitoring["targets_up"]}
    assert jobs >= {"postgres", "node", "nginx", "redis", "mtail", "cache", "healthmon", "alertmanager"}
    empty = [p["panel"] for p in monitoring["panels"] if not p["has data"]]
    assert monitoring["panels"] and not empty, f"panels without data: {empty}"
    assert monitoring["rule_tests_passed"]
    drill = monitoring["drill"]
    assert drill["slo_alert"] in ("SLOLatencyBudgetBurn", "SLOErrorBudgetBurn"), drill
    assert drill["fault_to_firing_s"] is not None and drill["recovery_to_resolved_s"] is not None
    assert drill["notified_firing"] and drill["notified_resolved"]
    sent = [json.loads(line) for line in (out / "alerts" / "notifications.jsonl").read_text().splitlines()]
    assert {n["status"] for n in sent} >= {"firing", "resolved"}
    assert set(monitoring["cost"]) == {"hits", "misses"} and monitoring["cost"]["misses"]["p95_ci_s"]
    assert monitoring["cost_usage"]
    probes = pd.read_parquet(out / "health.parquet")
    assert set(probes["endpoint"]) == {"health", "ask"} and probes["question_id"].nunique() > 1
    for name in ("prometheus.yml", "rules.yml", "alertmanager.yml", "postgres_exporter_queries.yaml", "nginx.mtail",
                 "grafana/dashboards/ragperf-service.json"):  # fmt: skip
        assert (out / "monitoring" / name).stat().st_size > 0, name
    for name in ("dashboard_service.png", "dashboard_postgres.png", "drill.png", "compare.png", "statements.json"):
        assert (out / name).stat().st_size > 0, name
    assert (run.path / "phase1" / "1a" / "statements.json").exists()
    nb = json.loads((run.path / "phase3.ipynb").read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    status = lab.status(lab_dir)["monitoring"]
    assert status["prometheus"] == monitoring["prometheus"] and "healthmon" not in status["running"]


def test_no_password_in_the_process_list_the_rendered_files_the_logs_or_the_run(tuned, lab_dir):
    run, _ = tuned
    base = lab_dir / "monitor"
    secrets = [pgmonitor.read_password(base / "pgexporter" / "password"),
               *json.loads((lab_dir / "secrets.json").read_text()).values()]  # fmt: skip
    assert all(len(s) >= 12 for s in secrets)
    listing = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    places = {"ps": listing}
    for root in (run.path, base):
        for path in root.rglob("*"):
            if (
                path.is_file()
                and path.name != "password"
                and path.suffix not in (".png", ".parquet")
                and ("data" not in path.relative_to(root).parts)
            ):
                places[str(path)] = path.read_text(errors="replace")
    leaks = [where for where, text in places.items() for secret in secrets if secret in text]
    assert not leaks, leaks
    assert oct((base / "pgexporter" / "password").stat().st_mode & 0o777) == "0o600"


def test_on_a_deployment_phase3_renders_every_file_says_what_would_run_and_starts_nothing(
    tuned, env, lab_dir, tmp_path
):
    state = tmp_path / "monitor"
    overrides = {"monitor": {"state_dir": str(state), "role": "ragperf_monitor_plan"}}
    text = _plan_on_a_deployment("phase3_monitoring.ipynb", overrides, env, lab_dir, tmp_path)
    assert (
        "Mode: plan" in text
        and "as the role `ragperf_monitor_plan` (pg_monitor)" in text
        and "promtool test rules: passed" in text
    )
    assert not any(part["running"] for part in stack.status(state).values())
    second = _second_run(env, tuned, "phase3")
    rendered = second / "phase3" / "monitoring"
    assert {"prometheus.yml", "rules.yml", "alertmanager.yml", "postgres_exporter_queries.yaml"} <= {
        p.name for p in rendered.iterdir()
    }
    assert not (second / "phase3" / "journal.jsonl").exists()


def test_rollback_phase3_stops_every_monitoring_process_and_drops_the_role_and_views(tuned, env, ragperf, lab_dir):
    run, _ = tuned
    base = lab_dir / "monitor"
    pids = [p["pid"] for name, p in stack.status(base).items() if name in MONITOR_PROCESSES]
    assert all(pids)
    done = ragperf(env, "rollback", "phase3", "--run", run.id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any(part["running"] for part in stack.status(base).values())
    assert not any(procs.start_ticks(pid) for pid in pids)
    assert ragperf(env, "monitor", "status").returncode == 3
    with _connect(lab_dir) as conn:
        assert (
            conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (pgmonitor.MONITOR_ROLE,)).fetchone()[0]
            == 0
        )
        assert (
            conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (pgmonitor.SCHEMA,)).fetchone()[0] == 0
        )
    nginx_cfg = cachetier.running(lab_dir / "cache").nginx
    assert nginx_cfg is not None and nginx_cfg.status_port == 0  # back to Phase 2's configuration


def test_phase1_is_measured_after_the_settings_and_after_the_indexes(tuned):
    run, _ = tuned
    out = run.path / "phase1"
    for name in ("metrics.json", "requests.parquet", "1a/metrics.json", "1a/requests.parquet", "recall.png",
                 "recall_filtered.png", "compare.png", "percentiles_vs_users.png", "settings_before.json"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    final, first = metrics.read_metrics_json(out / "metrics.json"), metrics.read_metrics_json(out / "1a/metrics.json")
    assert final["phase"] == "phase1" and first["phase"] == "phase1/1a"
    assert 0.0 < metrics.value_of(final, "recall") <= 1.0
    nb = json.loads((run.path / "phase1.ipynb").read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    text = json.dumps(nb)
    assert "Mode: apply" in text and "expected (PLAN.md)" in text and "ragperf rollback phase1 --run" in text


def test_the_lab_is_tuned_and_the_journal_says_how(tuned, lab_dir):
    run, before = tuned
    events = {}
    for line in (run.path / "phase1" / "journal.jsonl").read_text().splitlines():
        entry = json.loads(line)
        events[entry["key"]] = entry["event"]
    changes_by_kind = {key.split(":")[0] for key, event in events.items() if event == "applied"}
    assert {"setting", "column", "index"} <= changes_by_kind
    with _connect(lab_dir) as conn:
        now = pgsettings.settings_snapshot(conn)
        assert now["shared_buffers"]["setting"] != before["shared_buffers"]["setting"]
        assert "pg_stat_statements" in now["shared_preload_libraries"]["setting"]
        assert "vector" not in now["shared_preload_libraries"]["setting"].split(",")
        assert _embedding_type(conn) == "vector(768)"
        vector = conn.execute("SELECT embedding::text FROM langchain_pg_embedding LIMIT 1").fetchone()[0]
        plan = appsearch.explain_legacy_query(
            conn, [float(x) for x in vector.strip("[]").split(",")], collection_name=lab.COLLECTION
        )
        assert plan["uses_index"] == indexes.HNSW_INDEX, plan["plan_text"]


def test_rollback_restores_pg_settings_name_by_name_and_drops_the_indexes(tuned, env, ragperf, lab_dir):
    run, before = tuned
    done = ragperf(env, "rollback", "phase1", "--run", run.id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pg_settings are identical to the snapshot taken before the phase" in done.stdout
    with _connect(lab_dir) as conn:
        assert pgsettings.settings_differences(before, pgsettings.settings_snapshot(conn)) == []
        assert _ragperf_indexes(conn) == []
        assert _embedding_type(conn) == "vector"
        assert roles.role_settings(conn, "sakana") == {}
    again = ragperf(env, "rollback", "phase1", "--run", run.id)
    assert again.returncode == 0 and "undid 0 change(s)" in again.stdout
    nothing_left = ragperf(env, "rollback", "phase1")
    assert nothing_left.returncode == 2 and "no run in outputs/ has phase1 changes left to undo" in nothing_left.stderr


def test_on_a_deployment_phase1_only_plans(tuned, env, lab_dir, tmp_path):
    """The lab seen as a deployment: the default mode is plan, and nothing on the server changes."""
    with _connect(lab_dir) as conn:
        before = pgsettings.settings_snapshot(conn)
    overrides = {"target": {"host": {"memory_gb": 4, "cpus": 2, "disk": "ssd"}}}
    text = _plan_on_a_deployment("phase1_database.ipynb", overrides, env, lab_dir, tmp_path)
    assert "Mode: plan" in text and "Planned for **4 GB**, 2 CPUs, SSD" in text
    with _connect(lab_dir) as conn:
        assert pgsettings.settings_differences(before, pgsettings.settings_snapshot(conn)) == []
        assert _ragperf_indexes(conn) == [] and _embedding_type(conn) == "vector"
        assert roles.role_settings(conn, "sakana") == {}
    second = _second_run(env, tuned, "phase1")
    assert not (second / "phase1" / "journal.jsonl").exists()
    assert (second / "phase1" / "metrics.json").exists()


def test_phase2_measures_through_the_tier_layer_by_layer(tuned):
    run, _ = tuned
    out = run.path / "phase2"
    result = metrics.read_metrics_json(out / "metrics.json")
    for key in ("hit_rate", "cached_p95", "backend_load_reduction", "hit_rate_zipf_low", "hit_rate_zipf_high",
                "hit_rate_replay"):  # fmt: skip
        assert metrics.value_of(result, key) is not None, key
    assert metrics.value_of(result, "hit_rate") > 0 and metrics.value_of(result, "cached_p95") < 0.5
    cache = result["cache"]
    assert cache["entrypoint"] != cache["app_url"] and all(check["passed"] for check in cache["checks"])
    assert cache["redis_outage"]["bypassed (add-on counter)"] > 0 and cache["redis_outage"]["success_rate"] == 100.0
    assert "phase1" in next(w["source"] for w in cache["hit_rate_workloads"] if w["workload"] == "replay")
    records = pd.read_parquet(out / "requests.parquet")
    assert set(metrics.served_by(records)) >= {"nginx", "app"}
    nb = json.loads((run.path / "phase2.ipynb").read_text())
    assert not [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    for name in ("cache_layers.png", "hit_rate_workloads.png", "compare.png", "journal.jsonl"):
        assert (out / name).stat().st_size > 0, name


def test_rollback_phase2_stops_the_tier_and_the_app_serves_as_before(tuned, env, ragperf, lab_dir):
    run, _ = tuned
    tier = metrics.read_metrics_json(run.path / "phase2" / "metrics.json")["cache"]
    base = lab_dir / "cache"
    assert cachetier.running(base).any() and lab.status(lab_dir)["cache_tier"]["nginx"] == tier["entrypoint"]
    done = ragperf(env, "rollback", "phase2", "--run", run.id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "undid 3 change(s)" in done.stdout and "pg_settings" not in done.stdout
    assert not cachetier.running(base).any() and not any(lab.status(lab_dir)["cache_tier"].values())
    assert procs.port_is_free(tier["tier"]["nginx"]["listen_port"])
    response = httpx.post(
        f"{lab.status(lab_dir)['app_url']}/ask", json={"question": "Hồ sơ mời thầu là gì?"}, timeout=60
    )
    assert response.status_code == 200 and "x-cache-status" not in response.headers


PROGRESS_LINE = re.compile(r"\d+%\|")  # a tqdm bar: "ladder 25 users:  40%|####      | ..."


def _progress_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if PROGRESS_LINE.search(line))


def _notebook_text(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    parts = []
    for output in (o for c in cells for o in c.get("outputs", [])):
        parts.append("".join(output.get("text", "")))
        parts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def test_saved_notebooks_and_the_report_keep_one_progress_line_per_bar(tuned, report):
    """What people read holds results: each load step's bar (and each index build's) is one line, in its final
    state, not one line per redraw."""
    run, _ = tuned
    bars_total = 0
    for phase in ("phase0", "phase1", "phase2", "phase3"):
        steps = sum(pd.read_parquet(p, columns=["scenario", "step"]).drop_duplicates().shape[0]
                    for p in (run.path / phase).rglob("requests.parquet"))  # fmt: skip
        journal = run.path / phase / "journal.jsonl"
        entries = [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []
        builds = sum(1 for e in entries if e["event"] == "applying" and e["key"].startswith("index:"))
        bars = steps + builds + 1  # + the corpus load, when the lab is brought up inside the notebook
        lines = _progress_lines(_notebook_text(run.path / f"{phase}.ipynb"))
        assert 0 < lines <= bars, f"{phase}: {lines} progress lines for {steps} load steps and {builds} builds"
        bars_total += bars
    assert _progress_lines(report.read_text()) <= bars_total


@pytest.fixture(scope="module")
def report(tuned, env, ragperf) -> Path:
    """``ragperf report`` of the end-to-end run: the page and its PDF."""
    run, _ = tuned
    done = ragperf({**env, **SECRET_ENV}, "report", run.id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"pdf:    {run.path / 'report.pdf'}" in done.stdout, done.stdout
    return run.path / "report.html"


def _pdf_text(path: Path) -> str:
    return unicodedata.normalize("NFKC", "".join(page.extract_text() for page in pypdf.PdfReader(path).pages))


def test_the_report_reads_in_a_browser_offline_with_the_verdict_first_and_a_pdf_of_it(tuned, report, browser):
    """A stakeholder's view: headless Chromium with the network off opens the page; nothing leaves it, nothing errs,
    the verdict and the seven metrics beside their targets come first; the first page's screenshot stays in the run."""
    run, _ = tuned
    context = browser.new_context(offline=True, viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    requests, problems = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: message.type in ("error", "warning") and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(report.as_uri(), wait_until="load")
    summary = unicodedata.normalize("NFKC", page.inner_text("#summary"))
    page.screenshot(path=run.path / "report-first-page.png")
    broken = page.evaluate("[...document.images].filter(i => !i.complete || !i.naturalWidth || !i.alt).length")
    context.close()

    assert [url for url in requests if not url.startswith("data:")] == [report.as_uri()]
    assert not problems, problems
    assert broken == 0  # every image is inline, loads offline, and says what it shows
    assert "A chart of this phase" not in report.read_text()  # the fallback: every chart described itself
    assert re.search(r"The plan's final target \(.*\) is (not )?met after phase4", summary), summary[:500]
    for label in ("Response time (p95) at 10 users", "Success rate at 10 users", "Max concurrent users within the SLO"):
        assert re.search(rf"{re.escape(label)}: .+ → .+ \(phase0 → phase4\); target .+: (met|not met)", summary)
    for heading in ("Each phase against its own success criteria", "The plan's expected impacts", "Not met yet",
                    "Rolling back"):  # fmt: skip
        assert heading in summary
    assert (run.path / "report-first-page.png").stat().st_size > 10_000
    pdf = _pdf_text(run.path / "report.pdf")
    assert "Response time (p95) at 10 users:" in pdf and "Rolling back" in pdf and "Provenance" in pdf


@pytest.fixture(scope="module")
def history(tuned, env, ragperf) -> tuple[str, Path]:
    """``ragperf history --phase phase4`` over the outputs: what it printed and its chart."""
    chart = Path(env["RAGPERF_OUTPUTS"]) / "history.png"
    done = ragperf({**env, **SECRET_ENV}, "history", "--phase", "phase4", "--chart", str(chart))
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, chart


def test_history_of_the_scheduled_runs_is_a_table_and_a_chart(tuned, history):
    run, _ = tuned
    text, chart = history
    assert run.id in text and "phase4" in text and "response_time_10_users" in text
    assert f"chart: {chart}" in text and chart.stat().st_size > 10_000


def test_the_regression_gate_passes_an_improvement_and_fails_a_regression(tuned, env, ragperf):
    """phase4 against phase0 of the same run got better; the other way round is a regression, named."""
    run, _ = tuned
    better = ragperf(env, "check", "--baseline", f"{run.id}:phase0", "--current", f"{run.id}:phase4",
                     "--metric", "response_time_10_users")  # fmt: skip
    assert better.returncode == 0, better.stdout + better.stderr
    assert "no regression beyond noise" in better.stdout
    worse = ragperf(env, "check", "--baseline", f"{run.id}:phase4", "--current", f"{run.id}:phase0",
                    "--metric", "response_time_10_users")  # fmt: skip
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "Response time (p95) at 10 users" in worse.stdout
    missing = ragperf(env, "check", "--baseline", "nosuchrun:phase0", "--current", f"{run.id}:phase4")
    assert missing.returncode == 2 and missing.stderr.startswith("ragperf: ") and "nosuchrun" in missing.stderr


def test_the_secret_given_through_the_environment_is_in_no_report_pdf_chart_or_notebook(tuned, report, history, env):
    run, _ = tuned
    secret = SECRET_ENV["RAGPERF_LLM_API_KEY"]
    outputs = [report, run.path / "report.pdf", run.path / "report-contributions.png", *run.path.glob("*.ipynb"),
               run.path / "manifest.json", history[1]]  # fmt: skip
    for path in outputs:
        assert path.exists(), path
        assert not redact.find_secrets(path.read_bytes(), [secret]), path
    pdf = _pdf_text(run.path / "report.pdf")
    assert secret not in pdf and secret[-8:] not in pdf
