"""Progress bars: widgets live, plain text (final state kept) when ragperf runs a notebook headless."""

from __future__ import annotations

import io

from tqdm import tqdm as text_tqdm

from ragperf.core import progress


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


def test_a_headless_bar_in_a_kernel_updates_one_display_in_place(monkeypatch):
    """Under papermill a bar is one display that each redraw replaces: the saved notebook keeps one line."""
    shown: list[tuple[str, dict]] = []

    class Handle:
        def update(self, data: dict, raw: bool) -> None:
            shown.append(("update", data))

    def display(data: dict, raw: bool, display_id: bool) -> Handle:
        assert raw and display_id
        shown.append(("display", data))
        return Handle()

    monkeypatch.setenv(progress.HEADLESS_ENV, "1")
    monkeypatch.setattr(progress, "in_kernel", lambda: True)
    monkeypatch.setattr("IPython.display.display", display)
    with progress.bar(total=10, desc="ladder 25 users", mininterval=0) as bar:
        assert isinstance(bar, progress.DisplayBar)
        for _ in range(10):
            bar.update(1)
    assert [kind for kind, _ in shown].count("display") == 1 and len(shown) > 3
    assert shown[-1][1]["text/plain"].startswith("ladder 25 users: 100%")
    assert all("\r" not in data["text/plain"] and "\n" not in data["text/plain"] for _, data in shown)
