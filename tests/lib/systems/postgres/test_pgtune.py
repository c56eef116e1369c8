"""PostgreSQL settings are computed from the target with PGTune's "web" formulas, merged, and undone exactly.

Numbers are checked against the formulas worked by hand (in kB, as PGTune computes). The last tests
start fresh servers (the embedded PostgreSQL 18 and Debian's PostgreSQL 15), apply a plan with a
restart, undo it, and compare pg_settings before and after.
"""

from __future__ import annotations

import pytest

from ragperf.core.changes import Change, ChangeError, NotAllowed
from ragperf.systems.postgres.pgsettings import SettingsApplier, alter_system_set, settings_differences
from ragperf.systems.postgres.pgtune import (
    USERS_4GB,
    Facts,
    compare_with_users,
    facts_from,
    merge_preload,
    plan_settings,
    recommend,
)
from ragperf.systems.postgres.pgvalues import GB, KB, MB, format_bytes, setting_equals, to_bytes, with_unit

CONF = "/srv/pg/postgresql.conf"


def _row(setting, unit=None, source="default", context="user", sourcefile=None):
    return {"setting": setting, "unit": unit, "source": source, "pending_restart": False,
            "sourcefile": sourcefile, "context": context}  # fmt: skip


def stock(pg_major: int = 15, **overrides) -> dict[str, dict]:
    """pg_settings of a fresh initdb cluster, for the rows the plan looks at."""
    snapshot = {
        "server_version_num": _row(str(pg_major * 10000 + 4), context="internal"),
        "max_connections": _row("100", source="configuration file", context="postmaster", sourcefile=CONF),
        "shared_buffers": _row("16384", "8kB", "configuration file", "postmaster", CONF),
        "effective_cache_size": _row("524288", "8kB"),
        "maintenance_work_mem": _row("65536", "kB"),
        "work_mem": _row("4096", "kB"),
        "wal_buffers": _row("512", "8kB", context="postmaster"),
        "random_page_cost": _row("4"),
        "effective_io_concurrency": _row("16" if pg_major >= 18 else "1"),
        "checkpoint_completion_target": _row("0.9" if pg_major >= 14 else "0.5", context="sighup"),
        "default_statistics_target": _row("100"),
        "min_wal_size": _row("80", "MB", "configuration file", "sighup", CONF),
        "max_wal_size": _row("1024", "MB", "configuration file", "sighup", CONF),
        "jit": _row("on"),
        "max_worker_processes": _row("8", context="postmaster"),
        "max_parallel_workers_per_gather": _row("2"),
        "max_parallel_workers": _row("8"),
        "max_parallel_maintenance_workers": _row("2"),
        "shared_preload_libraries": _row("", context="postmaster"),
    }
    for name, setting in overrides.items():
        snapshot[name] = {**snapshot[name], "setting": setting}
    return snapshot


def by_name(changes: list[Change]) -> dict[str, Change]:
    return {c.name: c for c in changes}


def facts(memory=4 * GB, cpus=2, disk="ssd", max_connections=100, pg_major=15, **kw) -> Facts:
    return Facts(memory_bytes=memory, cpus=cpus, disk=disk, max_connections=max_connections, pg_major=pg_major, **kw)


def applied(snapshot: dict[str, dict], changes: list[Change]) -> dict[str, dict]:
    """The snapshot as the server shows it once the changes are in effect (values in the server's units)."""
    result = {name: dict(row) for name, row in snapshot.items()}
    for c in changes:
        row = result[c.name]
        if row["unit"]:
            row["setting"] = str(to_bytes(c.after) // to_bytes("1", row["unit"]))
        else:
            row["setting"] = c.after.replace(",", ", ") if c.name == "shared_preload_libraries" else c.after
        row["source"], row["sourcefile"] = "configuration file", "/srv/pg/postgresql.auto.conf"
    return result


# ---------------------------------------------------------------------------------------------- values


def test_memory_values_normalise_to_bytes_and_back():
    assert to_bytes("128MB") == 128 * MB == to_bytes("16384", "8kB") == to_bytes(16384, "8kB")
    assert to_bytes("4GB") == 4 * GB and to_bytes("1.5GB") == 3 * GB // 2 and to_bytes("80", "MB") == 80 * MB
    assert to_bytes("9709", "kB") == 9709 * KB and to_bytes("-1", "8kB") == -8 * KB
    assert format_bytes(GB) == "1GB" and format_bytes(16 * MB) == "16MB" and format_bytes(9709 * KB) == "9709kB"
    assert format_bytes(3 * GB) == "3GB" and format_bytes(1536 * MB) == "1536MB" and format_bytes(1000) == "1000B"
    assert with_unit("16384", "8kB") == "128MB" and with_unit("-1", "8kB") == "-1"
    assert with_unit("200", "ms") == "200ms" and with_unit("1.1", None) == "1.1"
    with pytest.raises(ValueError, match="no unit"):
        to_bytes("16384")
    with pytest.raises(ValueError, match="not a memory value"):
        to_bytes("lots")
    with pytest.raises(ValueError, match="not a PostgreSQL memory unit"):
        to_bytes("12", "8 bits")


def test_setting_equals_compares_in_the_servers_units():
    assert setting_equals(_row("16384", "8kB"), "128MB")
    assert not setting_equals(_row("16384", "8kB"), "1GB")
    assert setting_equals(_row("4"), "4.0") and setting_equals(_row("on"), "true")
    assert not setting_equals(_row("on"), "off")
    assert setting_equals(_row("auto_explain, pg_stat_statements"), "auto_explain,pg_stat_statements")
    assert not setting_equals(_row("pg_stat_statements, auto_explain"), "auto_explain,pg_stat_statements")


# ---------------------------------------------------------------------------------------------- facts


def test_facts_from_snapshot_and_host():
    host = {"memory_total_bytes": 8 * GB, "cgroup_memory_limit_bytes": None, "cpu_usable": 2, "disk": {"kind": "nvme"}}
    f = facts_from(stock(18, max_connections="150"), host)
    assert (f.memory_bytes, f.cpus, f.disk, f.max_connections, f.max_worker_processes, f.pg_major) == (
        8 * GB, 2, "nvme", 150, 8, 18)  # fmt: skip
    assert f.memory_note == ""


def test_a_cgroup_limit_below_ram_is_what_postgresql_may_use():
    host = {"memory_total_bytes": 16 * GB, "cgroup_memory_limit_bytes": 2 * GB, "cpu_usable": 2, "disk": {}}
    f = facts_from(stock(), host)
    assert f.memory_bytes == 2 * GB and "cgroup" in f.memory_note
    changes = by_name(plan_settings(f, stock()))
    assert changes["shared_buffers"].after == "512MB"  # (2 GB in kB)/4
    assert "cgroup" in changes["shared_buffers"].reason and "16 GB" in changes["shared_buffers"].reason
    larger = {**host, "cgroup_memory_limit_bytes": 64 * GB}
    assert facts_from(stock(), larger).memory_bytes == 16 * GB


def test_bad_facts_are_refused_with_what_is_allowed():
    with pytest.raises(ValueError, match="disk must be one of hdd, ssd, nvme, unknown"):
        facts(disk="floppy")
    with pytest.raises(ValueError, match="no max_connections"):
        facts_from({}, {"memory_total_bytes": GB, "cpu_usable": 1})
    with pytest.raises(ValueError, match="memory_total_bytes"):
        facts_from(stock(), {"cpu_usable": 1})


# ---------------------------------------------------------------------------------------------- plans


def test_4gb_2_cores_ssd_pg15():
    changes = by_name(plan_settings(facts(), stock(15)))
    ram_kb = 4 * 1024 * 1024
    shared_kb = ram_kb // 4
    assert {n: c.after for n, c in changes.items()} == {
        "shared_buffers": "1GB",
        "effective_cache_size": "3GB",
        "maintenance_work_mem": "256MB",  # RAM/16
        # (RAM − shared_buffers)/((max_connections + max_worker_processes)·3), max_worker_processes 8 (< 4 CPUs)
        "work_mem": f"{(ram_kb - shared_kb) // ((100 + 8) * 3)}kB",
        "wal_buffers": "16MB",  # 3% of 1 GB = 31457 kB, capped at 16 MB
        "random_page_cost": "1.1",
        "effective_io_concurrency": "200",
        "min_wal_size": "1GB",
        "max_wal_size": "4GB",
        "jit": "off",
        "shared_preload_libraries": "pg_stat_statements",
    }  # checkpoint_completion_target 0.9 and default_statistics_target 100 are already so; no parallel (< 4 CPUs)
    assert changes["work_mem"].after == "9709kB"
    assert {n for n, c in changes.items() if c.restart} == {"shared_buffers", "wal_buffers", "shared_preload_libraries"}
    sb = changes["shared_buffers"]
    assert (sb.kind, sb.before, sb.details["unit"]) == ("setting", "16384", "8kB")
    assert sb.details["source"] == "configuration file"
    assert sb.details["sourcefile_is_auto_conf"] is False and sb.details["context"] == "postmaster"
    assert sb.reason == "RAM/4 = 1 GB of 4 GB."
    assert changes["jit"].details["sourcefile_is_auto_conf"] is False  # source default: not from any file
    assert "capped at 16 MB" in changes["wal_buffers"].reason
    assert "(100 + 8)·3" in changes["work_mem"].reason


def test_64gb_16_cores_nvme_pg18():
    changes = by_name(plan_settings(facts(64 * GB, cpus=16, disk="nvme", pg_major=18), stock(18)))
    ram_kb = 64 * 1024 * 1024
    shared_kb = ram_kb // 4
    assert changes["shared_buffers"].after == "16GB"
    assert changes["effective_cache_size"].after == "48GB"
    assert changes["maintenance_work_mem"].after == "4GB"  # RAM/16, below the 8 GB cap
    # ≥ 4 CPUs: PGTune plans max_worker_processes = CPUs and divides work_mem by that
    assert changes["work_mem"].after == f"{(ram_kb - shared_kb) // ((100 + 16) * 3)}kB" == "144631kB"
    assert changes["effective_io_concurrency"].after == "1000" and changes["random_page_cost"].after == "1.1"
    assert changes["max_worker_processes"].after == "16" and changes["max_worker_processes"].restart
    assert changes["max_parallel_workers_per_gather"].after == "4"  # ceil(16/2) = 8, capped at 4
    assert changes["max_parallel_workers"].after == "16"
    assert changes["max_parallel_maintenance_workers"].after == "4"
    assert not changes["max_parallel_workers"].restart and not changes["jit"].restart


def test_4_cores_plan_parallel_settings_and_keep_per_gather_when_equal():
    changes = by_name(plan_settings(facts(8 * GB, cpus=4), stock(15)))
    assert changes["max_worker_processes"].after == "4" and changes["max_parallel_workers"].after == "4"
    assert "max_parallel_workers_per_gather" not in changes  # ceil(4/2) = 2 = the default
    assert "max_parallel_maintenance_workers" not in changes
    ram_kb = 8 * 1024 * 1024
    assert changes["work_mem"].after == f"{(ram_kb - ram_kb // 4) // ((100 + 4) * 3)}kB"


def test_maintenance_work_mem_is_capped():
    changes = by_name(plan_settings(facts(256 * GB, cpus=32), stock(16)))
    assert changes["maintenance_work_mem"].after == "8GB"  # RAM/16 = 16 GB
    assert "capped at PGTune's 8 GB" in changes["maintenance_work_mem"].reason


def test_hdd():
    changes = by_name(plan_settings(facts(disk="hdd"), stock(15)))
    assert "random_page_cost" not in changes  # 4 on HDD: already the default
    assert changes["effective_io_concurrency"].after == "2" and "HDD" in changes["effective_io_concurrency"].reason


def test_an_unknown_disk_is_treated_as_ssd_and_the_reason_says_so():
    changes = by_name(plan_settings(facts(disk="unknown"), stock(15)))
    assert changes["random_page_cost"].after == "1.1" and changes["effective_io_concurrency"].after == "200"
    assert "unknown, treated as SSD" in changes["random_page_cost"].reason


def test_max_connections_divides_work_mem():
    ram_kb = 4 * 1024 * 1024
    for connections, expected in ((100, "9709kB"), (200, "5041kB")):
        work_mem = by_name(plan_settings(facts(max_connections=connections), stock()))["work_mem"].after
        assert work_mem == f"{(ram_kb - ram_kb // 4) // ((connections + 8) * 3)}kB" == expected
    # 1 GB and 200 connections: 786432 kB/624 = 1260 kB, below PGTune's 4 MB floor
    small = {r.name: r for r in recommend(facts(GB, max_connections=200))}["work_mem"]
    assert small.value == "4MB" and "4 MB minimum" in small.reason
    assert "work_mem" not in by_name(plan_settings(facts(GB, max_connections=200), stock()))  # 4 MB: the default


def test_jit_only_from_pg12():
    assert "jit" not in {r.name for r in recommend(facts(pg_major=11))}
    assert "jit" in {r.name for r in recommend(facts(pg_major=12))}


@pytest.mark.parametrize(
    ("current", "merged"),
    [
        ("", "pg_stat_statements"),
        ("auto_explain", "auto_explain,pg_stat_statements"),
        ("vector", "vector,pg_stat_statements"),  # kept: we never remove anything
        ('auto_explain, "pg_prewarm"', "auto_explain,pg_prewarm,pg_stat_statements"),
    ],
)
def test_shared_preload_libraries_is_merged(current, merged):
    change = by_name(plan_settings(facts(), stock(shared_preload_libraries=current)))["shared_preload_libraries"]
    assert change.after == merged and change.before == current and change.restart


def test_shared_preload_libraries_already_has_it_and_never_gets_vector():
    for current in ("pg_stat_statements", "auto_explain, pg_stat_statements"):
        changes = plan_settings(facts(), stock(shared_preload_libraries=current))
        assert "shared_preload_libraries" not in by_name(changes)
    preload = ("vector", "pg_stat_statements")
    change = by_name(plan_settings(facts(), stock(), preload=preload))["shared_preload_libraries"]
    assert change.after == "pg_stat_statements"
    assert merge_preload("", ["vector"]) == [] and merge_preload("a", ["b", "a"]) == ["a", "b"]
    with pytest.raises(ValueError, match="library names"):
        merge_preload("", [""])


def test_no_change_when_values_already_equal():
    for f, pg_major in ((facts(), 15), (facts(64 * GB, cpus=16, disk="nvme", pg_major=18), 18)):
        snapshot = stock(pg_major)
        first = plan_settings(f, snapshot)
        assert first
        assert plan_settings(f, applied(snapshot, first)) == []


def test_memory_is_floored_to_the_servers_unit():
    # 3 GB + 1 kB of RAM: RAM/4 in kB is not a multiple of 8 kB; the plan is, so a re-plan is empty
    odd = facts(3 * GB + 12 * KB)
    changes = plan_settings(odd, stock())
    shared = to_bytes(by_name(changes)["shared_buffers"].after)
    assert shared % (8 * KB) == 0 and shared <= (3 * GB + 12 * KB) // 4
    assert plan_settings(odd, applied(stock(), changes)) == []


def test_undo_details_know_where_the_value_came_from():
    snapshot = stock(work_mem="5120")
    snapshot["work_mem"].update(source="configuration file", sourcefile="/srv/pg/postgresql.auto.conf")
    snapshot["random_page_cost"].update(source="configuration file", sourcefile=None)  # not superuser: unknown
    changes = by_name(plan_settings(facts(), snapshot))
    assert changes["work_mem"].details["sourcefile_is_auto_conf"] is True
    assert changes["random_page_cost"].details["sourcefile_is_auto_conf"] is None
    without_context = {n: {k: v for k, v in r.items() if k != "context"} for n, r in stock().items()}
    restart = {c.name for c in plan_settings(facts(), without_context) if c.restart}
    assert restart == {"shared_buffers", "wal_buffers", "shared_preload_libraries"}  # the built-in set


# ---------------------------------------------------------------------------------------------- users' plan


def test_users_table_has_every_plan_setting_and_the_users_extras():
    f = facts(64 * GB, cpus=16, disk="nvme", pg_major=18)
    changes = plan_settings(f, stock(18))
    table = compare_with_users(changes, f)
    assert list(table.columns) == ["setting", "users' value (4 GB)", "planned here", "why different"]
    names = set(table["setting"])
    assert {r.name for r in recommend(f)} | {"shared_preload_libraries"} | set(USERS_4GB) == names
    assert len(table) == len(names)
    row = table.set_index("setting")
    assert row.loc["shared_buffers", "users' value (4 GB)"] == "1GB"
    assert row.loc["shared_buffers", "planned here"] == "16GB"
    assert "RAM/4 = 16 GB of 64 GB" in row.loc["shared_buffers", "why different"]
    assert "pooler" in row.loc["max_connections", "why different"]
    assert row.loc["max_connections", "planned here"] == "100 (unchanged)"
    assert "nothing to do with vector search" in row.loc["max_locks_per_transaction", "why different"]
    why_preload = row.loc["shared_preload_libraries", "why different"]
    assert "CREATE EXTENSION" in why_preload and "pg_stat_statements" in why_preload
    assert row.loc["shared_preload_libraries", "planned here"] == "pg_stat_statements"
    assert row.loc["wal_buffers", "users' value (4 GB)"] == "—"
    assert row.loc["checkpoint_completion_target", "planned here"] == "0.9 (already set)"


def test_users_table_says_same_where_the_4gb_values_fit():
    table = compare_with_users(plan_settings(facts(), stock()), facts()).set_index("setting")
    assert table.loc["shared_buffers", "why different"].startswith("Same value")
    assert table.loc["work_mem", "why different"].startswith("The plan hard-codes 8MB")


# ---------------------------------------------------------------------------------------------- applier, offline


def test_list_settings_are_written_one_literal_per_library():
    statement = alter_system_set("shared_preload_libraries", "auto_explain,pg_stat_statements").as_string(None)
    assert statement == "ALTER SYSTEM SET \"shared_preload_libraries\" = 'auto_explain', 'pg_stat_statements'"
    assert alter_system_set("work_mem", "9709kB").as_string(None) == "ALTER SYSTEM SET \"work_mem\" = '9709kB'"


def test_a_restart_change_without_a_restart_is_refused_before_anything_is_written():
    def connect():
        raise AssertionError("nothing may be written")

    changes = plan_settings(facts(), stock())
    applier = SettingsApplier(connect, restart=None, restart_hint="sudo systemctl restart postgresql@15-main")
    with pytest.raises(NotAllowed, match=r"shared_buffers, wal_buffers, shared_preload_libraries.*postgresql@15-main"):
        applier.apply(changes)
    with pytest.raises(ChangeError, match="only 'setting' changes"):
        applier.apply([Change("index", "x", None, "y", "r")])


def test_settings_differences():
    before = stock()
    assert settings_differences(before, stock()) == []
    after = stock(work_mem="8192")
    after["jit"] = {**after["jit"], "source": "configuration file"}
    after["application_name"] = _row("other", source="client")
    before["application_name"] = _row("ragperf", source="client")
    diffs = settings_differences(before, after)
    assert diffs == ["jit: source 'default' → 'configuration file'", "work_mem: setting '4096' → '8192' (unit kB)"]
    del after["jit"]
    assert "jit: only before" in settings_differences(before, after)[0]


# ---------------------------------------------------------------------------------------------- real servers


def _fake_4gb_host(snapshot: dict) -> Facts:
    host = {"memory_total_bytes": 4 * GB, "cgroup_memory_limit_bytes": None, "cpu_usable": 4, "disk": {"kind": "ssd"}}
    return facts_from(snapshot, host)


def test_real_server_apply_with_restart_then_undo_restores_pg_settings(server):
    with server.connect() as conn:  # a value the users set with ALTER SYSTEM before us: undo must put it back
        conn.execute("ALTER SYSTEM SET work_mem = '5MB'")
        conn.execute("SELECT pg_reload_conf()")
    applier = SettingsApplier(server.connect, restart=server.restart, restart_hint="restart the test server")
    before = applier.snapshot()
    assert before["work_mem"]["sourcefile"].endswith("postgresql.auto.conf")
    f = _fake_4gb_host(before)
    assert f.pg_major == server.major
    changes = plan_settings(f, before)
    names = {c.name for c in changes}
    assert {"shared_buffers", "max_worker_processes", "shared_preload_libraries", "work_mem", "jit"} <= names
    assert by_name(changes)["work_mem"].details["sourcefile_is_auto_conf"] is True

    restarts = server.restarts
    applier.apply(changes)
    assert server.restarts == restarts + 1
    during = applier.snapshot()
    for change in changes:
        assert setting_equals(during[change.name], change.after), (change.name, during[change.name])
        assert not during[change.name]["pending_restart"]
    assert during["shared_buffers"]["setting"] == str(GB // (8 * KB))
    assert "pg_stat_statements.max" in during  # the library is loaded
    assert plan_settings(f, during) == []  # planning again after applying: nothing left to do

    applier.undo(list(reversed(changes)))
    assert server.restarts == restarts + 2
    after = applier.snapshot()
    assert settings_differences(before, after) == []
    applier.undo(changes)  # idempotent: nothing to restart, nothing differs
    assert server.restarts == restarts + 2
    assert settings_differences(before, applier.snapshot()) == []
    auto_conf = (server.pgdata / "postgresql.auto.conf").read_text()
    assert [line for line in auto_conf.splitlines() if not line.startswith("#")] == ["work_mem = '5MB'"]

    with server.connect() as conn:
        conn.execute("ALTER SYSTEM RESET work_mem")
        conn.execute("SELECT pg_reload_conf()")


def test_real_server_without_restart_permission(server):
    connect_only = SettingsApplier(server.connect, restart=None, restart_hint="pg_ctl restart -D /somewhere")
    before = connect_only.snapshot()
    changes = plan_settings(_fake_4gb_host(before), before)
    with pytest.raises(NotAllowed, match=r"shared_buffers.*pg_ctl restart -D /somewhere"):
        connect_only.apply(changes)
    assert settings_differences(before, connect_only.snapshot()) == []

    online = [c for c in changes if not c.restart]
    assert online
    restarts = server.restarts
    connect_only.apply(online)  # reload only
    during = connect_only.snapshot()
    assert all(setting_equals(during[c.name], c.after) for c in online)
    connect_only.undo(online)
    assert settings_differences(before, connect_only.snapshot()) == []
    assert server.restarts == restarts


def test_real_server_undo_that_needs_a_restart_is_refused_without_one(server):
    applier = SettingsApplier(server.connect, restart=server.restart)
    before = applier.snapshot()
    change = by_name(plan_settings(_fake_4gb_host(before), before))["shared_buffers"]
    applier.apply([change])
    with pytest.raises(NotAllowed, match=r"undo: shared_buffers take effect only after a PostgreSQL restart"):
        SettingsApplier(server.connect, restart=None).undo([change])
    applier.undo([change])  # finishes the rollback with the restart
    assert settings_differences(before, applier.snapshot()) == []
