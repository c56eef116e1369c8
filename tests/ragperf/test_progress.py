"""Progress bars: widgets live, plain text (final state kept) when ragperf runs a notebook headless."""

from __future__ import annotations

import io

from tqdm import tqdm as text_tqdm

from ragperf import progress


def test_headless_bars_are_text_and_end_at_their_final_state(monkeypatch):
    monkeypatch.setenv(progress.HEADLESS_ENV, "1")
    out = io.StringIO()
    with progress.bar(total=50, desc="load corpus", file=out) as bar:
        assert type(bar) is text_tqdm and bar.mininterval == progress.HEADLESS_INTERVAL_S
        bar.update(50)
    assert "load corpus: 100%" in out.getvalue().split("\r")[-1]


def test_interactive_bars_are_tqdm_auto(monkeypatch):
    monkeypatch.delenv(progress.HEADLESS_ENV, raising=False)
    with progress.bar(total=1, disable=True) as bar:
        assert type(bar) is progress.auto_tqdm
