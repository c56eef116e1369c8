"""Who may change what on a target, role settings, and rollback from a journal on PostgreSQL 18 and 15."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from ragperf import runs
from ragperf.core import changes
from ragperf.core.changes import Change, NotAllowed
from ragperf.core.params import Params
from ragperf.core.target import Target, TargetError
from ragperf.lab import labdb
from ragperf.runs import rollback
from ragperf.systems import hosttune, tuning
from ragperf.systems.postgres import access, pgsettings, pgtune, pgvalues, roles


def deployment(host: dict | None = None, command: str | None = "sudo systemctl restart postgresql@15-main",
               **changes_: object) -> Params:  # fmt: skip
    target = {"kind": "deployment", "base_url": "http://db.example:8000", "dsn": "host=db.example dbname=x user=y",
              "restart_command": command, "host": host}  # fmt: skip
    return Params.model_validate({"target": target, "changes": changes_})


def test_role_settings_are_planned_only_where_they_differ():
    desired = {"hnsw.ef_search": "40", "hnsw.iterative_scan": "strict_order"}
    planned = roles.plan_role_settings("sakana", {"hnsw.ef_search": "40"}, desired, "why")
    assert [(c.key, c.before, c.after) for c in planned] == [
        ("role_setting:sakana.hnsw.iterative_scan", None, "strict_order")
    ]
    assert planned[0].details == {"role": "sakana", "setting": "hnsw.iterative_scan"}
    assert roles.plan_role_settings("sakana", {"hnsw.ef_search": "64"}, {"hnsw.ef_search": 64}, "why") == []


def test_a_deployment_is_restarted_only_with_an_explicit_yes():
    target = Target("deployment", "http://db.example:8000", "host=db.example dbname=x user=y")
    restart, hint = access.restarter(target, deployment())
    assert restart is None and hint == "sudo systemctl restart postgresql@15-main"
    restart, _ = access.restarter(target, deployment(allow_restart=True))
    assert callable(restart)
    restart, hint = access.restarter(target, deployment(command=None, allow_restart=True))
    assert restart is None and "systemctl restart postgresql" in hint


def test_a_settings_change_needing_a_restart_is_refused_on_a_deployment_without_permission():
    target = Target("deployment", "http://db.example:8000", "host=db.example dbname=x user=y")
    applier = tuning.appliers(target, deployment())[pgsettings.KIND]
    change = Change("setting", "shared_buffers", "16384", "1GB", "why", restart=True)
    with pytest.raises(NotAllowed, match="shared_buffers take effect only after a PostgreSQL restart.*postgresql@15"):
        applier.apply([change])  # refused before connecting: nothing is written


def test_host_changes_need_their_own_yes_and_never_happen_on_the_lab():
    target = Target("deployment", "http://db.example:8000", "host=db.example dbname=x user=y")
    assert tuning.appliers(target, deployment())["host"].allowed is False
    assert tuning.appliers(target, deployment(allow_host_changes=True))["host"].allowed is True
    lab_target = Target("lab", "http://127.0.0.1:1", "host=127.0.0.1 dbname=x user=postgres")
    lab_params = Params.model_validate({"changes": {"allow_host_changes": True}})
    assert tuning.appliers(lab_target, lab_params)["host"].allowed is False


def test_a_deployments_host_facts_come_from_the_parameters():
    target = Target("deployment", "http://db.example:8000", "host=db.example dbname=x user=y")
    with pytest.raises(TargetError, match="target.host is needed.*memory_gb, cpus and disk"):
        hosttune.host_facts(target, deployment())
    params = deployment(host={"memory_gb": 64, "cpus": 16, "disk": "nvme"})
    snapshot = {"max_connections": {"setting": "100"}, "server_version_num": {"setting": "150004"}}
    facts = pgtune.facts_from(snapshot, hosttune.host_facts(target, params))
    assert (facts.memory_bytes, facts.cpus, facts.disk, facts.pg_major) == (64 * pgvalues.GB, 16, "nvme", 15)


def test_no_dsn_is_a_clear_error():
    with pytest.raises(TargetError, match="set target.dsn"):
        access.connector(Target("deployment", "http://db.example:8000"))


# --- against real servers: PostgreSQL 18 (embedded) and Debian's 15 --------------------------------------------


def test_rollback_of_a_phase_restores_pg_settings_role_settings_and_indexes(server, tmp_path, monkeypatch):
    """Settings that need no restart, a role setting and an index: applied, journaled, then undone by
    ``rollback_phase`` from the journal alone, and pg_settings compared name by name."""
    monkeypatch.setenv("RAGPERF_OUTPUTS", str(tmp_path / "outputs"))
    with server.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS t; DROP ROLE IF EXISTS app")
        conn.execute("CREATE TABLE t (a int); INSERT INTO t SELECT generate_series(1, 1000); CREATE ROLE app")
    dsn = labdb.dsn(server.port, labdb.SUPERUSER, dbname="postgres")
    target = Target("deployment", "http://127.0.0.1:1", dsn, SecretStr(server.password))
    params = Params.model_validate({"target": {"kind": "deployment", "base_url": "http://127.0.0.1:1", "dsn": dsn},
                                    "changes": {"mode": "apply"}})  # fmt: skip
    run = runs.new_run("smoke")
    out = run.path / "phase1"
    out.mkdir()
    appliers = tuning.appliers(target, params, progress=False)
    before = appliers[pgsettings.KIND].snapshot()
    rollback.save_settings_before(out, before)
    online = [c for c in pgtune.plan_settings(pgtune.facts_from(before, {"memory_total_bytes": 4 * pgvalues.GB,
              "cpu_usable": 2, "disk": {"kind": "ssd"}}), before) if not c.restart]  # fmt: skip
    assert {"work_mem", "jit", "random_page_cost"} <= {c.name for c in online}
    role = roles.plan_role_settings("app", {}, {"work_mem": "16MB"}, "why")
    index = Change("index", "ragperf_t_a", None, "btree (a)", "why", details={
        "regclass": "public.ragperf_t_a", "sql": "CREATE INDEX CONCURRENTLY ragperf_t_a ON t (a)",
        "undo_sql": "DROP INDEX CONCURRENTLY IF EXISTS ragperf_t_a"})  # fmt: skip
    journal = changes.Journal(out)
    changes.apply(changes.groups([*online, *role, index], appliers), journal)
    with server.connect() as conn:
        assert roles.role_settings(conn, "app") == {"work_mem": "16MB"}
        assert conn.execute("SELECT to_regclass('ragperf_t_a')").fetchone()[0] is not None
    assert pgsettings.settings_differences(before, appliers[pgsettings.KIND].snapshot()) != []

    result = rollback.rollback_phase(run, "phase1", target, params)
    assert result.differences == [] and len(result.undone) == len(online) + 2
    assert "identical to the snapshot" in result.text()
    with server.connect() as conn:
        assert roles.role_settings(conn, "app") == {}
        assert conn.execute("SELECT to_regclass('ragperf_t_a')").fetchone()[0] is None
    assert rollback.outstanding_runs("phase1") == []
    assert rollback.rollback_phase(run, "phase1", target, params).undone == []


def test_a_failure_mid_phase_on_a_real_server_leaves_nothing_applied(server, tmp_path):
    """Settings and a role setting applied, then an index build fails: the phase is undone, pg_settings as before."""
    with server.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS t; DROP ROLE IF EXISTS app")
        conn.execute("CREATE TABLE t (a int); CREATE ROLE app")
    dsn = labdb.dsn(server.port, labdb.SUPERUSER, dbname="postgres")
    target = Target("deployment", "http://127.0.0.1:1", dsn, SecretStr(server.password))
    params = Params.model_validate({"target": {"kind": "deployment", "base_url": "http://127.0.0.1:1", "dsn": dsn}})
    appliers = tuning.appliers(target, params, progress=False)
    before = appliers[pgsettings.KIND].snapshot()
    online = [Change("setting", "work_mem", before["work_mem"]["setting"], "64MB", "why",
                     details={"unit": "kB", "sourcefile_is_auto_conf": False})]  # fmt: skip
    broken = Change("index", "ragperf_t_missing", None, "btree (nope)", "why", details={
        "regclass": "public.ragperf_t_missing", "sql": "CREATE INDEX CONCURRENTLY ragperf_t_missing ON t (nope)",
        "undo_sql": "DROP INDEX CONCURRENTLY IF EXISTS ragperf_t_missing"})  # fmt: skip
    role = roles.plan_role_settings("app", {}, {"work_mem": "16MB"}, "why")
    journal = changes.Journal(tmp_path)
    with pytest.raises(changes.RolledBack, match=r"index:ragperf_t_missing failed .*column \"nope\" does not exist"):
        changes.apply(changes.groups([*online, *role, broken], appliers), journal)
    assert pgsettings.settings_differences(before, appliers[pgsettings.KIND].snapshot()) == []
    with server.connect() as conn:
        assert roles.role_settings(conn, "app") == {}
        assert conn.execute("SELECT to_regclass('ragperf_t_missing')").fetchone()[0] is None
    assert journal.outstanding() == []
