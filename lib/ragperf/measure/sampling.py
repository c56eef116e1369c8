"""Numbers sampled beside a load step, once a second in a thread: processes' CPU, and anything else one can read.

:class:`Sampler` calls each of its probes every ``interval_s`` seconds while it runs (a ``with`` block) and keeps
the readings as rows (``t`` epoch seconds, ``probe``, ``value``). :func:`cpu_probe` makes a probe of the CPU a set
of processes uses (percent of one core, children included), whose PIDs are looked up at every reading, so that a
process restarted meanwhile (a killed instance) is followed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType

import pandas as pd
import psutil

log = logging.getLogger(__name__)

Probe = Callable[[], float | None]


def cpu_probe(pids: Callable[[], Iterable[int]], *, children: bool = True) -> Probe:
    """A probe of the CPU the processes ``pids()`` names used since its last reading, in percent of one core; None
    at the first reading and when none of them ran at the last one.

    With ``children``, each process counts with its descendants: the live ones, and those that ended and were
    reaped meanwhile (the kernel adds their time to the parent's ``children_*`` times), so that even PostgreSQL's
    backend of a connection that lived a few milliseconds is counted. A process seen for the first time (a restart)
    counts from its next reading on.
    """
    last: dict[int, float] = {}  # pid -> its CPU seconds at the previous reading
    stamp = [time.monotonic()]

    def seconds(root: psutil.Process) -> float:
        t = root.cpu_times()
        total = t.user + t.system
        if children:
            total += t.children_user + t.children_system
            for child in root.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    c = child.cpu_times()
                    total += c.user + c.system
        return total

    def read() -> float | None:
        now, used, known = time.monotonic(), 0.0, False
        seen: dict[int, float] = {}
        for pid in pids():
            try:
                seen[pid] = seconds(psutil.Process(pid))
            except psutil.Error:
                continue
            if pid in last:
                used += max(0.0, seen[pid] - last[pid])  # a child that ended but is not reaped yet dips for a moment
                known = True
        elapsed, stamp[0] = now - stamp[0], now
        last.clear()
        last.update(seen)
        return 100.0 * used / elapsed if known and elapsed > 0 else None

    return read


class Sampler:
    """Reads every probe each ``interval_s`` seconds while the ``with`` block runs; :meth:`frame` holds the readings.

    A probe that raises is logged once and skipped from then on; the block is never disturbed by it.
    """

    def __init__(self, probes: Mapping[str, Probe], interval_s: float = 1.0) -> None:
        self.probes = dict(probes)
        self.interval_s = interval_s
        self.rows: list[tuple[float, str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._read()  # the first CPU readings only start psutil's counters
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._read()

    def _read(self) -> None:
        now = time.time()
        for name, probe in list(self.probes.items()):
            try:
                value = probe()
            except Exception as exc:  # a probe's failure must not end the measurement
                log.warning("sampling %s failed (%s: %s); not sampled any more", name, type(exc).__name__, exc)
                del self.probes[name]
                continue
            if value is not None:
                self.rows.append((now, name, float(value)))

    def frame(self) -> pd.DataFrame:
        """The readings: t (epoch seconds), probe, value."""
        return pd.DataFrame(self.rows, columns=["t", "probe", "value"])

    def summary(self, start: float | None = None, end: float | None = None) -> dict[str, float]:
        """Mean of each probe's readings between ``start`` and ``end`` (epoch seconds), and ``<probe>_max``."""
        frame = self.frame()
        if start is not None:
            frame = frame[frame["t"] >= start]
        if end is not None:
            frame = frame[frame["t"] <= end]
        result: dict[str, float] = {}
        for name, values in frame.groupby("probe")["value"]:
            result[str(name)] = float(values.mean())
            result[f"{name}_max"] = float(values.max())
        return result
