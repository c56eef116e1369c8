"""The Target record: the password reaches psycopg through connect_kwargs and never shows in a repr."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from ragperf.core.target import Target, TargetError

PASSWORD = "s3cr3t-Pa55"


def _target(password: str | None = PASSWORD) -> Target:
    return Target(
        "deployment",
        "http://127.0.0.1:8000",
        "host=127.0.0.1 port=5432 dbname=rag user=app",
        SecretStr(password) if password is not None else None,
        lab_dir=Path("/tmp/lab"),
        collection="docs",
        app_role="app",
    )


def test_connect_kwargs_gives_psycopg_the_password():
    assert _target().connect_kwargs() == {"password": PASSWORD}


def test_without_a_password_connect_kwargs_adds_nothing():
    assert _target(None).connect_kwargs() == {}
    assert _target("").connect_kwargs() == {}  # an empty secret is no password


def test_the_password_never_shows_in_the_targets_repr_or_str():
    target = _target()
    target.connect_kwargs()
    for shown in (repr(target), str(target), f"{target}", repr(target.password)):
        assert PASSWORD not in shown
    assert "host=127.0.0.1" in repr(target)  # the rest of the record is there to read


def test_a_target_error_is_a_runtime_error():
    assert issubclass(TargetError, RuntimeError)
    assert _target().servers == {} and _target().restart is None
