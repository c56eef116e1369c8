"""Parameters: layered YAML, and bad values refused before anything starts, saying what is allowed."""

from __future__ import annotations

import logging
import os
import re
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from ragperf import cli
from ragperf.core import params
from ragperf.core.params import ParamsError


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


# --- files that are not YAML, or cannot be read ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where", "found", "fix"),
    [
        ("load:\n  timeout_s: 3\n\tfixed_users: [5]\n", "line 3, column 1", "found a tab", "YAML indents with spaces"),
        ("target:\n  dsn: 'host=db\n  kind: lab\n", "line 4, column 1", "quoted scalar that starts at line 2, column 8",
         "a quoted value is not closed"),
        ("load:\n  timeout_s: 3: 4\n", "line 2, column 15", "mapping values are not allowed here", "quote a value"),
        ("load: {timeout_s: 3\n", "line 2, column 1", "expected ',' or '}'", "is not closed, or lacks a comma"),
        ("profile: @smoke\n", "line 1, column 10", "found character '@'", "a value that starts with @ must be quoted"),
    ],
)  # fmt: skip
def test_a_yaml_syntax_error_names_the_file_line_column_and_the_fix(tmp_path: Path, text, where, found, fix):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as err:
        params.load("smoke", "lab", [path])
    message = str(err.value)
    assert message.startswith(f"parameter file {path}, {where} is not valid YAML: ")
    assert found in message and fix in message and "\n" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no yaml traceback behind it


def test_a_yaml_error_does_not_quote_a_password_on_the_broken_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("target:\n  dsn: 'host=db password=Qx7-broken-line-pw\n")
    with pytest.raises(ParamsError) as err:
        params.load("smoke", "lab", [path])
    assert "Qx7-broken-line-pw" not in str(err.value) and "not closed" in str(err.value)


def test_files_that_cannot_be_read_as_parameters_are_named_with_the_reason(tmp_path: Path, monkeypatch):
    cases = {
        "latin1.yaml": (b"load:\n  timeout_s: 3 # caf\xe9\n", "is not UTF-8 text (byte 0xe9 at line 2, column 21)"),
        "list.yaml": (b"- load\n- slo\n", "must hold a mapping (`key: value` lines) at the top, not a list"),
        "scalar.yaml": (b"just some text\n", "at the top, not a single value (str)"),
    }
    for name, (content, expected) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ParamsError, match=re.escape(f"parameter file {tmp_path / name} ")) as err:
            params.load("smoke", "lab", [tmp_path / name])
        assert expected in str(err.value)
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ParamsError, match=re.escape(f"parameter file {tmp_path / 'dir.yaml'} is a directory")):
        params.load("smoke", "lab", [tmp_path / "dir.yaml"])

    locked = _file(tmp_path, {"load": {"timeout_s": 3}}, "locked.yaml")
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads any file: refuse it the way the kernel refuses everyone else
        read_bytes = Path.read_bytes

        def refuse(self: Path) -> bytes:
            if self == locked:
                raise PermissionError(13, "Permission denied", str(self))
            return read_bytes(self)

        monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ParamsError, match=re.escape(f"parameter file {locked} cannot be read: permission denied")):
        params.load("smoke", "lab", [locked])


def test_the_cli_shows_a_yaml_error_as_one_line_without_a_traceback(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("RAGPERF_OUTPUTS", str(tmp_path / "outputs"))
    path = tmp_path / "tabs.yaml"
    path.write_text("slo:\n\tp95_s: 3\n")
    assert cli.main(["run", "phase0", "--params", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"ragperf: parameter file {path}, line 2, column 1 is not valid YAML: found a tab that cannot start any "
        "token; YAML indents with spaces, not tabs: replace the tab with spaces"
    ]
    assert not (tmp_path / "outputs").exists()


# --- secrets never quoted back ----------------------------------------------------------------

SECRET = "Qz4-never-SHOWN-8813"
ENV_SECRETS = {"RAGPERF_PGPASSWORD": "Env-pg-Secret-5501", "PGPASSWORD": "Env-libpq-Secret-5502",
               "RAGPERF_LLM_API_KEY": "sk-env-Secret-5503"}  # fmt: skip
FORMS = {
    "dsn": f"host=db.example port=5432 dbname=rag user=app password={SECRET}",
    "dsn, quoted": f"host=db.example user=app password='p w {SECRET}'",
    "postgresql url": f"postgresql://app:{SECRET}@db.example:5432/rag",
    "http url": f"http://app:{SECRET}@service.example:8000",
    "restart command": f"PGPASSWORD={SECRET} pg_ctl -D /srv/pg restart",
    "query string": f"postgresql://db.example/rag?user=app&password={SECRET}",
    **{f"${name}": value for name, value in ENV_SECRETS.items()},  # an environment secret, raw
}
LEAKS = (SECRET, *ENV_SECRETS.values())


def text_fields(model: type[BaseModel] = params.Params, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every field of the parameter models that takes text (str, str | None, Path), as a key path."""
    found = []
    for name, field in model.model_fields.items():
        kinds = typing.get_args(field.annotation) or (field.annotation,)
        nested = [k for k in kinds if isinstance(k, type) and issubclass(k, BaseModel)]
        if nested:
            found += text_fields(nested[0], (*prefix, name))
        elif any(k in (str, Path) for k in kinds):
            found.append((*prefix, name))
    return found


def _nest(path: tuple[str, ...], value: object) -> dict:
    for key in reversed(path):
        value = {key: value}
    return value


MODEL_BREAKERS = {  # every model-level check fails, so that each model's whole input is quoted back
    "target": {"kind": "deployment", "dsn": "host=breaker password=breaker-pw"},
    "load": {"ladder_users": [10, 5]},
    "workload": {"kind": "replay"},
    "cache": {"zipf_exponents": [1.2, 0.8]},
}


def secret_parameter_files(tmp_path: Path) -> list[tuple[str, Path]]:
    """Parameter files with a secret in one text field, in one form, quoted back one way or another."""
    files = []
    for n, path in enumerate(text_fields()):
        for form, secret in FORMS.items():
            deployment = {"target": {"kind": "deployment", "base_url": "http://service.example:8000"}}
            variants = {
                "as it is": params._merge(deployment, _nest(path, secret)),
                "in a mapping": params._merge(deployment, _nest(path, {"inner": secret})),
                "in a list": params._merge(deployment, _nest(path, [secret])),
                "beside a failing check": params._merge(MODEL_BREAKERS, _nest(path, secret)),
            }
            for m, (how, data) in enumerate(variants.items()):
                key = ".".join(path)
                files.append((f"{key} = {form}, {how}", _file(tmp_path, data, f"secret-{n}-{len(files)}-{m}.yaml")))
    return files


def test_the_walk_finds_the_text_fields():
    keys = {".".join(path) for path in text_fields()}
    assert {"target.base_url", "target.dsn", "target.restart_command", "workload.log_file", "cache.state_dir",
            "changes.app_role"} <= keys  # fmt: skip
    assert "profile" not in keys and "target.kind" not in keys  # choices, not free text


def test_no_parameter_error_quotes_a_secret(tmp_path: Path, monkeypatch, caplog):
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    messages, quoted = [], 0
    for label, path in secret_parameter_files(tmp_path):
        try:
            p = params.load("smoke", "lab", [path])
            params.preflight(params.phases(), p)
        except ParamsError as exc:
            messages.append((label, str(exc)))
            quoted += "(got " in str(exc) and label.split(" = ")[0] in str(exc)
    messages += [("log", r.getMessage()) for r in caplog.records]
    assert quoted > 100, "the errors should be about the fields that hold the secrets"
    leaked = [(label, text) for label, text in messages if any(secret in text for secret in LEAKS)]
    assert leaked == []


def test_a_secret_in_a_parameter_file_never_reaches_the_terminal(tmp_path: Path, monkeypatch, capsys, caplog):
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)
    for name, value in (("RAGPERF_OUTPUTS", tmp_path / "outputs"), ("RAGPERF_LAB_DIR", tmp_path / "lab"),
                        ("XDG_STATE_HOME", tmp_path / "state")):  # fmt: skip
        monkeypatch.setenv(name, str(value))
    caplog.set_level(logging.DEBUG)
    for label, path in secret_parameter_files(tmp_path)[::3]:  # every field and form, a variant in turn
        for debug in ([], ["--debug"]):
            code = cli.main([*debug, "run", "all", "--params", str(path), "--run-id", "no-such-run"])
            out, err = capsys.readouterr()
            assert code == 2 and err.startswith("ragperf: ") or debug, (label, err)
            assert not any(secret in out + err for secret in LEAKS), (label, out + err)
    assert not any(secret in r.getMessage() for r in caplog.records for secret in LEAKS)
    assert not (tmp_path / "outputs").exists()


def test_the_dsn_check_quotes_neither_the_password_nor_the_mapping_unredacted(tmp_path: Path):
    data = {"target": {"kind": "deployment", "base_url": "http://h", "dsn": f"host=h password='p w {SECRET}'"}}
    with pytest.raises(ParamsError, match="must not contain a password") as err:
        params.load("smoke", "lab", [_file(tmp_path, data)])
    assert SECRET not in str(err.value) and "password='***'" in str(err.value)


# --- checked before a run starts ----------------------------------------------------------------


def _deployment(tmp_path: Path, **target) -> Path:
    return _file(tmp_path, {"target": {"kind": "deployment", "base_url": "http://service.example:8000", **target}},
                 "deployment.yaml")  # fmt: skip


def test_preflight_lists_every_problem_at_once_naming_the_keys(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    data = {
        "target": {"kind": "deployment", "base_url": "ftp://service.example"},
        "changes": {"mode": "apply", "allow_restart": True},
        "workload": {"log_file": str(tmp_path / "missing.csv")},
        "cache": {"state_dir": str(blocker / "cache")},
    }
    p = params.load("smoke", "lab", [_file(tmp_path, data)])
    with pytest.raises(ParamsError) as err:
        params.preflight(["phase0", "phase1"], p)
    lines = str(err.value).splitlines()
    assert lines[0] == "cannot start phase0, phase1:"
    assert [line.split()[0] for line in lines[1:]] == [
        "target.dsn", "target.base_url", "target.restart_command", "changes.app_role", "workload.log_file",
        "cache.state_dir"]  # fmt: skip
    text = str(err.value)
    assert "target.dsn is required on a deployment for phase1" in text and "e.g. 'host=" in text
    assert "target.base_url must be an http:// or https:// URL with a host, e.g." in text
    assert "got 'ftp://service.example'" in text
    assert "target.restart_command is required when changes.mode is 'apply' and changes.allow_restart" in text
    assert "workload.log_file must be a readable query log" in text and "no such file" in text
    assert "changes.app_role is required when changes.mode is 'apply' on a deployment" in text
    assert f"cache.state_dir {blocker / 'cache'} cannot be made: {blocker} is a file" in text


def test_preflight_asks_only_what_the_phases_need(tmp_path: Path):
    no_dsn = params.load("smoke", "lab", [_deployment(tmp_path)])
    params.preflight(["phase0", "phase2"], no_dsn)  # measured through the service only
    with pytest.raises(ParamsError, match="target.dsn is required on a deployment for phase1"):
        params.preflight(["phase0", "phase1"], no_dsn)
    params.preflight(params.phases(), params.load("smoke", "lab"))  # the lab knows its own DSN
    params.preflight(params.phases(), params.load("smoke", "example-deployment"))
    restartable = {"changes": {"mode": "apply", "allow_restart": True, "app_role": "sakana"}}
    with pytest.raises(ParamsError, match="scale.app_command is required to apply phase4 on a deployment"):
        params.preflight(params.phases(), params.load("smoke", "example-deployment", [_file(tmp_path, restartable)]))
    restartable["scale"] = {"app_command": "/srv/rag/.venv/bin/uvicorn src.api.main:app --port {port}"}
    params.preflight(params.phases(), params.load("smoke", "example-deployment", [_file(tmp_path, restartable)]))
    for command in ("uvicorn src.api.main:app --port {port}", "/srv/rag/.venv/bin/uvicorn src.api.main:app"):
        with pytest.raises(ParamsError, match="scale.app_command must start with the absolute path"):
            params.load("smoke", "lab", [_file(tmp_path, {"scale": {"app_command": command}})])


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        (f"postgresql://app:{SECRET}@db/rag", "target.dsn must not contain a password"),
        (f"postgresql://app@db/rag?password={SECRET}", "target.dsn must not contain a password"),
        ("host=db dbname", "target.dsn must be a libpq connection string"),
    ],
)
def test_a_dsn_is_read_as_libpq_would_before_the_run(tmp_path: Path, dsn: str, expected: str):
    with pytest.raises(ParamsError, match=expected) as err:
        params.preflight(["phase1"], params.load("smoke", "lab", [_deployment(tmp_path, dsn=dsn)]))
    assert SECRET not in str(err.value)


@pytest.mark.parametrize("url", ["service.example:8000", "http:///ask", "http://h:99999", "http://h:0", "http://[::1"])
def test_a_service_url_needs_http_and_a_host(tmp_path: Path, url: str):
    p = params.load("smoke", "lab", [_deployment(tmp_path, base_url=url)])
    with pytest.raises(ParamsError, match=re.escape("target.base_url must be an http:// or https:// URL with a host")):
        params.preflight(["phase0"], p)
    params.preflight(["phase0"], params.load("smoke", "lab", [_deployment(tmp_path, base_url="https://[::1]:8443")]))


def test_a_log_file_that_cannot_be_replayed_is_refused_before_the_run(tmp_path: Path):
    log = tmp_path / "queries.jsonl"
    log.write_bytes(b'{"question": "caf\xe9"}\n')
    p = params.load("smoke", "lab", [_file(tmp_path, {"workload": {"log_file": str(log)}})])  # zipf: not read yet
    with pytest.raises(ParamsError, match=f"workload.log_file must be .*: {re.escape(str(log))} is not UTF-8 text"):
        params.preflight(["phase0"], p)


def test_the_cli_checks_a_deployment_before_its_run_directory_exists(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setenv("RAGPERF_OUTPUTS", str(tmp_path / "outputs"))
    every = ", ".join(params.phases())
    for phase, names, database in (("phase1", "phase1", "phase1"), ("all", every, "phase1, phase3, phase4")):
        assert cli.main(["run", phase, "--params", str(_deployment(tmp_path))]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"ragperf: cannot start {names}:\n") and "Traceback" not in err
        assert f"  target.dsn is required on a deployment for {database}, which reads and changes the database" in err
    assert not (tmp_path / "outputs").exists()


def test_a_notebook_checks_its_target_before_its_run_directory_exists(tmp_path: Path, monkeypatch):
    from ragperf.phases import phase

    monkeypatch.setenv("RAGPERF_OUTPUTS", str(tmp_path / "outputs"))
    with pytest.raises(ParamsError, match="target.dsn is required on a deployment for phase1"):
        phase.begin("phase1", params_files=[str(_deployment(tmp_path))])
    assert not (tmp_path / "outputs").exists()
