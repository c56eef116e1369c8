"""Secrets are redacted from what is written, found in what was written, and masked in logs."""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import zlib
from pathlib import Path

import nbformat
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel, SecretStr

from ragperf.core import redact

SECRET = 'Xk9"pw/Zq-7tLm'  # a quote and a slash: JSON and URL forms differ from the raw one


def _png(*extra_chunks: tuple[bytes, bytes]) -> bytes:
    """A 1x1 grey PNG with extra chunks (e.g. compressed text) before the pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    body = b"".join(chunk(kind, data) for kind, data in extra_chunks)
    return b"\x89PNG\r\n\x1a\n" + header + body + chunk(b"IDAT", zlib.compress(b"\0\x80")) + chunk(b"IEND", b"")


def _ztxt(text: str) -> tuple[bytes, bytes]:
    return b"zTXt", b"Comment\0\0" + zlib.compress(text.encode())


def test_redact_masks_secret_values_in_nested_dicts_and_lists_and_keeps_the_rest():
    params = {
        "profile": "smoke",
        "load": {"fixed_users": (5, 10), "max_tokens": 512},
        "targets": [{"user": "app", "password": "pw-one-111"}, {"PGPASSWORD": "pw-two-222"}],
        "llm": {"apiKey": "sk-333", "RAGPERF_LLM_API_KEY": "sk-444", "access_token": "tok-555", "secret_key": "s-666"},
        "headers": {"Authorization": "Bearer abc.def"},
        "nginx": {"proxy_cache_key": "$request_uri"},
        "db_password": None,
        "key": SecretStr("sk-777"),
    }
    original = json.dumps(params, default=str)
    safe = redact.redact(params)
    dumped = json.dumps(safe)
    for secret in ("pw-one-111", "pw-two-222", "sk-333", "sk-444", "tok-555", "s-666", "abc.def", "sk-777"):
        assert secret not in dumped
    assert safe["targets"][0] == {"user": "app", "password": "***"}
    assert safe["load"] == {"fixed_users": (5, 10), "max_tokens": 512}
    assert safe["nginx"]["proxy_cache_key"] == "$request_uri"
    assert safe["db_password"] is None
    assert json.dumps(params, default=str) == original, "redact() changed its input"


DSNS = [
    (
        "postgresql://app:p@ss-w0rd@db.example:5432/rag?sslmode=require",
        "postgresql://app:***@db.example:5432/rag?sslmode=require",
    ),
    ("host=db port=5432 user=app password=p@ss-w0rd dbname=rag", "host=db port=5432 user=app password=*** dbname=rag"),
    ("host=db password='p@ss w0rd\\'x' dbname=rag", "host=db password='***' dbname=rag"),
    ("https://user:p@ss-w0rd@git.example/repo.git", "https://user:***@git.example/repo.git"),
    ("http://llm.example/v1?api_key=p@ss-w0rd&model=m", "http://llm.example/v1?api_key=***&model=m"),
    ("postgresql://app@db/rag", "postgresql://app@db/rag"),
]


@pytest.mark.parametrize(("text", "kept"), DSNS)
def test_redact_scrubs_passwords_inside_dsns_and_urls(text, kept):
    assert redact.redact({"dsn": text}) == {"dsn": kept}
    assert redact.redact([text]) == [kept]


@pytest.mark.parametrize(("text", "kept"), DSNS)
def test_scrubbing_twice_is_scrubbing_once(text, kept):
    for quoted in (kept, repr(kept), repr({"dsn": kept}), f"(got {[kept]!r})"):
        assert redact.scrub_text(quoted) == quoted
    last = repr({"dsn": redact.scrub_text("host=db password=at-the-end")})  # the quote and brace after *** stay
    assert redact.scrub_text(f"(got {last})") == "(got {'dsn': 'host=db password=***'})"


def test_a_url_that_lost_a_slash_as_a_path_is_scrubbed_too():
    assert (
        redact.scrub_text("postgresql:/app:p@ss-w0rd@db/rag: no such file")
        == "postgresql:/app:***@db/rag: no such file"
    )
    assert redact.embedded_passwords("http:/app:pw-1234@h") == ["pw-1234"]


def test_secrets_in_finds_the_passwords_written_anywhere_in_parameters():
    data = {
        "target": {"dsn": "host=db password='p w 1'", "base_url": "http://u:url-pw-2@h"},
        "restart": ["PGPASSWORD=cmd-pw-3 pg_ctl restart"],
        "log_file": Path("postgresql://u:path-pw-4@db/rag"),  # a Path keeps one slash of two
        "api_key": "whole-key-5",
        "nested": {"token": 12345678, "flag": True, "none": None},
        "model": SecretStr("secret-str-6"),
        "short": "password=ab",
    }
    found = redact.secrets_in(data)
    expected = ["p w 1", "url-pw-2", "cmd-pw-3", "path-pw-4", "whole-key-5", "12345678", "secret-str-6"]
    assert sorted(found) == sorted(expected) and found == sorted(found, key=lambda s: (-len(s), s))
    assert redact.secrets_in("nothing secret here") == []


def test_scrub_message_masks_given_and_environment_secrets_in_any_form(monkeypatch):
    monkeypatch.setenv("RAGPERF_LLM_API_KEY", "sk-env-key-777")
    text = "tried sk-env-key-777 and ['raw-given-888'] at postgresql://app:in-url-999@db"
    assert redact.scrub_message(text, ["raw-given-888"]) == "tried *** and ['***'] at postgresql://app:***@db"


def test_redact_turns_pydantic_secrets_into_stars():
    class Settings(BaseModel):
        user: str
        password: SecretStr
        other: SecretStr

    safe = redact.redact(
        {"settings": Settings(user="app", password=SecretStr("one-1111"), other=SecretStr("two-2222"))}
    )
    assert safe == {"settings": {"user": "app", "password": "***", "other": "***"}}


def test_known_secrets_come_from_secret_looking_environment_and_files(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGPERF_PGPASSWORD", "env-password-1")
    monkeypatch.setenv("MY_SERVICE_TOKEN", "env-token-2")
    monkeypatch.setenv("SOME_API_KEY", "env-key-3")
    monkeypatch.setenv("APP_DATABASE_URL", "postgresql://app:url-password-4@db/rag")
    monkeypatch.setenv("SHORT_PASSWORD", "abc")
    monkeypatch.setenv("RAGPERF_VISIBLE", "not-a-secret-5")
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"superuser_password": "file-password-6", "nested": {"app": ["file-7-app"]}}))
    pgpass = tmp_path / "pgpass"
    pgpass.write_text("# comment\ndb:5432:rag:app:pgpass-pw\\:8\n")

    found = redact.known_secrets([secrets_file, pgpass])

    for secret in ("env-password-1", "env-token-2", "env-key-3", "url-password-4", "file-password-6", "file-7-app"):
        assert secret in found
    assert "pgpass-pw:8" in found
    assert "abc" not in found
    assert "not-a-secret-5" not in found


def test_scan_finds_a_planted_secret_in_json_notebook_and_binary_files(tmp_path):
    (tmp_path / "clean.txt").write_text("nothing to see here\n")
    (tmp_path / "params.json").write_text(json.dumps({"note": SECRET}))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output("stream", text=f"dsn {SECRET}\n")])]
    nbformat.write(nb, tmp_path / "phase0.ipynb")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "blob.bin").write_bytes(b"\0\xff\x00" + SECRET.encode() + b"\x00\x01")
    (tmp_path / "sub" / "chart.png").write_bytes(_png(_ztxt(f"made with {SECRET}")))
    image = base64.b64encode(_png(_ztxt(SECRET))).decode()
    (tmp_path / "report.html").write_text(f'<html><img src="data:image/png;base64,{image}"></html>')
    table = pa.table({"question": ["q1", "q2"] * 50, "answer": [SECRET, "fine"] * 50})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="gzip", write_statistics=False)
    assert SECRET.encode() not in buffer.getvalue()  # the scanner must look inside, not at raw bytes
    (tmp_path / "requests.parquet").write_bytes(buffer.getvalue())
    assert SECRET.encode() not in (tmp_path / "sub" / "chart.png").read_bytes()

    found = redact.scan_for_secrets(tmp_path, ["some-other-secret", SECRET])

    names = sorted({path.relative_to(tmp_path).as_posix() for path, _ in found})
    assert names == ["params.json", "phase0.ipynb", "report.html", "requests.parquet", "sub/blob.bin", "sub/chart.png"]
    assert all(SECRET not in hint and "some-other" not in hint for _, hint in found)
    assert all(hint.startswith("Xk***") for _, hint in found)


def test_scan_finds_nothing_in_clean_files_or_without_secrets(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"password": "***", "dsn": "host=db user=app"}))
    (tmp_path / "b.png").write_bytes(_png(_ztxt("harmless")))
    assert redact.scan_for_secrets(tmp_path, [SECRET]) == []
    assert redact.scan_for_secrets(tmp_path, []) == []
    assert redact.scan_for_secrets(tmp_path, [""]) == []


@pytest.fixture
def log_filter():
    yield redact.install_log_filter(secrets=[SECRET])
    redact.uninstall_log_filter()


def test_log_filter_masks_known_secrets_and_dsn_passwords(log_filter, caplog):
    log = logging.getLogger("ragperf.somewhere")
    with caplog.at_level(logging.INFO):
        log.info("connecting with %s", SECRET)
        log.warning("dsn is host=db password=unknown-pw-9 dbname=rag")
        try:
            raise RuntimeError(f"failed with {SECRET}")
        except RuntimeError:
            log.exception("boom")
    text = caplog.text
    assert SECRET not in text
    assert "unknown-pw-9" not in text
    assert "connecting with ***" in text
    assert "password=***" in text
    assert "failed with ***" in text


def test_log_filter_also_covers_loggers_that_do_not_propagate_to_root(log_filter):
    stream = io.StringIO()
    log = logging.getLogger("ragperf.test_private")
    handler = logging.StreamHandler(stream)
    log.addHandler(handler)
    log.propagate = False
    try:
        log.error("token %s", SECRET)
    finally:
        log.removeHandler(handler)
        log.propagate = True
    assert stream.getvalue() == "token ***\n"


def test_uninstalled_log_filter_masks_nothing(caplog):
    redact.install_log_filter(secrets=[SECRET])
    redact.uninstall_log_filter()
    with caplog.at_level(logging.INFO):
        logging.getLogger("ragperf.x").info("plain %s", "text-visible")
    assert "plain text-visible" in caplog.text
