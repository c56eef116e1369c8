"""The report is one self-contained page without code, and is never written with a secret in it."""

from __future__ import annotations

import base64
import html
import json
import re
import struct
import unicodedata
import zlib

import nbformat
import pypdf
import pytest

from ragperf import runs
from ragperf.core import changes, redact
from ragperf.measure import metrics
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


def _metrics(phase: str, p95_10: float, users: float, *, all_held: bool = False, **extra) -> dict:
    return {"schema": metrics.SCHEMA, "phase": phase,
            "response_time_10_users": {"value": p95_10, "unit": "s"},
            "success_rate_10_users": {"value": 99.0, "unit": "%"},
            "max_concurrent_users": {"value": users, "unit": "users"},
            "ladder": {"scenario": "ladder", "all_steps_held": all_held}, **extra}  # fmt: skip


def _add_measured_phase(run: runs.Run, phase: str, result: dict) -> None:
    metrics.write_metrics_json(run.phase_dir(phase) / "metrics.json", result)
    runs.write_manifest(run, {"profile": "smoke", "target": "lab", "db_password": PLANTED}, phase=phase)
    _add_phase(run, phase)


def test_the_first_page_gives_the_verdict_in_words_beside_the_plans_targets(run):
    _add_measured_phase(run, "phase0", _metrics("phase0", 9.1, 5))
    impact = [{"expected (PLAN.md)": "Concurrent capacity: 50 → 150+ users", "measured": "40 users", "met": "not met"}]
    _add_measured_phase(run, "phase1", _metrics("phase1", 0.9, 40, all_held=True, expected_impact=impact))
    changes.Journal(run.path / "phase1").write("applied", changes.Change("setting", "work_mem", "4MB", "64MB", "r"))

    made = report.render_report(run.id, secret_files=[], pdf=False)

    assert made.html == run.path / "report.html" and made.pdf is None
    page = made.html.read_text()
    summary = page[page.index('id="summary"') : page.index('id="phase-phase0"')]
    text = html.unescape(re.sub(r"<[^>]+>", "", summary))
    assert "is not met after phase1: 2 of 3 targets are" in text
    assert "Response time (p95) at 10 users: 9.1 s → 0.9 s (phase0 → phase1); target < 1.5 s: met" in text
    assert (
        "Max concurrent users within the SLO: 5 users → 40 users (phase0 → phase1); target ≥ 100 users: not met" in text
    )
    assert "a lower bound" in text  # why 40 users is not the end of it: every step of the ladder held
    assert "the plan expected “Concurrent capacity: 50 → 150+ users”; measured: 40 users" in text
    assert "1 change still applied (setting)" in text and f"ragperf rollback phase1 --run {run.id}" in text
    assert "changed nothing (it measures only)" in text
    chart = re.search(r'<img[^>]*\salt="([^"]+)"[^>]*>', summary)  # nbconvert may reorder the attributes
    assert chart and "What each phase contributed" in chart[1] and 'src="data:image/png;base64,' in chart[0]
    assert (run.path / report.CHART_NAME).stat().st_size > 0
    provenance = page[page.index('id="provenance"') :]
    assert "git revision" in provenance and "reproduce" in provenance and "db_password: '***'" in provenance
    assert PLANTED not in page


def test_report_is_self_contained_without_code_and_in_phase_order(run):
    for phase in ("phase10", "phase0", "phase2"):
        runs.write_manifest(run, {"profile": "smoke", "target": "lab"}, phase=phase)
        _add_phase(run, phase)

    page = report.render_report(run.id, secret_files=[], pdf=False).html.read_text()

    body = page[page.index("<body") :]
    assert "CODE_SOURCE_" not in page and "measure()" not in page
    assert "[1]:" not in body and "jp-InputPrompt" not in body and "jp-OutputPrompt" not in body
    assert "The narrative of phase0." in page and "p95 of phase2: 1.2 s" in page
    assert page.count('src="data:image/png;base64,') == 3
    assert page.count('alt="A chart of this phase"') == 3  # images without a description still get one
    assert not re.search(r'<(?:script|link|img)[^>]*\s(?:src|href)="(?!data:|#)', page), "fetches something"
    positions = [page.index(f'id="phase-{p}"') for p in ("phase0", "phase2", "phase10")]
    assert positions == sorted(positions)
    summary = page[page.index('id="summary"') : positions[0]]
    assert run.id in summary and "smoke" in summary and "unchanged" in summary
    assert all(f'href="#phase-{p}"' in summary for p in ("phase0", "phase2", "phase10"))
    assert "No phase of this run recorded its metrics" in summary


def test_a_chart_keeps_its_description_as_the_images_alternative_text(run):
    nb = _executed_notebook("phase0")
    nb.cells[1].outputs[1]["metadata"] = {"image/png": {"alt": "Throughput against concurrent users"}}
    nbformat.write(nb, run.notebook_path("phase0"))
    page = report.render_report(run.id, secret_files=[], pdf=False).html.read_text()
    assert 'alt="Throughput against concurrent users"' in page


def test_the_pdf_is_printed_from_the_page(run):
    _add_measured_phase(run, "phase0", _metrics("phase0", 9.1, 5))
    made = report.render_report(run.id, secret_files=[])
    assert made.pdf == run.path / "report.pdf", made.pdf_error
    text = unicodedata.normalize("NFKC", "".join(page.extract_text() for page in pypdf.PdfReader(made.pdf).pages))
    assert "Performance report" in text and "Response time (p95) at 10 users: 9.1 s" in text and PLANTED not in text


def test_report_of_a_run_directory_given_by_path(run):
    _add_phase(run, "phase0")
    assert report.render_report(run.path, secret_files=[], pdf=False).html == run.path / "report.html"


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
    assert report.render_report(run.id, secret_files=[], pdf=False).html.exists()  # no such secret known
