"""Progress bars that read well both live and in a saved notebook.

In an interactive notebook a bar is a widget (tqdm.auto). A notebook saved by papermill keeps only a
widget's first text form, so every bar would read 0 % in the audit trail and the report. Runs started
by ``ragperf run`` set ``RAGPERF_HEADLESS``; there the bar is plain text on standard output, redrawn
with carriage returns and rarely (every few seconds), so the saved notebook and the HTML report show
each bar's final state.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm as text_tqdm
from tqdm.auto import tqdm as auto_tqdm

HEADLESS_ENV = "RAGPERF_HEADLESS"
HEADLESS_INTERVAL_S = 5.0


def bar(**kwargs: Any) -> Any:
    """A tqdm progress bar (same keyword arguments): a widget live, text when headless."""
    if os.environ.get(HEADLESS_ENV):
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("mininterval", HEADLESS_INTERVAL_S)
        kwargs.setdefault("ascii", " #")
        return text_tqdm(**kwargs)
    return auto_tqdm(**kwargs)
