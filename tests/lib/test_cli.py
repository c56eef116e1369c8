"""The command line: every error is one line and an exit code, never a traceback, and never a secret."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ragperf import cli, lab
from ragperf.core import redact

SECRET = "Wv3-cli-SECRET-6620"
ENV_SECRETS = {"RAGPERF_PGPASSWORD": "Env-pg-cli-7701", "PGPASSWORD": "Env-libpq-cli-7702",
               "RAGPERF_LLM_API_KEY": "sk-env-cli-7703"}  # fmt: skip
LAB_SECRET = "Lab-superuser-7704"
LEAKS = (SECRET, *ENV_SECRETS.values(), LAB_SECRET)
HINT = "(not one of ragperf's own errors: `ragperf --debug ...` shows its traceback)"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch) -> Path:
    """Outputs, a lab directory with a secrets file, and lock files of the test's own; secrets in the environment."""
    for name, value in ENV_SECRETS.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "secrets.json").write_text(json.dumps({"superuser_password": LAB_SECRET}))
    for name, path in (("RAGPERF_OUTPUTS", "outputs"), ("RAGPERF_LAB_DIR", "lab"), ("XDG_STATE_HOME", "state")):
        monkeypatch.setenv(name, str(tmp_path / path))
    return tmp_path


def _failing(monkeypatch, exc: BaseException) -> None:
    """``ragperf lab down`` raises ``exc``."""

    def down(*args, **kwargs):
        raise exc

    monkeypatch.setattr(lab, "down", down)


def test_an_error_of_ragperfs_own_is_one_line_and_exit_code_2(monkeypatch, capsys):
    _failing(monkeypatch, lab.LabError("the lab is held by another process"))
    assert cli.main(["lab", "down"]) == 2
    assert capsys.readouterr().err == "ragperf: the lab is held by another process\n"


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (KeyError("corpus"), f"ragperf: KeyError: 'corpus' {HINT}"),
        (ZeroDivisionError("division by zero"), f"ragperf: ZeroDivisionError: division by zero {HINT}"),
        (RuntimeError(), f"ragperf: RuntimeError {HINT}"),
        (FileNotFoundError(2, "No such file or directory", "/x"), f"ragperf: FileNotFoundError: [Errno 2] No such "
                                                                   f"file or directory: '/x' {HINT}"),
    ],
)  # fmt: skip
def test_any_other_error_says_what_kind_it_is_and_suggests_debug(monkeypatch, capsys, exc, line):
    _failing(monkeypatch, exc)
    assert cli.main(["lab", "down"]) == 2
    assert capsys.readouterr().err.splitlines() == [line]


def test_debug_shows_the_traceback_with_the_secrets_masked(monkeypatch, capsys):
    _failing(
        monkeypatch, RuntimeError(f"connecting to postgresql://app:{SECRET}@db/rag as {ENV_SECRETS['PGPASSWORD']}")
    )
    assert cli.main(["--debug", "lab", "down"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n") and "in down\n" in err
    assert err.splitlines()[-1] == f"ragperf: RuntimeError: connecting to postgresql://app:***@db/rag as *** {HINT}"
    assert not any(secret in err for secret in LEAKS)
    assert cli.main(["lab", "down"]) == 2
    assert "Traceback" not in capsys.readouterr().err  # only when asked for


def test_an_interrupt_exits_130_with_a_short_line(monkeypatch, capsys):
    _failing(monkeypatch, KeyboardInterrupt())
    assert cli.main(["lab", "down"]) == 130
    assert capsys.readouterr().err == "ragperf: interrupted\n"


def test_secrets_of_the_environment_and_the_lab_are_masked_in_messages_and_logs(monkeypatch, capsys, caplog):
    def down(*args, **kwargs):
        logging.getLogger("ragperf.lab").warning("tried %s and %s", ENV_SECRETS["RAGPERF_LLM_API_KEY"], LAB_SECRET)
        raise lab.LabError(f"refused: {ENV_SECRETS['RAGPERF_PGPASSWORD']} / {LAB_SECRET} / PGPASSWORD={SECRET}")

    monkeypatch.setattr(lab, "down", down)
    caplog.set_level(logging.INFO)
    assert cli.main(["lab", "down"]) == 2
    out, err = capsys.readouterr()
    assert err == "ragperf: refused: *** / *** / PGPASSWORD=***\n"
    messages = [r.getMessage() for r in caplog.records]
    assert "tried *** and ***" in messages
    assert not any(secret in text for text in [out, err, *messages] for secret in LEAKS)
    assert redact._installed == {}, "the log filter is ragperf's for the command only"


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "phase1", "--profile", f"password={SECRET}"],  # argparse refuses the choice, quoting it
        ["run", "phase1", "--target", f"postgresql://app:{SECRET}@db/rag"],
        ["run", "phase1", "--target", f"host=db password='p w {SECRET}'"],
        ["run", "phase1", "--target", ENV_SECRETS["RAGPERF_PGPASSWORD"]],
        ["run", "phase0", "--params", f"/nonexistent/PGPASSWORD={SECRET}.yaml"],
        ["run", "phase0", "--run-id", f"http://app:{SECRET}@service.example/run"],
        ["run", "phase0", "--run-id", f"run?password={SECRET}"],
        ["run", "phase9", "--target", f"http://app:{SECRET}@service.example"],
        ["report", f"/srv/outputs/password={SECRET}"],
        ["compare", "--baseline", f"postgresql://app:{SECRET}@db/rag:phase0", "--current", "phase1"],
        ["rollback", "phase1", "--run", f"run?password={SECRET}"],
        ["cache", "purge", "--dir", f"/srv/PGPASSWORD={SECRET}"],
    ],
)
def test_secrets_in_the_arguments_never_reach_the_terminal(isolated: Path, capsys, caplog, argv):
    caplog.set_level(logging.DEBUG)
    try:
        code = cli.main(["-v", *argv])
    except SystemExit as exc:  # a usage error: argparse exits itself
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2 and err.strip(), (out, err)
    assert "Traceback" not in err
    assert not any(secret in text for text in [out, err, *(r.getMessage() for r in caplog.records)] for secret in LEAKS)
    assert not (isolated / "outputs").exists()
