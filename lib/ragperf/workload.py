"""Workloads for the load tests: which questions are asked, in which order, in which mode.

Three sources, one item type (:class:`WorkItem`):

* :func:`zipf_workload` draws from the lab's question pool with Zipf popularity: a few questions
  asked often, a long tail asked once, as real users do (what a cache sees).
* :func:`in_order_workload` takes the pool's first questions in file order (the one-user latency test).
* :func:`replay_workload` replays a production query log (CSV or JSONL) supplied by the user.

A workload is written to JSONL (:func:`write_workload_jsonl`) for the load generator's own processes.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MODES = ("fast", "quality")
LOG_EXTENSIONS = (".csv", ".jsonl", ".ndjson")


class WorkloadError(ValueError):
    """A workload or query log that cannot be used, with the file and the reason."""


@dataclass(frozen=True)
class WorkItem:
    """One request of a workload: the question, the answer mode and the question's id (-1 when unknown)."""

    question: str
    mode: str = "fast"
    id: int = -1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise WorkloadError(f"mode {self.mode!r} is not allowed (allowed: {', '.join(MODES)})")


def zipf_workload(questions_file: Path, count: int, exponent: float = 1.1, seed: int = 0) -> list[WorkItem]:
    """Draw ``count`` questions from the pool with Zipf popularity.

    The pool is shuffled with ``seed``; the question at rank i is then drawn with probability
    proportional to 1/(i+1)**exponent. The same file, count, exponent and seed give the same workload.

    Args:
        questions_file: The lab's question pool (JSONL with id, text, mode).
        count: Number of requests to draw.
        exponent: Zipf exponent, > 0; larger means fewer distinct questions and more repeats.
        seed: Seed of the shuffle and of the draw.
    """
    if not exponent > 0:
        raise WorkloadError(f"Zipf exponent must be > 0, got {exponent}")
    _check_count(count)
    pool = read_pool(questions_file)
    rng = np.random.default_rng(seed)
    ranked = [pool[i] for i in rng.permutation(len(pool))]
    weights = 1.0 / np.arange(1, len(ranked) + 1, dtype=float) ** exponent
    drawn = rng.choice(len(ranked), size=count, p=weights / weights.sum())
    return [ranked[i] for i in drawn]


def in_order_workload(questions_file: Path, count: int) -> list[WorkItem]:
    """The first ``count`` questions of the pool, in file order."""
    _check_count(count)
    pool = read_pool(questions_file)
    if count > len(pool):
        raise WorkloadError(f"{questions_file}: asked for {count} questions in order, the pool has only {len(pool)}")
    return pool[:count]


def replay_workload(log_file: Path) -> list[WorkItem]:
    """The questions of a production query log, in log order.

    The log is CSV (with a header) or JSONL (one object per line), chosen by the extension
    (.csv, .jsonl, .ndjson). It needs a ``question`` column; ``mode`` is optional (default fast).
    Rows with an empty question are skipped and counted in the log. A question's id is the log's
    integer ``id`` (or ``question_id``) column when present, else the same number for the same text,
    numbered by first appearance.

    Raises:
        WorkloadError: The file is missing, has another extension, has no question column,
            has no questions, or a row has a mode other than fast or quality.
    """
    log_file = Path(log_file)
    rows = _log_rows(log_file)
    items: list[WorkItem] = []
    ids: dict[str, int] = {}
    skipped = 0
    for number, row in rows:
        question = str(row.get("question") or "").strip()
        if not question:
            skipped += 1
            continue
        mode = str(row.get("mode") or "fast").strip().lower() or "fast"
        if mode not in MODES:
            raise WorkloadError(
                f"{log_file}: row {number} has mode {row.get('mode')!r}; allowed values: {', '.join(MODES)}"
            )
        qid = _int_or_none(row.get("id", row.get("question_id")))
        if qid is None:
            qid = ids.setdefault(question, len(ids))
        items.append(WorkItem(question, mode, qid))
    if skipped:
        log.warning("%s: skipped %d rows with an empty question", log_file, skipped)
    if not items:
        raise WorkloadError(f"{log_file}: the log is empty (no row has a non-empty question)")
    return items


def validate_log_file(path: Path) -> None:
    """Check cheaply, before anything starts, that a query log can be replayed.

    Reads only the beginning of the file: the file exists, its extension is known, it has a
    ``question`` column and at least one row.

    Raises:
        WorkloadError: Naming the file and what is wrong.
    """
    path = Path(path)
    rows = _log_rows(path)
    if next(iter(rows), None) is None:
        raise WorkloadError(f"{path}: the log is empty (no rows)")


def write_workload_jsonl(path: Path, items: Iterable[WorkItem]) -> int:
    """Write a workload as JSONL (question, mode, id per line); returns the number of items."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps({"question": item.question, "mode": item.mode, "id": item.id}, ensure_ascii=False))
            out.write("\n")
            n += 1
    return n


def read_workload_jsonl(path: Path) -> list[WorkItem]:
    """Read a workload written by :func:`write_workload_jsonl`."""
    path = Path(path)
    items = []
    for number, row in _jsonl_rows(path):
        try:
            items.append(WorkItem(str(row["question"]), str(row.get("mode", "fast")), int(row.get("id", -1))))
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkloadError(f"{path}: line {number} is not a work item ({exc})") from exc
    return items


def _check_count(count: int) -> None:
    if count < 1:
        raise WorkloadError(f"count must be at least 1, got {count}")


def read_pool(questions_file: Path) -> list[WorkItem]:
    """Every question of the lab's pool, in file order: JSONL objects with id, text (or question) and mode."""
    questions_file = Path(questions_file)
    pool = []
    for number, row in _jsonl_rows(questions_file):
        text = str(row.get("text") or row.get("question") or "").strip()
        if not text:
            raise WorkloadError(f"{questions_file}: line {number} has no 'text'")
        try:
            pool.append(WorkItem(text, str(row.get("mode") or "fast"), int(row.get("id", number - 1))))
        except (TypeError, ValueError) as exc:
            raise WorkloadError(f"{questions_file}: line {number}: {exc}") from exc
    if not pool:
        raise WorkloadError(f"{questions_file}: the question pool is empty")
    return pool


def _log_rows(path: Path) -> _Rows:
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
    first = next(iter(_jsonl_rows(path)), None)
    if first is not None and "question" not in first[1]:
        raise WorkloadError(f"{path}: has no 'question' column (columns found: {_names(first[1])})")
    return _Rows(path, _jsonl_rows)


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


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict]]:
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


def _int_or_none(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None
