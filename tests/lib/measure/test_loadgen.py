import asyncio
import errno
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pandas as pd
import psutil
import pytest
from aiohttp import web

from ragperf.measure import loadgen
from ragperf.measure.loadgen import engine, recording
from ragperf.measure.loadgen.recording import (
    RECORD_COLUMNS,
    RECORD_DTYPES,
    WorkloadCursor,
    classify,
    classify_exception,
)
from ragperf.measure.workload import WorkItem

SERVER_SLEEP_S = 0.05


# --- unit: no server ---------------------------------------------------------------------------


class RetriesExceeded(Exception):
    """Shaped like geventhttpclient's: the real error is in ``original``."""

    def __init__(self, original):
        super().__init__("retries exceeded")
        self.original = original


class Timeout(BaseException):
    """Shaped like gevent.Timeout, which is a BaseException."""


class HTTPConnectionClosed(Exception):
    """Shaped like geventhttpclient's: the server closed the connection."""


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TimeoutError("timed out"), "timeout"),
        (OSError(errno.ETIMEDOUT, "timed out"), "timeout"),
        (Timeout(), "timeout"),
        (RetriesExceeded(TimeoutError("timed out")), "timeout"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "connection_refused"),
        (RetriesExceeded(ConnectionRefusedError()), "connection_refused"),
        (OSError(errno.ECONNREFUSED, "refused"), "connection_refused"),
        (ConnectionResetError(), "connection_reset"),
        (BrokenPipeError(), "connection_reset"),
        (RetriesExceeded(OSError(errno.EPIPE, "pipe")), "connection_reset"),
        (HTTPConnectionClosed("closed"), "connection_reset"),
        (socket.gaierror(-2, "Name or service not known"), "connection_error"),
        (RuntimeError("something else"), "connection_error"),
    ],
)
def test_transport_errors_are_classified(exc, expected):
    assert classify_exception(exc) == expected
    assert classify(0, exc, None, 0.1, 30.0) == expected


GOOD = json.dumps({"answer": "An answer.", "sources": [{"id": 1}], "mode": "fast"}).encode()


@pytest.mark.parametrize(
    ("status", "exc", "body", "latency", "expected"),
    [
        (200, None, GOOD, 0.2, ""),
        (500, None, b"", 0.2, "http_5xx"),
        (503, RetriesExceeded(RuntimeError("bad status")), None, 0.2, "http_5xx"),
        (404, None, b"{}", 0.2, "http_4xx"),
        (429, None, b"{}", 0.2, "http_4xx"),
        (200, None, GOOD, 31.0, "timeout"),
        (200, TimeoutError(), None, 30.0, "timeout"),  # headers came, the body did not
        (200, None, b"<html>not json</html>", 0.2, "bad_body"),
        (200, None, b"", 0.2, "bad_body"),
        (200, None, json.dumps({"answer": "  ", "sources": []}).encode(), 0.2, "bad_body"),
        (200, None, json.dumps({"answer": "x"}).encode(), 0.2, "bad_body"),
        (200, None, json.dumps({"answer": "x", "sources": "a"}).encode(), 0.2, "bad_body"),
        (200, None, json.dumps({"answer": 3, "sources": []}).encode(), 0.2, "bad_body"),
        (200, None, json.dumps(["answer", "sources"]).encode(), 0.2, "bad_body"),
        (204, None, b"", 0.2, "bad_body"),
        (0, None, None, 0.2, "connection_error"),
    ],
)
def test_responses_are_classified(status, exc, body, latency, expected):
    assert classify(status, exc, body, latency, 30.0) == expected


def test_cache_status_prefers_x_cache_status_in_any_case():
    assert recording.cache_status({"x-cache": "MISS", "X-Cache-Status": "HIT"}) == "HIT"
    assert recording.cache_status({"X-CACHE": "MISS"}) == "MISS"
    assert recording.cache_status({"Content-Type": "application/json"}) == ""
    assert recording.cache_status(None) == ""
    assert recording.cache_status({"X-Cache-Status": ["HIT", "STALE"]}) == "HIT, STALE"


def _items(n):
    return [WorkItem(f"q{i}", "fast", i) for i in range(n)]


def test_cycling_cursor_wraps_around():
    cursor = WorkloadCursor(_items(3), cycle=True)
    assert [cursor.next().id for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert not cursor.exhausted


def test_non_cycling_cursor_hands_out_each_item_once():
    cursor = WorkloadCursor(_items(3), cycle=False)
    assert [cursor.next().id for _ in range(3)] == [0, 1, 2]
    assert cursor.next() is None
    assert cursor.exhausted
    assert WorkloadCursor([], cycle=True).next() is None


def test_processes_share_a_non_cycling_workload_exactly_once():
    items = _items(10)
    taken = []
    for index in range(3):
        cursor = WorkloadCursor.for_process(items, cycle=False, index=index, processes=3)
        while (item := cursor.next()) is not None:
            taken.append(item.id)
    assert sorted(taken) == list(range(10))
    extra = WorkloadCursor.for_process(items, cycle=False, index=3, processes=3)
    assert extra.next() is None, "an unexpected extra process must not ask anything twice"


def test_cycling_processes_start_at_different_offsets():
    items = _items(10)
    starts = [WorkloadCursor.for_process(items, cycle=True, index=i, processes=2).next().id for i in range(2)]
    assert starts == [0, 5]


def _record(error="", **kw):
    settings = recording.Settings(workload=None, records_dir=None, scenario="sc", step="u5", users_target=5)
    values = dict(worker="local", start=1.7e9, latency_s=0.25, status=200, response_bytes=120, cache="", active_users=5)
    values.update(kw)
    return recording.make_record(settings, WorkItem("q", "quality", 7), error=error, **values)


def test_records_have_the_schema_and_its_dtypes():
    frame = loadgen.records_frame([_record(), _record("http_5xx", status=500, start=1.6e9)])
    assert tuple(frame.columns) == RECORD_COLUMNS
    assert frame.dtypes.to_dict() == loadgen.empty_records().dtypes.to_dict()
    assert tuple(loadgen.empty_records().columns) == RECORD_COLUMNS
    assert frame["ok"].tolist() == [False, True], "sorted by start, ok derives from the error"
    assert frame.loc[1, "question_id"] == 7 and frame.loc[1, "mode"] == "quality" and frame.loc[1, "step"] == "u5"
    for column, dtype in RECORD_DTYPES.items():
        assert pd.api.types.is_dtype_equal(frame[column].dtype, pd.Series([], dtype=dtype).dtype), column
    with pytest.raises(ValueError, match="unknown error class"):
        _record("weird")


def test_sink_writes_records_that_read_back_and_skips_a_cut_line(tmp_path):
    sink = recording.RecordSink(tmp_path / "records-local-1.jsonl")
    for i in range(3):
        sink.add(_record(start=1.7e9 + i))
    assert sink.flush() == 3 and sink.count == 3
    with (tmp_path / "records-local-1.jsonl").open("a") as f:
        f.write('{"scenario": "cut sh')  # a process killed mid-write
    frame = loadgen.read_records(tmp_path)
    assert len(frame) == 3
    assert loadgen.read_records(tmp_path / "none").empty


def test_settings_travel_through_the_environment(tmp_path):
    settings = recording.Settings(tmp_path / "w.jsonl", tmp_path / "r", 2.5, False, "sc", "u8", 8, 12.5)
    assert recording.Settings.from_env(settings.to_env()) == settings
    with pytest.raises(ValueError, match="RAGPERF_WORKLOAD"):
        recording.Settings.from_env({})


def _cpu(process, values, running=True):
    return pd.DataFrame({"t": range(len(values)), "process": process, "cpu_percent": values, "running": running})


def test_generator_note_says_when_the_generator_was_saturated():
    busy = pd.concat([_cpu("locust", [20.0] + [97.0] * 8), _cpu("locust", [100.0] * 4, running=False)])
    note = loadgen.generator_note(busy)
    assert "saturated (97% CPU of one core)" in note and "add workers" in note
    assert loadgen.generator_note(_cpu("locust", [30.0, 95.0, 40.0, 35.0, 20.0, 10.0])) == ""
    startup_only = pd.concat([_cpu("locust", [100.0] * 4, running=False), _cpu("locust", [10.0] * 6)])
    assert loadgen.generator_note(startup_only) == "", "start-up CPU is not the test's"
    two = pd.concat([_cpu("master", [5.0] * 6), _cpu("worker-0", [99.0] * 6)])
    assert "in worker-0" in loadgen.generator_note(two, workers=1)
    assert loadgen.generator_note(pd.DataFrame(columns=["t", "process", "cpu_percent", "running"])) == ""


def test_importing_the_package_does_not_import_locust_or_gevent():
    code = (
        "import sys, ragperf.measure.loadgen as g; "
        "print(sorted(m for m in sys.modules if m.startswith(('locust', 'gevent'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bad_arguments_fail_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match="the workload is empty; users must be at least 1"):
        loadgen.run_load("http://x", [], users=0, duration_s=1, out_dir=tmp_path, scenario="s", step="t")
    assert not (tmp_path / "records").exists()
    with pytest.raises(ValueError, match="base_url"):
        loadgen.run_load("x:80", _items(1), users=1, duration_s=1, out_dir=tmp_path, scenario="s", step="t")


# --- integration: a tiny service of our own, and real Locust processes --------------------------


class FakeService:
    """Answers POST /ask like the real app after a short sleep; "boom" → 500, "bad" → bad body,
    "hit" → X-Cache-Status: HIT, "slow" → 2 s more."""

    def __init__(self):
        self.counts = Counter()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def ask(self, request):
        data = await request.json()
        question = data["question"]
        self.counts[question] += 1
        await asyncio.sleep(SERVER_SLEEP_S)
        if "slow" in question:
            await asyncio.sleep(2.0)
        if "boom" in question:
            return web.json_response({"detail": "internal error"}, status=500)
        if "bad" in question:
            return web.json_response({"detail": "no answer here"})
        headers = {"X-Cache-Status": "HIT"} if "hit" in question else {}
        body = {"answer": f"About {question}", "sources": [{"id": 1}], "mode": data.get("mode", "fast")}
        return web.json_response(body, headers=headers)

    def start(self):
        app = web.Application()
        app.router.add_post("/ask", self.ask)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.thread.start()
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def service():
    svc = FakeService()
    url = svc.start()
    yield svc, url
    svc.stop()


MIXED = [WorkItem(f"question {i}", "fast", i) for i in range(6)] + [
    WorkItem("boom please", "fast", 100),
    WorkItem("a bad one", "quality", 101),
    WorkItem("hit me", "fast", 102),
    WorkItem("slow one", "quality", 103),
]


@pytest.fixture(scope="module")
def mixed_run(service, tmp_path_factory):
    svc, url = service
    before = Counter(svc.counts)
    out = tmp_path_factory.mktemp("mixed")
    started = time.monotonic()
    result = loadgen.run_load(
        url, MIXED, users=5, duration_s=5.0, out_dir=out, scenario="unit", step="users=5", timeout_s=1.0, progress=False
    )
    return result, svc.counts - before, time.monotonic() - started


def _gone(pids):
    return all(not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE for pid in pids)


def test_run_load_records_one_row_per_request(mixed_run):
    result, served, wall = mixed_run
    parquet = pd.read_parquet(result.out_dir / "requests.parquet")
    assert len(parquet) == len(result.records) == sum(served.values()) > 50
    assert tuple(parquet.columns) == RECORD_COLUMNS
    assert parquet["ok"].dtype == bool and parquet["status"].dtype == "int64"
    assert result.exit_code == 0
    assert 4.0 < result.duration_s < 7.0 and wall < 20
    assert set(result.records["scenario"]) == {"unit"} and set(result.records["step"]) == {"users=5"}
    assert set(result.records["users_target"]) == {5} and result.records["active_users"].between(1, 5).all()
    assert set(result.records["worker"]) == {"local"}
    assert {"t", "cpu_percent"} <= set(result.generator_cpu.columns) and len(result.generator_cpu) >= 5


def test_run_load_classifies_each_outcome(mixed_run):
    records = mixed_run[0].records
    by_id = {qid: group for qid, group in records.groupby("question_id")}
    assert set(by_id) == {item.id for item in MIXED}
    expect = {100: ("http_5xx", 500), 101: ("bad_body", 200), 103: ("timeout", 0), 102: ("", 200), 0: ("", 200)}
    for qid, (error, status) in expect.items():
        assert set(by_id[qid]["error"]) == {error}, qid
        assert set(by_id[qid]["status"]) == {status}, qid
        assert by_id[qid]["ok"].all() == (error == "")
    assert set(by_id[102]["cache_status"]) == {"HIT"}
    assert set(records.loc[records["question_id"] != 102, "cache_status"]) == {""}
    assert set(by_id[101]["mode"]) == {"quality"}
    assert (by_id[0]["response_bytes"] > 20).all()


def test_latencies_are_exact_and_not_below_the_service_time(mixed_run):
    records = mixed_run[0].records
    assert (records["latency_s"] >= SERVER_SLEEP_S).all()
    slow = records[records["error"] == "timeout"]
    assert slow["latency_s"].between(1.0, 1.5).all(), "a timeout ends at the configured timeout"
    fast = records[records["ok"]]["latency_s"]
    assert fast.median() < 0.5
    assert fast.round(6).nunique() > 10, "exact perf_counter latencies, not Locust's rounded ones"


def test_locust_processes_are_gone_after_the_run(mixed_run):
    result = mixed_run[0]
    assert len(result.pids) == 1
    assert _gone(result.pids)


def test_non_cycling_run_asks_each_item_once_and_stops_when_done(service, tmp_path):
    svc, url = service
    before = Counter(svc.counts)
    items = [WorkItem(f"once {i}", "fast", i) for i in range(13)]
    started = time.monotonic()
    result = loadgen.run_load(
        url, items, users=3, duration_s=30.0, out_dir=tmp_path, scenario="s", step="once", cycle=False, progress=False
    )
    served = svc.counts - before
    assert served == Counter({item.question: 1 for item in items})
    assert sorted(result.records["question_id"]) == list(range(13))
    assert result.records["ok"].all()
    assert time.monotonic() - started < 15, "the test must end when the workload is used up"
    assert _gone(result.pids)


def test_run_with_a_worker_process_records_through_the_master(service, tmp_path):
    svc, url = service
    before = Counter(svc.counts)
    result = loadgen.run_load(
        url, MIXED[:6], users=3, duration_s=3.0, out_dir=tmp_path, scenario="s", step="w1", workers=1, progress=False
    )
    served = svc.counts - before
    assert len(result.records) == sum(served.values()) > 20
    assert result.records["worker"].str.startswith("worker-0@").all()
    assert result.records["ok"].all()
    assert len(result.pids) == 2 and _gone(result.pids)
    assert set(result.generator_cpu["process"]) == {"master", "worker-0"}


def test_a_closed_port_gives_connection_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: refused
        result = loadgen.run_load(
            f"http://127.0.0.1:{port}", _items(3), users=2, duration_s=1.5, out_dir=tmp_path, scenario="s", step="x",
            progress=False,
        )  # fmt: skip
    assert len(result.records) > 0
    assert set(result.records["error"]) == {"connection_refused"}
    assert set(result.records["status"]) == {0} and not result.records["ok"].any()


def test_a_locust_that_cannot_start_is_an_error_with_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "LOCUSTFILE", tmp_path / "missing_locustfile.py")
    with pytest.raises(loadgen.LoadgenError, match="recorded nothing"):
        loadgen.run_load("http://127.0.0.1:9", _items(1), users=1, duration_s=1, out_dir=tmp_path, scenario="s",
                         step="x", progress=False)  # fmt: skip


def _wait_for(condition, what, limit_s=60.0):
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


def test_a_stop_event_ends_the_test_early_and_keeps_its_records(service, tmp_path):
    svc, url = service
    before = Counter(svc.counts)
    stop, outcome = threading.Event(), {}

    def run():
        outcome["result"] = loadgen.run_load(url, MIXED[:6], users=2, duration_s=120.0, out_dir=tmp_path, scenario="s",
                                             step="stopped", progress=False, stop=stop)  # fmt: skip

    thread = threading.Thread(target=run)
    thread.start()
    _wait_for(lambda: len(engine.live_records(tmp_path / "records")) >= 5 or not thread.is_alive(), "live records")
    assert thread.is_alive(), "the test ended before it was stopped"
    seen = len(engine.live_records(tmp_path / "records"))
    stop.set()
    thread.join(60)
    assert not thread.is_alive(), "run_load did not return after the stop event"
    result = outcome["result"]
    assert result.stopped
    assert seen <= len(result.records) <= sum((svc.counts - before).values())
    assert result.duration_s < 60, "the test ran on to its full duration"
    assert len(pd.read_parquet(tmp_path / "requests.parquet")) == len(result.records)
    assert _gone(result.pids)


def test_live_records_read_a_line_in_progress_without_a_warning(tmp_path, caplog):
    sink = recording.RecordSink(tmp_path / "records-local-1.jsonl")
    sink.add(_record(start=1.7e9))
    sink.flush()
    with (tmp_path / "records-local-1.jsonl").open("a") as f:
        f.write('{"scenario": "half wri')
    with caplog.at_level("WARNING"):
        assert len(engine.live_records(tmp_path)) == 1
    assert not caplog.records
    assert engine.live_records(tmp_path / "none").empty
