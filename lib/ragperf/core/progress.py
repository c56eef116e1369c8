"""Progress bars that read well live, in a terminal, and in a saved notebook.

In an interactive notebook a bar is a widget (tqdm.auto). A notebook saved by papermill keeps only a
widget's first text form (every bar would read 0 %), and a text bar redrawn with carriage returns
becomes one saved line per redraw. Runs started by ``ragperf run`` set ``RAGPERF_HEADLESS``; there a
bar inside the notebook's kernel redraws one display in place (``display_id``), so the saved notebook
and the report hold one line per bar, in its final state, while ``ragperf run``'s terminal shows
papermill's own progress. Outside a kernel (``ragperf lab up`` in a terminal) a headless bar is text.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm as text_tqdm
from tqdm.auto import tqdm as auto_tqdm

HEADLESS_ENV = "RAGPERF_HEADLESS"
HEADLESS_INTERVAL_S = 5.0
DISPLAY_INTERVAL_S = 1.0  # an in-place update costs one message, not one saved line


class DisplayBar(text_tqdm):
    """A text tqdm bar drawn into one IPython display that each redraw replaces."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._handle: Any = None
        kwargs.setdefault("mininterval", DISPLAY_INTERVAL_S)
        kwargs.setdefault("ascii", " #")
        super().__init__(*args, file=_Nowhere(), **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Replace the bar's display with its current text (tqdm calls this on every redraw)."""
        from IPython.display import display

        text = {"text/plain": msg if msg is not None else self.__str__()}
        if self._handle is None:
            self._handle = display(text, raw=True, display_id=True)
        else:
            self._handle.update(text, raw=True)
        return True


class _Nowhere:
    """A file that takes tqdm's writes and drops them (the display shows the bar instead)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def in_kernel() -> bool:
    """True inside a Jupyter kernel (papermill's or JupyterLab's), where displays can be updated."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def bar(**kwargs: Any) -> Any:
    """A tqdm progress bar (same keyword arguments): a widget live, one in-place display in a headless
    kernel, text when headless elsewhere or when given a ``file``."""
    if os.environ.get(HEADLESS_ENV):
        if "file" not in kwargs and in_kernel():
            return DisplayBar(**kwargs)
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("mininterval", HEADLESS_INTERVAL_S)
        kwargs.setdefault("ascii", " #")
        return text_tqdm(**kwargs)
    return auto_tqdm(**kwargs)
