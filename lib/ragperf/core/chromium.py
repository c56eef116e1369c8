"""Debian's Chromium, headless, as a one-shot tool: a page printed to PDF (the report, for people who forward
attachments).

Chromium runs with a new empty profile directory, no sandbox when root (it refuses otherwise), and none of its
background networking: this machine's network is closed, and the page it prints is self-contained. It is started
in a process group of its own and, if it overruns, that group is stopped by the PID ragperf started.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio")  # fmt: skip
PRINT_TIMEOUT_S = 120.0


class ChromiumError(RuntimeError):
    """Chromium is missing, or could not print the page."""


def executable() -> Path:
    """Chromium's path (``$RAGPERF_CHROMIUM``, else the first of :data:`CANDIDATES` on the PATH)."""
    if configured := os.environ.get("RAGPERF_CHROMIUM"):
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ChromiumError(f"RAGPERF_CHROMIUM={configured} is not an executable file")
        return path
    for name in CANDIDATES:
        if found := shutil.which(name):
            return Path(found)
    raise ChromiumError(
        f"no Chromium found (looked for {', '.join(CANDIDATES)} on the PATH): `make setup` installs Debian's "
        "chromium as root, or set RAGPERF_CHROMIUM to a Chromium or Chrome binary"
    )


def argv(binary: Path, profile_dir: Path, *extra: str) -> list[str]:
    """Chromium's command line: headless, a profile of its own, no sandbox as root, then ``extra``."""
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []
    return [str(binary), *FLAGS, *sandbox, f"--user-data-dir={profile_dir}", *extra]


def print_pdf(page: Path, pdf: Path, *, timeout_s: float = PRINT_TIMEOUT_S) -> Path:
    """Print the local HTML file ``page`` to ``pdf`` (A4, backgrounds, no header or footer); returns ``pdf``.

    Raises:
        ChromiumError: no Chromium, or it failed or overran ``timeout_s`` (its output's tail in the message).
    """
    page, pdf = Path(page).resolve(), Path(pdf).resolve()
    partial = pdf.with_name(f".{pdf.name}.partial")
    partial.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="ragperf-chromium-") as profile:
        command = argv(executable(), Path(profile), "--no-pdf-header-footer", f"--print-to-pdf={partial}",
                       page.as_uri())  # fmt: skip
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group of the process started above, by its PID
            proc.communicate()
            raise ChromiumError(f"Chromium did not print {page.name} within {timeout_s:g} s") from None
    text = output.decode(errors="replace")
    if proc.returncode != 0 or not partial.is_file() or partial.stat().st_size == 0:
        partial.unlink(missing_ok=True)
        tail = "\n".join(text.strip().splitlines()[-5:])
        raise ChromiumError(f"Chromium could not print {page.name} (exit code {proc.returncode}): {tail}")
    partial.replace(pdf)
    return pdf
