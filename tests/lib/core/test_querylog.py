"""Query logs: CSV and JSONL read as numbered rows, and every bad file refused naming the file and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragperf.core.querylog import LOG_EXTENSIONS, WorkloadError, jsonl_rows, log_rows, validate_log_file


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_csv_log_is_read_as_numbered_rows_and_can_be_read_twice(tmp_path: Path):
    path = _write(tmp_path, "q.csv", "question,mode\nGiá gói thầu?,fast\nHồ sơ mời thầu,slow\n")
    rows = log_rows(path)
    first = list(rows)
    assert first == [
        (1, {"question": "Giá gói thầu?", "mode": "fast"}),
        (2, {"question": "Hồ sơ mời thầu", "mode": "slow"}),
    ]
    assert list(rows) == first  # re-iterable: a replay reads it again
    validate_log_file(path)


def test_a_csv_log_with_a_byte_order_mark_still_has_its_question_column(tmp_path: Path):
    path = tmp_path / "bom.csv"
    path.write_bytes("question\nmột\n".encode("utf-8-sig"))
    assert list(log_rows(path)) == [(1, {"question": "một"})]


@pytest.mark.parametrize("name", ["q.jsonl", "q.ndjson", "Q.JSONL"])
def test_a_jsonl_log_skips_blank_lines_and_keeps_line_numbers(tmp_path: Path, name: str):
    path = _write(tmp_path, name, '{"question": "a"}\n\n{"question": "b", "k": 1}\n')
    assert list(log_rows(path)) == [(1, {"question": "a"}), (3, {"question": "b", "k": 1})]


def test_a_csv_log_without_a_question_column_names_the_file_and_the_columns_found(tmp_path: Path):
    path = _write(tmp_path, "q.csv", "query,mode\nx,fast\n")
    with pytest.raises(WorkloadError) as err:
        log_rows(path)
    message = str(err.value)
    assert str(path) in message
    assert "no 'question' column" in message and "columns found: query, mode" in message


def test_a_jsonl_log_without_a_question_key_names_the_file_and_the_keys_found(tmp_path: Path):
    path = _write(tmp_path, "q.jsonl", '{"query": "x", "mode": "fast"}\n')
    with pytest.raises(WorkloadError, match=r"no 'question' column \(columns found: query, mode\)") as err:
        log_rows(path)
    assert str(path) in str(err.value)


def test_a_bad_json_line_names_the_file_and_the_line(tmp_path: Path):
    path = _write(tmp_path, "q.jsonl", '{"question": "a"}\n{"question": oops}\n')
    rows = log_rows(path)  # the first line is fine: the bad one is found when it is read
    with pytest.raises(WorkloadError) as err:
        list(rows)
    assert str(path) in str(err.value) and "line 2 is not JSON" in str(err.value)


def test_a_bad_first_json_line_is_refused_before_anything_runs(tmp_path: Path):
    path = _write(tmp_path, "q.jsonl", "not json\n")
    with pytest.raises(WorkloadError, match="line 1 is not JSON"):
        validate_log_file(path)


def test_a_json_line_that_is_not_an_object_is_refused(tmp_path: Path):
    path = _write(tmp_path, "q.jsonl", '["question"]\n')
    with pytest.raises(WorkloadError, match="line 1 is not a JSON object"):
        list(jsonl_rows(path))


@pytest.mark.parametrize(("name", "text"), [("q.csv", "question\n"), ("q.jsonl", ""), ("q.ndjson", "\n\n")])
def test_an_empty_log_is_refused_naming_the_file(tmp_path: Path, name: str, text: str):
    path = _write(tmp_path, name, text)
    with pytest.raises(WorkloadError) as err:
        validate_log_file(path)
    assert str(err.value) == f"{path}: the log is empty (no rows)"


def test_an_unknown_extension_names_the_file_and_the_allowed_ones(tmp_path: Path):
    path = _write(tmp_path, "q.txt", "question\nx\n")
    with pytest.raises(WorkloadError) as err:
        validate_log_file(path)
    message = str(err.value)
    assert message.startswith(f"{path}: unknown extension '.txt'")
    assert all(ext in message for ext in LOG_EXTENSIONS)


def test_a_missing_file_is_named(tmp_path: Path):
    path = tmp_path / "absent.csv"
    with pytest.raises(WorkloadError, match="no such file") as err:
        validate_log_file(path)
    assert str(path) in str(err.value)
    with pytest.raises(WorkloadError, match="no such file"):
        next(jsonl_rows(tmp_path / "absent.jsonl"))


def test_a_workload_error_is_a_value_error():
    assert issubclass(WorkloadError, ValueError)  # the parameters' check reports it like any bad value
