import json
import logging
from collections import Counter

import pytest

from ragperf.core.querylog import validate_log_file
from ragperf.measure.workload import (
    WorkItem,
    WorkloadError,
    in_order_workload,
    read_workload_jsonl,
    replay_workload,
    write_workload_jsonl,
    zipf_workload,
)


@pytest.fixture
def pool(tmp_path):
    """A question pool as the lab writes it: id, text, mode per line."""
    path = tmp_path / "questions.jsonl"
    rows = [{"id": i, "text": f"question {i}?", "mode": "quality" if i % 5 == 0 else "fast"} for i in range(200)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_zipf_has_popular_repeats_and_a_long_tail(pool):
    items = zipf_workload(pool, 2000, exponent=1.1, seed=3)
    counts = Counter(item.id for item in items)
    assert len(items) == 2000
    assert counts.most_common(1)[0][1] >= 200, "the most popular question should be asked very often"
    rare = sum(1 for n in counts.values() if n <= 2)
    assert rare >= 0.25 * len(counts), "a Zipf workload has many questions asked only once or twice"
    assert len(counts) >= 100, "the tail should reach far into the pool"


def test_zipf_is_deterministic_per_seed_and_keeps_pool_items(pool):
    first = zipf_workload(pool, 300, seed=7)
    assert first == zipf_workload(pool, 300, seed=7)
    assert first != zipf_workload(pool, 300, seed=8)
    by_id = {i: (f"question {i}?", "quality" if i % 5 == 0 else "fast") for i in range(200)}
    assert all((item.question, item.mode) == by_id[item.id] for item in first)


def test_larger_exponent_means_fewer_distinct_questions(pool):
    flat = {item.id for item in zipf_workload(pool, 1000, exponent=0.5, seed=1)}
    steep = {item.id for item in zipf_workload(pool, 1000, exponent=2.0, seed=1)}
    assert len(steep) < len(flat)


@pytest.mark.parametrize("exponent", [0, -1.0])
def test_zipf_exponent_must_be_positive(pool, exponent):
    with pytest.raises(WorkloadError, match="exponent must be > 0"):
        zipf_workload(pool, 10, exponent=exponent)


def test_in_order_takes_the_first_questions_in_file_order(pool):
    items = in_order_workload(pool, 5)
    assert [item.id for item in items] == [0, 1, 2, 3, 4]
    assert items[0] == WorkItem("question 0?", "quality", 0)
    with pytest.raises(WorkloadError, match="only 200"):
        in_order_workload(pool, 201)


def test_replay_csv_with_mode(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("ts,question,mode\n1,What is HNSW?,quality\n2,What is HNSW?,fast\n3,Other?, Fast \n")
    items = replay_workload(path)
    assert items == [
        WorkItem("What is HNSW?", "quality", 0),
        WorkItem("What is HNSW?", "fast", 0),
        WorkItem("Other?", "fast", 1),
    ]


def test_replay_csv_without_mode_skips_empty_questions(tmp_path, caplog):
    path = tmp_path / "log.csv"
    path.write_text('question\nfirst?\n""\n   \n"second, with a comma?"\n')
    with caplog.at_level(logging.WARNING, logger="ragperf.measure.workload"):
        items = replay_workload(path)
    assert [(i.question, i.mode) for i in items] == [("first?", "fast"), ("second, with a comma?", "fast")]
    assert "skipped 2 rows with an empty question" in caplog.text


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson"])
def test_replay_jsonl_with_and_without_mode(tmp_path, suffix):
    path = tmp_path / f"log{suffix}"
    rows = [{"question": "a?", "mode": "quality", "id": 17}, {"question": "b?"}, {"question": ""}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    items = replay_workload(path)
    assert [(i.question, i.mode) for i in items] == [("a?", "quality"), ("b?", "fast")]
    assert items[0].id == 17


def test_replay_rejects_an_unknown_mode_naming_the_row(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("question,mode\na?,fast\nb?,turbo\n")
    with pytest.raises(WorkloadError, match=r"row 2 has mode 'turbo'; allowed values: fast, quality") as err:
        replay_workload(path)
    assert str(path) in str(err.value)


def test_replay_errors_name_the_file_and_the_problem(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(WorkloadError, match="no such file") as err:
        replay_workload(missing)
    assert str(missing) in str(err.value)

    odd = tmp_path / "log.txt"
    odd.write_text("question\na?\n")
    with pytest.raises(WorkloadError, match=r"unknown extension '\.txt' \(allowed: \.csv, \.jsonl, \.ndjson\)"):
        replay_workload(odd)

    no_column = tmp_path / "log.csv"
    no_column.write_text("a,b\n1,2\n")
    with pytest.raises(WorkloadError, match=r"has no 'question' column \(columns found: a, b\)"):
        replay_workload(no_column)

    no_key = tmp_path / "log.jsonl"
    no_key.write_text(json.dumps({"query": "x", "when": 1}) + "\n")
    with pytest.raises(WorkloadError, match=r"has no 'question' column \(columns found: query, when\)"):
        replay_workload(no_key)

    empty = tmp_path / "empty.csv"
    empty.write_text("question,mode\n,fast\n")
    with pytest.raises(WorkloadError, match="the log is empty"):
        replay_workload(empty)

    not_json = tmp_path / "broken.jsonl"
    not_json.write_text('{"question": "a?"}\n{not json\n')
    with pytest.raises(WorkloadError, match="line 2 is not JSON"):
        replay_workload(not_json)


def test_validate_log_file_is_a_cheap_early_check(tmp_path):
    good = tmp_path / "log.csv"
    good.write_text("question\na?\n")
    validate_log_file(good)
    for name, text, problem in [
        ("x.csv", None, "no such file"),
        ("x.tsv", "question\na?\n", "unknown extension"),
        ("y.csv", "q\na?\n", "has no 'question' column"),
        ("z.csv", "question\n", "the log is empty"),
        ("z.jsonl", "\n", "the log is empty"),
    ]:
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(WorkloadError, match=problem):
            validate_log_file(path)


def test_workload_jsonl_round_trip(tmp_path):
    items = [WorkItem("a?", "fast", 1), WorkItem("b – ünïcode?", "quality", -1)]
    path = tmp_path / "sub" / "workload.jsonl"
    assert write_workload_jsonl(path, items) == 2
    assert read_workload_jsonl(path) == items


def test_work_item_mode_is_checked():
    with pytest.raises(WorkloadError, match="allowed: fast, quality"):
        WorkItem("a?", "slow")


def test_zipf_draws_the_same_questions_as_the_lab(tmp_path):
    corpus = pytest.importorskip("ragperf_lab.corpus")
    pool = [corpus.Question(i, f"q{i}?", "D-1", i, "fast", "law") for i in range(50)]
    path = tmp_path / "questions.jsonl"
    corpus.write_questions_jsonl(path, pool)
    ours = [item.id for item in zipf_workload(path, 400, exponent=1.3, seed=11)]
    lab = [q.id for q in corpus.draw_questions(corpus.read_questions_jsonl(path), 400, exponent=1.3, seed=11)]
    assert ours == lab
