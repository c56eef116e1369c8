"""Parameters: layered YAML, and bad values refused before anything starts, saying what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ragperf import cli, params
from ragperf.params import ParamsError


def _file(tmp_path: Path, data: dict, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_profiles_and_targets_layer_and_files_win(tmp_path: Path):
    p = params.load("smoke", "lab", [_file(tmp_path, {"load": {"fixed_duration_s": 3}})])
    assert p.profile == "smoke" and p.target.kind == "lab"
    assert p.load.fixed_duration_s == 3
    assert p.load.ladder_users == (5, 10, 25, 40)  # from the smoke profile, untouched by the file


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"load": {"fixed_userz": [5]}}, "unknown key 'load.fixed_userz': allowed here are timeout_s"),
        ({"colour": "blue"}, "unknown key 'colour': allowed here are profile, target, slo, load, workload"),
        ({"load": {"fixed_users": [5, -10]}}, "load.fixed_users must be a non-empty list of positive user counts"),
        ({"load": {"ladder_users": [10, 5]}}, "load.ladder_users must be strictly increasing"),
        ({"load": {"timeout_s": -1}}, "load.timeout_s: Input should be greater than 0"),
        ({"slo": {"success_rate_pct": 120}}, "slo.success_rate_pct: Input should be less than or equal to 100"),
        ({"workload": {"kind": "poisson"}}, "workload.kind: Input should be 'zipf' or 'replay'"),
        ({"workload": {"kind": "replay"}}, "workload.log_file is required when workload.kind is 'replay'"),
        ({"cache": {"zipf_exponents": [1.2, 0.8]}}, "cache.zipf_exponents must be two positive exponents, lower first"),
        ({"cache": {"redis_policy": "noeviction"}}, "cache.redis_policy: Input should be 'allkeys-lru'"),
        ({"cache": {"ttl": 60}}, "unknown key 'cache.ttl': allowed here are ttl_s"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(tmp_path: Path, data: dict, expected: str):
    with pytest.raises(ParamsError, match="bad parameters") as err:
        params.load("smoke", "lab", [_file(tmp_path, data)])
    assert expected in str(err.value)


def test_a_log_without_a_question_column_is_refused(tmp_path: Path):
    log = tmp_path / "queries.csv"
    log.write_text("query,mode\nGiá gói thầu là gì?,fast\n")
    with pytest.raises(ValueError, match="question"):
        params.load("smoke", "lab", [_file(tmp_path, {"workload": {"kind": "replay", "log_file": str(log)}})])


def test_unknown_profile_target_and_phase_list_the_allowed_ones():
    with pytest.raises(ParamsError, match="unknown profile 'huge': allowed are demo, smoke"):
        params.load("huge", "lab")
    with pytest.raises(ParamsError, match="unknown target 'prod': allowed are example-deployment, lab"):
        params.load("smoke", "prod")
    with pytest.raises(ParamsError, match=r"unknown phase 'phase9': allowed are phase0.*\(or 'all'\)"):
        params.check_phase("phase9")


def test_a_password_in_the_dsn_is_refused(tmp_path: Path):
    data = {"target": {"kind": "deployment", "base_url": "http://h", "dsn": "host=h password=hunter22"}}
    with pytest.raises(ParamsError, match="must not contain a password: set RAGPERF_PGPASSWORD"):
        params.load("smoke", "lab", [_file(tmp_path, data)])


def test_the_database_password_comes_from_the_environment_only(monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("RAGPERF_PGPASSWORD", "s3cret-from-env")
    p = params.load("smoke", "example-deployment")
    assert p.db_password().get_secret_value() == "s3cret-from-env"
    assert "s3cret" not in repr(p) and "s3cret" not in str(p.model_dump())


def test_the_cli_refuses_bad_parameters_before_a_run_exists(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("RAGPERF_OUTPUTS", str(tmp_path / "outputs"))
    bad = _file(tmp_path, {"load": {"fixed_users": [-5]}})
    assert cli.main(["run", "phase0", "--params", str(bad)]) == 2
    assert "load.fixed_users must be a non-empty list of positive user counts" in capsys.readouterr().err
    assert cli.main(["run", "phase7"]) == 2
    assert "unknown phase 'phase7'" in capsys.readouterr().err
    assert not (tmp_path / "outputs").exists()
