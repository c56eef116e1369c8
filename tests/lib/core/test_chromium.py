"""Headless Chromium prints a local page to PDF, and says clearly when it cannot."""

from __future__ import annotations

import pypdf
import pytest

from ragperf.core import chromium


def test_a_page_is_printed_to_a_pdf_with_its_text(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<!doctype html><meta charset='utf-8'><h1>Luật Đấu thầu 22/2023/QH15</h1><p>p95 0.9 s</p>")
    pdf = chromium.print_pdf(page, tmp_path / "page.pdf")
    assert pdf == tmp_path / "page.pdf"
    text = pypdf.PdfReader(pdf).pages[0].extract_text()
    assert "22/2023/QH15" in text and "p95 0.9 s" in text
    assert not list(tmp_path.glob(".*.partial"))


def test_without_chromium_the_error_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("RAGPERF_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(chromium.ChromiumError, match="make setup"):
        chromium.executable()


def test_a_configured_chromium_that_is_not_a_program_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGPERF_CHROMIUM", str(tmp_path / "nothing"))
    with pytest.raises(chromium.ChromiumError, match="RAGPERF_CHROMIUM=.*nothing is not an executable"):
        chromium.executable()


def test_a_print_that_overruns_is_stopped_and_leaves_no_pdf(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<p>slow</p>")
    with pytest.raises(chromium.ChromiumError, match="did not print page.html within"):
        chromium.print_pdf(page, tmp_path / "page.pdf", timeout_s=0.05)
    assert not (tmp_path / "page.pdf").exists()
