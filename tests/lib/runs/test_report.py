"""The report is one self-contained page without code, and is never written with a secret in it."""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib

import nbformat
import pytest

from ragperf import runs
from ragperf.core import redact
from ragperf.runs import report

PLANTED = "planted-pw-6Hq2x"


def _png(*extra_chunks: tuple[bytes, bytes]) -> bytes:
    """A 1x1 grey PNG with extra chunks (e.g. compressed text) before the pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    body = b"".join(chunk(kind, data) for kind, data in extra_chunks)
    return b"\x89PNG\r\n\x1a\n" + header + body + chunk(b"IDAT", zlib.compress(b"\0\x80")) + chunk(b"IEND", b"")


def _executed_notebook(phase: str, *, text: str = "", png: bytes | None = None) -> nbformat.NotebookNode:
    """What papermill leaves behind: narrative, a code cell and its outputs (nothing is executed here)."""
    image = base64.b64encode(png or _png()).decode()
    outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=text or f"p95 of {phase}: 1.2 s\n"),
        nbformat.v4.new_output("display_data", data={"image/png": image, "text/plain": "<Figure>"}),
    ]
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"## What {phase} measured\n\nThe narrative of {phase}."),
        nbformat.v4.new_code_cell(f"CODE_SOURCE_{phase} = measure()", execution_count=1, outputs=outputs),
    ]
    return nb


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGPERF_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("RAGPERF_PGPASSWORD", raising=False)
    return runs.new_run("smoke")


def _add_phase(run: runs.Run, phase: str, **kwargs) -> None:
    nbformat.write(_executed_notebook(phase, **kwargs), run.notebook_path(phase))


def test_report_is_self_contained_without_code_and_in_phase_order(run):
    (run.phase_dir("phase0") / "metrics.json").write_text(
        json.dumps({"response_time_10_users": 3.14159, "p95": {"value": 1.5, "unit": "s"}, "rows": [1, 2]})
    )
    (run.phase_dir("phase2") / "metrics.json").write_text(json.dumps({"response_time_10_users": 0.25}))
    for phase in ("phase10", "phase0", "phase2"):
        runs.write_manifest(run, {"profile": "smoke", "target": "lab"}, phase=phase)
        _add_phase(run, phase)

    path = report.render_report(run.id, secret_files=[])

    assert path == run.path / "report.html"
    page = path.read_text()
    body = page[page.index("<body") :]
    assert "CODE_SOURCE_" not in page and "measure()" not in page
    assert "[1]:" not in body and "jp-InputPrompt" not in body and "jp-OutputPrompt" not in body
    assert "The narrative of phase0." in page and "p95 of phase2: 1.2 s" in page
    assert page.count('src="data:image/png;base64,') == 3
    assert not re.search(r'<(?:script|link|img)[^>]*\s(?:src|href)="(?!data:|#)', page), "fetches something"
    positions = [page.index(f'id="phase-{p}"') for p in ("phase0", "phase2", "phase10")]
    assert positions == sorted(positions)
    summary = page[page.index('id="summary"') : positions[0]]
    assert run.id in summary and "smoke" in summary and "unchanged" in summary
    assert all(f'href="#phase-{p}"' in summary for p in ("phase0", "phase2", "phase10"))
    assert "response_time_10_users" in summary and "3.142" in summary and "0.25" in summary and "1.5 s" in summary


def test_report_of_a_run_directory_given_by_path(run):
    _add_phase(run, "phase0")
    assert report.render_report(run.path, secret_files=[]) == run.path / "report.html"


def test_a_run_without_an_executed_notebook_is_an_error_naming_it(run):
    run.phase_dir("phase0")
    with pytest.raises(report.ReportError, match=run.id):
        report.render_report(run.id, secret_files=[])
    assert not (run.path / "report.html").exists()


def test_report_refuses_a_secret_in_an_output(run, monkeypatch):
    monkeypatch.setenv("RAGPERF_PGPASSWORD", PLANTED)
    _add_phase(run, "phase0")
    _add_phase(run, "phase1", text=f"connected with password {PLANTED}\n")
    with pytest.raises(redact.SecretLeakError, match="phase1.ipynb") as caught:
        report.render_report(run.id, secret_files=[])
    assert "report.html" in str(caught.value) and PLANTED not in str(caught.value)
    assert not (run.path / "report.html").exists()


def test_report_refuses_a_secret_from_the_secrets_file_hidden_in_an_image(run, tmp_path):
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(json.dumps({"app_password": PLANTED}))
    _add_phase(run, "phase0", png=_png((b"zTXt", b"Comment\0\0" + zlib.compress(PLANTED.encode()))))
    with pytest.raises(redact.SecretLeakError, match="phase0.ipynb"):
        report.render_report(run.id, secret_files=[secrets_file])
    assert not (run.path / "report.html").exists()
    assert report.render_report(run.id, secret_files=[]).exists()  # the same page, with no such secret known
