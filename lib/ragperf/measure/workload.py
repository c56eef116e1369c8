"""Workloads for the load tests: which questions are asked, in which order, in which mode.

Three sources, one item type (:class:`WorkItem`):

* :func:`zipf_workload` draws from the lab's question pool with Zipf popularity: a few questions
  asked often, a long tail asked once, as real users do (what a cache sees).
* :func:`in_order_workload` takes the pool's first questions in file order (the one-user latency test).
* :func:`replay_workload` replays a production query log (CSV or JSONL) supplied by the user.

A workload is written to JSONL (:func:`write_workload_jsonl`) for the load generator's own processes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragperf.core.querylog import WorkloadError, jsonl_rows, log_rows

log = logging.getLogger(__name__)

MODES = ("fast", "quality")


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
    rows = log_rows(log_file)
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
    for number, row in jsonl_rows(path):
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
    for number, row in jsonl_rows(questions_file):
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


def _int_or_none(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None
