"""The lab's life cycle, against the real processes."""

from __future__ import annotations

import json
import os
import stat

import psycopg
import pytest

from ragperf import lab
from ragperf.cli import main
from ragperf.core import procs
from ragperf.lab import labdb


def test_status_names_every_process_and_hides_the_password(lab_up, lab_dir):
    assert set(lab_up["services"]) == {"postgres", "llm", "app"}
    for svc in lab_up["services"].values():
        assert svc["alive"] and svc["pid"] > 0 and svc["port"] > 0
    assert lab_up["app_url"].startswith("http://127.0.0.1:")
    assert "password" not in lab_up["dsn"]
    secrets = lab_dir / "secrets.json"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    for password in json.loads(secrets.read_text()).values():
        assert password not in json.dumps(lab_up)
        assert password not in (lab_dir / "state.json").read_text()


def test_status_json_from_the_command_line(lab_up, lab_dir, capsys, monkeypatch):
    monkeypatch.setenv("RAGPERF_LAB_DIR", str(lab_dir))
    assert main(["lab", "status", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["app_url"] == lab_up["app_url"]
    assert {name: s["pid"] for name, s in info["services"].items()} == {
        name: s["pid"] for name, s in lab_up["services"].items()
    }


def test_the_server_runs_with_stock_settings(lab_up, lab_dir):
    creds = lab.credentials(lab_dir)
    with psycopg.connect(
        labdb.dsn(lab_up["services"]["postgres"]["port"], labdb.SUPERUSER, creds.superuser_password)
    ) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', 'max_connections', 'work_mem')"
        ).fetchall())  # fmt: skip
        assert settings == {"shared_buffers": "16384", "max_connections": "100", "work_mem": "4096"}
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()[0] == 1
        available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions").fetchall()}
        assert "pg_stat_statements" in available


def test_the_langchain_schema_is_as_langchain_makes_it(lab_up, lab_dir):
    creds = lab.credentials(lab_dir)
    port = lab_up["services"]["postgres"]["port"]
    with psycopg.connect(labdb.dsn(port, labdb.APP_ROLE, creds.app_password)) as conn:
        columns = dict(conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = 'langchain_pg_embedding'::regclass AND a.attnum > 0 AND NOT a.attisdropped"
        ).fetchall())  # fmt: skip
        assert columns == {"id": "character varying", "collection_id": "uuid", "embedding": "vector",
                           "document": "character varying", "cmetadata": "jsonb"}  # fmt: skip
        indexes = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'langchain_pg_embedding'").fetchall()}  # fmt: skip
        assert "ix_cmetadata_gin" in indexes
        assert not any("hnsw" in i for i in indexes), "the lab starts untuned: no vector index"
        count = conn.execute("SELECT count(*) FROM langchain_pg_embedding").fetchone()[0]
    assert count == lab_up["corpus"]["chunks"] > 4000


def test_second_up_reuses_everything(lab_up, lab_dir):
    before = {name: s["pid"] for name, s in lab.status(lab_dir)["services"].items()}
    lab.up("smoke", lab_dir=lab_dir)
    after = {name: s["pid"] for name, s in lab.status(lab_dir)["services"].items()}
    assert after == before


def test_a_killed_process_is_detected_and_up_recovers(lab_up, lab_dir, monkeypatch):
    import httpx

    # a key meant for a real provider, in the environment: the simulator must not start asking for it
    monkeypatch.setenv("RAGPERF_LLM_API_KEY", "sk-meant-for-a-real-provider")
    state = lab.LabState.load(lab_dir)
    victim = state.processes["llm"]
    os.kill(victim.pid, 9)
    procs._wait_gone(victim, 10)
    info = lab.status(lab_dir)
    assert info["services"]["llm"]["alive"] is False
    assert info["up"] is False
    lab.up("smoke", lab_dir=lab_dir)
    info = lab.status(lab_dir)
    assert info["up"] is True
    assert info["services"]["llm"]["pid"] != victim.pid
    assert info["services"]["postgres"]["pid"] == lab_up["services"]["postgres"]["pid"]
    asked = httpx.post(f"{info['app_url']}/ask", json={"question": f"recovered {os.getpid()}", "mode": "fast"},
                       timeout=60)  # fmt: skip
    assert asked.status_code == 200, asked.text[:300]


def test_unknown_profile_is_refused_naming_the_allowed_ones(lab_dir):
    with pytest.raises(lab.LabError, match="allowed are smoke, demo"):
        lab.up("huge", lab_dir=lab_dir)


def test_postgres_killed_hard_is_recovered_from_its_stale_state(lab_up, lab_dir):
    victim = lab.LabState.load(lab_dir).processes["postgres"]
    os.kill(victim.pid, 9)
    procs._wait_gone(victim, 10)
    assert lab.status(lab_dir)["services"]["postgres"]["alive"] is False
    lab.up("smoke", lab_dir=lab_dir)
    info = lab.status(lab_dir)
    assert info["up"] is True and info["services"]["postgres"]["pid"] != victim.pid
    assert info["corpus"]["chunks"] == lab_up["corpus"]["chunks"]


def test_reset_tuning_undoes_what_a_phase_left_and_restarts_on_the_same_port(lab_up, lab_dir):
    info = lab.status(lab_dir)
    port, app_pid = info["services"]["postgres"]["port"], info["services"]["app"]["pid"]
    with psycopg.connect(info["admin_dsn"], password=lab.credentials(lab_dir).superuser_password,
                         autocommit=True) as conn:  # fmt: skip
        conn.execute("ALTER SYSTEM SET shared_buffers = '256MB'")
        conn.execute("ALTER SYSTEM SET work_mem = '8MB'")
        conn.execute("ALTER TABLE langchain_pg_embedding ALTER COLUMN embedding TYPE vector(768)")
        conn.execute("CREATE INDEX ragperf_test_leftover ON langchain_pg_embedding (collection_id)")
        conn.execute(f"ALTER ROLE {labdb.APP_ROLE} SET hnsw.ef_search = 100")
    done = lab.reset_tuning(lab_dir)
    assert done[0].startswith("ALTER SYSTEM RESET ALL (shared_buffers, work_mem)")
    assert done[1:] == ["DROP INDEX ragperf_test_leftover", "embedding vector(768) -> vector",
                        f"ALTER ROLE {labdb.APP_ROLE} RESET ALL", "restarted PostgreSQL"]  # fmt: skip
    after = lab.status(lab_dir)
    assert after["up"] and after["services"]["postgres"]["port"] == port  # the app's DSN still holds
    assert after["services"]["app"]["pid"] == app_pid
    with psycopg.connect(after["admin_dsn"], password=lab.credentials(lab_dir).superuser_password) as conn:
        assert conn.execute("SHOW shared_buffers").fetchone()[0] == "128MB"
    assert lab.reset_tuning(lab_dir) == []  # idempotent


def test_reset_tuning_drops_phase3s_database_side_only_where_ragperf_made_it(lab_up, lab_dir):
    info = lab.status(lab_dir)
    with psycopg.connect(info["admin_dsn"], password=lab.credentials(lab_dir).superuser_password,
                         autocommit=True) as conn:  # fmt: skip
        conn.execute("CREATE SCHEMA ragperf_monitor")
        conn.execute("COMMENT ON SCHEMA ragperf_monitor IS 'ragperf: monitoring views'")
        conn.execute("CREATE ROLE ragperf_monitor LOGIN")
        conn.execute("COMMENT ON ROLE ragperf_monitor IS 'ragperf: monitoring role'")
        conn.execute("CREATE SCHEMA someone_elses")
    try:
        done = lab.reset_tuning(lab_dir)
        assert done == ["DROP SCHEMA ragperf_monitor", "DROP ROLE ragperf_monitor"]
        with psycopg.connect(info["admin_dsn"], password=lab.credentials(lab_dir).superuser_password) as conn:
            assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'ragperf%'").fetchone()[0] == 0
            assert conn.execute("SELECT to_regnamespace('someone_elses')").fetchone()[0] is not None
    finally:
        with psycopg.connect(info["admin_dsn"], password=lab.credentials(lab_dir).superuser_password,
                             autocommit=True) as conn:  # fmt: skip
            conn.execute("DROP SCHEMA IF EXISTS someone_elses")


def test_down_is_idempotent_and_up_after_down_restarts(lab_up, lab_dir):
    running = lab.LabState.load(lab_dir).processes
    assert sorted(lab.down(lab_dir)) == ["app", "llm", "postgres"]
    assert not any(procs.is_alive(p) for p in running.values())
    assert lab.down(lab_dir) == []
    assert lab.status(lab_dir)["up"] is False
    lab.up("smoke", lab_dir=lab_dir)  # the data survived: no reload
    assert lab.status(lab_dir)["up"] is True


def test_reset_undoes_a_phase_from_its_journal_wherever_its_run_lives(lab_up, lab_dir, tmp_path, monkeypatch):
    """A phase's changes are undone through its journal (which then shows them undone, so a later rollback has
    nothing left to do), even when the run lives in an outputs directory the reset is not told about."""
    from ragperf import runs
    from ragperf.core import changes, params
    from ragperf.runs import rollback, targets
    from ragperf.systems import tuning
    from ragperf.systems.postgres import roles

    monkeypatch.setenv("RAGPERF_LAB_DIR", str(lab_dir))
    monkeypatch.setenv(runs.OUTPUTS_ENV, str(tmp_path / "elsewhere"))
    p = params.load("smoke", "lab")
    run = runs.new_run("smoke")
    runs.write_manifest(run, {**p.model_dump(mode="json"), "target_name": "lab"}, phase="phase1")
    target = targets.resolve_target(p, lab_dir=lab_dir)
    journal = changes.Journal(run.path / "phase1")
    planned = roles.plan_role_settings(lab.APP_ROLE, {}, {"work_mem": "12MB"}, "a phase's change")
    changes.apply([(tuning.appliers(target, p)[roles.ROLE_KIND], planned)], journal)
    lab.register_journal(lab_dir, journal.path)
    monkeypatch.setenv(runs.OUTPUTS_ENV, str(tmp_path / "another"))
    done = rollback.reset_lab(lab_dir)
    assert done == [f"phase1 of run {run.id}: undid role_setting:{lab.APP_ROLE}.work_mem"]
    assert journal.outstanding() == [] and rollback.reset_lab(lab_dir) == []
    info = lab.status(lab_dir)
    with psycopg.connect(info["admin_dsn"], password=lab.credentials(lab_dir).superuser_password) as conn:
        assert roles.role_settings(conn, lab.APP_ROLE) == {}


@pytest.mark.parametrize("service", lab.FAULTABLE)
def test_an_interrupted_service_fails_the_app_then_comes_back_on_its_port_without_restarting_the_app(
    lab_up, lab_dir, service
):
    import httpx

    before = lab.LabState.load(lab_dir)
    app_pid, port = before.processes["app"].pid, before.port(service)
    url = f"{lab.status(lab_dir)['app_url']}/ask"
    with lab.interrupted(service, lab_dir) as stopped:
        assert not lab.LabState.load(lab_dir).alive(service) and stopped > 0
        during = httpx.post(url, json={"question": f"drill {service} {os.getpid()}", "mode": "fast"}, timeout=30)
        assert during.status_code >= 500
    after = lab.LabState.load(lab_dir)
    assert after.alive(service) and after.port(service) == port and after.processes["app"].pid == app_pid
    assert (
        httpx.post(url, json={"question": f"after {service} {os.getpid()}", "mode": "fast"}, timeout=30).status_code
        == 200
    )
    with pytest.raises(lab.LabError, match="allowed are llm, postgres"), lab.interrupted("app", lab_dir):
        pass
