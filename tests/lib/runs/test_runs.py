"""Runs are never overwritten, phases run once per run, and the manifest records everything but secrets."""

from __future__ import annotations

import json
import re
import socket
from datetime import UTC, datetime

import pytest
import yaml

from ragperf import runs
from ragperf.core import redact


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    """Every test gets its own outputs directory."""
    path = tmp_path / "outputs"
    monkeypatch.setenv("RAGPERF_OUTPUTS", str(path))
    return path


def _frozen_clock(monkeypatch, when: datetime) -> None:
    monkeypatch.setattr(runs, "_utc_now", lambda: when)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_run_id_is_utc_time_revision_and_profile(outputs, monkeypatch):
    _frozen_clock(monkeypatch, datetime(2026, 11, 28, 13, 45, 0, tzinfo=UTC))
    run = runs.new_run("smoke")
    assert re.fullmatch(r"20261128T134500Z-([0-9a-f]{7,}(-dirty)?|nogit)-smoke", run.id), run.id
    assert run.path == outputs / run.id and run.path.is_dir()
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["run_id"] == run.id and manifest["profile"] == "smoke" and manifest["phases"] == {}


def test_outside_a_git_checkout_the_revision_is_nogit(tmp_path, monkeypatch):
    assert runs.git_revision(tmp_path) == {"revision": None, "short": "nogit", "dirty": None}
    monkeypatch.setattr(runs, "REPO_ROOT", tmp_path)
    _frozen_clock(monkeypatch, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert runs.new_run("demo").id == "20260102T030405Z-nogit-demo"


def test_two_runs_in_the_same_second_get_two_directories(outputs, monkeypatch):
    _frozen_clock(monkeypatch, datetime(2026, 11, 28, 13, 45, 0, tzinfo=UTC))
    first, second, third = runs.new_run("smoke"), runs.new_run("smoke"), runs.new_run("smoke")
    assert second.id == f"{first.id}-2" and third.id == f"{first.id}-3"
    assert all(r.path.is_dir() for r in (first, second, third))
    _frozen_clock(monkeypatch, datetime(2026, 11, 28, 13, 46, 0, tzinfo=UTC))
    later = runs.new_run("smoke")
    assert runs.list_runs() == [later.id, third.id, second.id, first.id]


def test_an_explicit_run_id_that_exists_is_refused_and_left_alone(outputs):
    run = runs.new_run("smoke", run_id="baseline")
    (run.path / "phase0.ipynb").write_text("{}")
    with pytest.raises(runs.RunExistsError, match="baseline"):
        runs.new_run("smoke", run_id="baseline")
    assert (run.path / "phase0.ipynb").read_text() == "{}"
    with pytest.raises(runs.RunError):
        runs.new_run("smoke", run_id="../escape")


def test_open_run_finds_an_existing_run_by_id_or_path(outputs):
    run = runs.new_run("smoke")
    assert runs.open_run(run.id) == run
    assert runs.open_run(run.path) == run
    with pytest.raises(runs.RunNotFoundError, match="nope"):
        runs.open_run("nope")


def _listing(path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else b"" for p in sorted(path.rglob("*"))}


def test_open_run_refuses_a_directory_that_is_not_a_run_and_lists_the_runs(outputs, monkeypatch):
    _frozen_clock(monkeypatch, datetime(2026, 11, 28, 13, 45, 0, tzinfo=UTC))
    older = runs.new_run("smoke")
    _frozen_clock(monkeypatch, datetime(2026, 11, 28, 13, 46, 0, tzinfo=UTC))
    newer = runs.new_run("demo")
    not_runs = {
        "notes": (None, "it has no manifest.json"),
        "a-list": ("[]", "its manifest.json is not a JSON object"),
        "no-id": ('{"profile": "smoke"}', "its manifest.json has no run_id"),
        "broken": ('{"run_id": ', "its manifest.json cannot be read as JSON"),
    }
    for name, (manifest, _) in not_runs.items():
        (outputs / name / "phase0").mkdir(parents=True)
        if manifest is not None:
            (outputs / name / "manifest.json").write_text(manifest)
    before = _listing(outputs)
    for name, (_, problem) in not_runs.items():
        for given in (name, outputs / name, str(outputs / name)):
            with pytest.raises(runs.NotARunError) as err:
                runs.open_run(given)
            message = str(err.value)
            assert message.startswith(f"{outputs / name} is not a ragperf run ({problem}")
            assert f"a run is a directory that `ragperf run` made in {outputs}, with a manifest.json" in message
            assert message.endswith(f"; the newest runs are {newer.id}, {older.id}")
    assert runs.list_runs() == [newer.id, older.id], "directories that are not runs are not listed as runs"
    assert _listing(outputs) == before


def test_open_run_refuses_a_run_outside_the_outputs_directory(outputs, tmp_path, monkeypatch):
    run = runs.new_run("smoke")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copy = elsewhere / run.id
    copy.mkdir()
    (copy / "manifest.json").write_bytes(run.manifest_path.read_bytes())
    for given in (copy, str(copy), outputs / ".." / "elsewhere" / run.id):
        with pytest.raises(runs.NotARunError) as err:
            runs.open_run(given)
        assert str(err.value) == (f"{copy} is not in the outputs directory {outputs}, and runs are written only "
                                  f"there: to use runs in {elsewhere}, set RAGPERF_OUTPUTS={elsewhere}")  # fmt: skip
    with pytest.raises(runs.NotARunError, match="is not in the outputs directory"):
        runs.open_run("..")
    monkeypatch.setenv("RAGPERF_OUTPUTS", str(elsewhere))
    assert runs.open_run(copy) == runs.Run(run.id, copy)  # told to: the parent is the outputs directory now


def test_no_run_at_all_says_so(outputs):
    with pytest.raises(runs.RunNotFoundError, match=f"; there is no run in {re.escape(str(outputs))} yet"):
        runs.open_run("nope")


def test_the_cli_adds_no_phase_to_a_directory_that_is_not_a_run(outputs, tmp_path, monkeypatch, capsys):
    from ragperf import cli

    monkeypatch.setenv("RAGPERF_LAB_DIR", str(tmp_path / "lab"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    inside, outside = outputs / "scratch", tmp_path / "scratch"
    for directory in (inside, outside):
        directory.mkdir(parents=True)
        (directory / "keep.txt").write_text("mine")
    for directory, expected in ((inside, "is not a ragperf run (it has no manifest.json)"),
                                (outside, "is not in the outputs directory")):  # fmt: skip
        assert cli.main(["run", "phase0", "--run-id", str(directory)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ragperf: {directory} {expected}") and "Traceback" not in err
        assert _listing(directory) == {"keep.txt": b"mine"}


def test_a_phase_that_already_ran_is_refused(outputs):
    run = runs.new_run("smoke")
    assert run.phase_dir("phase0") == run.path / "phase0"
    assert run.phase_dir("phase0").is_dir()  # not run yet: asking again is fine
    run.notebook_path("phase0").write_text("{}")
    with pytest.raises(runs.PhaseExistsError, match="phase0.ipynb"):
        run.phase_dir("phase0")
    (run.phase_dir("phase1") / "metrics.json").write_text("{}")
    with pytest.raises(runs.PhaseExistsError, match="metrics.json"):
        run.phase_dir("phase1")
    (run.path / "phase10").mkdir()
    assert run.phases() == ["phase0", "phase1", "phase10"]


def test_manifest_records_every_section_redacts_secrets_and_merges_phases(outputs, monkeypatch):
    monkeypatch.setenv("RAGPERF_PGPASSWORD", "env-pw-9f3k2")
    run = runs.new_run("smoke")
    params = {
        "profile": "smoke",
        "target": "lab",
        "db": {"user": "app", "password": "param-pw-4j7x"},
        "dsn": "postgresql://app:dsn-pw-8q2w@127.0.0.1:5432/rag",
        "load": {"fixed_users": (5, 10)},
    }
    conninfo = f"host=127.0.0.1 port={_closed_port()} user=app password=conninfo-pw-3z5v connect_timeout=3"
    versions = {"postgresql": "18.4", "pgvector": "0.8.5"}

    runs.write_manifest(run, params, phase="phase0", extra=versions, conninfo=conninfo)
    runs.write_manifest(run, {"profile": "smoke", "target": "lab"}, phase="phase1")

    manifest = json.loads((run.path / "manifest.json").read_text())
    assert list(manifest["phases"]) == ["phase0", "phase1"], "the second phase dropped the first"
    phase0 = manifest["phases"]["phase0"]
    sections = [
        "recorded",
        "command",
        "git",
        "params",
        "python",
        "packages",
        "servers",
        "pg_settings",
        "host",
        "legacy",
        "reproduce",
    ]
    assert [s for s in sections if s not in phase0] == []
    assert set(phase0["git"]) == {"revision", "short", "dirty"}
    assert phase0["params"]["db"] == {"user": "app", "password": "***"}
    assert phase0["params"]["dsn"] == "postgresql://app:***@127.0.0.1:5432/rag"
    assert phase0["servers"] == versions
    assert "pydantic" in phase0["packages"] and list(phase0["packages"]) == sorted(phase0["packages"], key=str.lower)
    assert phase0["python"]["version"].count(".") == 2
    assert phase0["host"]["cpu_cores"] >= 1 and phase0["host"]["memory_total_bytes"] > 0
    assert phase0["host"]["disk"]["kind"] in {"ssd", "hdd", "nvme", "unknown"} and phase0["host"]["disk"]["free_bytes"]
    assert len(phase0["legacy"]["digest"]) == 64 and phase0["legacy"]["status"] in {"unchanged", "CHANGED"}
    assert "error" in phase0["pg_settings"]  # nothing listens there; the failure is recorded, not fatal
    assert manifest["phases"]["phase1"]["pg_settings"] is None

    leaked = redact.scan_for_secrets(run.path, ["env-pw-9f3k2", "param-pw-4j7x", "dsn-pw-8q2w", "conninfo-pw-3z5v"])
    assert leaked == []
    recorded = yaml.safe_load((run.path / "phase0" / "params.yaml").read_text())
    assert recorded["db"]["password"] == "***" and recorded["load"]["fixed_users"] == [5, 10]


def test_manifest_refuses_a_known_secret_under_an_innocent_name(outputs, monkeypatch):
    monkeypatch.setenv("RAGPERF_PGPASSWORD", "env-pw-1b6m0")
    run = runs.new_run("smoke")
    with pytest.raises(redact.SecretLeakError, match="manifest.json") as caught:
        runs.write_manifest(run, {"note": "copied env-pw-1b6m0 here"}, phase="phase0")
    assert "env-pw-1b6m0" not in str(caught.value)
    assert json.loads((run.path / "manifest.json").read_text())["phases"] == {}
    assert not (run.path / "phase0" / "params.yaml").exists()


def test_reproduce_command_points_at_the_recorded_redacted_params(outputs):
    run = runs.new_run("demo")
    runs.write_manifest(run, {"profile": "demo", "target": "lab", "token": "tok-2k9s8d"}, phase="phase0")
    command = runs.reproduce_command(run.id, "phase0")
    params_file = run.path / "phase0" / "params.yaml"
    assert command == f"ragperf run phase0 --profile demo --target lab --params {params_file}"
    assert "tok-2k9s8d" not in params_file.read_text()
    with pytest.raises(runs.RunError, match="phase1"):
        runs.reproduce_command(run.id, "phase1")


def test_pg_settings_snapshot_failure_never_shows_the_password():
    conninfo = f"postgresql://app:url-pw-5n1c@127.0.0.1:{_closed_port()}/rag?connect_timeout=3"
    with pytest.raises(runs.RunError) as caught:
        runs.pg_settings_snapshot(conninfo, password="kw-pw-7h4y")
    assert "url-pw-5n1c" not in str(caught.value) and "kw-pw-7h4y" not in str(caught.value)
