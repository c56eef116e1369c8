"""Production query logs (CSV or JSONL with a ``question`` column), read as rows and checked before a run.

:mod:`ragperf.measure.workload` replays them; the parameters check one before anything starts.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

LOG_EXTENSIONS = (".csv", ".jsonl", ".ndjson")


class WorkloadError(ValueError):
    """A workload or query log that cannot be used, with the file and the reason."""


def validate_log_file(path: Path) -> None:
    """Check cheaply, before anything starts, that a query log can be replayed.

    Reads only the beginning of the file: the file exists, its extension is known, it has a
    ``question`` column and at least one row.

    Raises:
        WorkloadError: Naming the file and what is wrong.
    """
    path = Path(path)
    rows = log_rows(path)
    if next(iter(rows), None) is None:
        raise WorkloadError(f"{path}: the log is empty (no rows)")


def log_rows(path: Path) -> _Rows:
    """Rows of a query log with their 1-based row numbers, after checking the file and its columns."""
    if not path.is_file():
        raise WorkloadError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in LOG_EXTENSIONS:
        raise WorkloadError(f"{path}: unknown extension {path.suffix!r} (allowed: {', '.join(LOG_EXTENSIONS)})")
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as f:
            columns = csv.DictReader(f).fieldnames or []
        if "question" not in columns:
            raise WorkloadError(f"{path}: has no 'question' column (columns found: {_names(columns)})")
        return _Rows(path, _csv_rows)
    first = next(iter(jsonl_rows(path)), None)
    if first is not None and "question" not in first[1]:
        raise WorkloadError(f"{path}: has no 'question' column (columns found: {_names(first[1])})")
    return _Rows(path, jsonl_rows)


class _Rows:
    """A re-iterable, lazily read sequence of (row number, row) of one file."""

    def __init__(self, path: Path, reader: Callable[[Path], Iterator[tuple[int, dict]]]) -> None:
        self.path = path
        self.reader = reader

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        return iter(self.reader(self.path))


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        yield from enumerate(csv.DictReader(f), start=1)


def jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
    if not path.is_file():
        raise WorkloadError(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WorkloadError(f"{path}: line {number} is not JSON ({exc.msg})") from exc
            if not isinstance(row, dict):
                raise WorkloadError(f"{path}: line {number} is not a JSON object")
            yield number, row


def _names(columns: Sequence[str] | dict) -> str:
    return ", ".join(str(c) for c in columns) or "none"
