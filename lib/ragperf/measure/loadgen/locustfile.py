"""Locust users that ask the RAG service questions and record every request exactly.

Started by :func:`ragperf.measure.loadgen.run_load` (never imported into a notebook: importing Locust
monkey-patches the process with gevent). Users are closed-loop (think time 0) FastHttpUsers that
POST /ask with the next item of the workload. Every request becomes one record (see
``recording.RECORD_COLUMNS``) with a latency measured by time.perf_counter, not Locust's rounded stats.

Settings come from environment variables: RAGPERF_WORKLOAD (workload JSONL), RAGPERF_RECORDS_DIR,
RAGPERF_TIMEOUT, RAGPERF_CYCLE, RAGPERF_SCENARIO, RAGPERF_STEP, RAGPERF_USERS, RAGPERF_DURATION.
The master (or the single local process) stops the test after RAGPERF_DURATION seconds, or as soon as
a non-cycling workload is used up; Locust's own ``-t`` is only a backstop.

Workers on other machines: see the docstring of ``ragperf.measure.loadgen``. Workers send their records to
the master in batches (a custom Locust message), so every record ends up in the master's records directory.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import gevent
from locust import FastHttpUser, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

from ragperf.measure.loadgen import recording
from ragperf.measure.workload import read_workload_jsonl

log = logging.getLogger(__name__)

MSG_RECORDS = "ragperf_records"
MSG_EXHAUSTED = "ragperf_exhausted"
FLUSH_INTERVAL_S = 1.0
STATUS_INTERVAL_S = 0.5


class _State:
    """This process's part of the test: settings, records, workload cursor."""

    def __init__(self, environment) -> None:
        self.environment = environment
        self.runner = environment.runner
        self.settings = recording.Settings.from_env(os.environ)
        self.role = _role(self.runner)
        host = socket.gethostname()
        self.worker = "local" if self.role == "local" else f"{self.role}@{host}"  # a worker's index comes later
        path = None
        if self.role != "worker":  # workers send their records to the master
            path = self.settings.records_dir / f"records-{self.role}-{host}-{os.getpid()}.jsonl"
        self.sink = recording.RecordSink(path)
        self.cursor: recording.WorkloadCursor | None = None
        self.exhausted_sent = False
        self.exhausted_workers: set[str] = set()
        self.finishing = False

    def flush(self) -> None:
        """Write (local, master) or send to the master (worker) the buffered records."""
        batch = self.sink.take()
        if not batch:
            return
        if self.role == "worker":
            self.runner.send_message(MSG_RECORDS, batch)
            self.sink.count += len(batch)
        else:
            self.sink.write(batch)

    def finish(self, reason: str) -> None:
        """Stop the test gracefully (in-flight requests complete), then quit. Local process or master only."""
        if self.finishing:
            return
        self.finishing = True
        log.info("stopping the test: %s", reason)
        self.runner.stop()
        self.flush()
        self.runner.quit()

    def on_exhausted(self) -> None:
        """This process has handed out its whole (non-cycling) workload."""
        if self.exhausted_sent:
            return
        self.exhausted_sent = True
        if self.role == "worker":
            self.runner.send_message(MSG_EXHAUSTED, {"worker": self.worker})
        else:
            gevent.spawn(self.finish, "workload exhausted")


_state: _State | None = None


def _role(runner) -> str:
    if isinstance(runner, MasterRunner):
        return "master"
    if isinstance(runner, WorkerRunner):
        return "worker"
    return "local"


@events.init.add_listener
def _on_init(environment, **_kwargs) -> None:
    global _state
    _state = _State(environment)
    state = _state
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(MSG_RECORDS, _on_worker_records)
        environment.runner.register_message(MSG_EXHAUSTED, _on_worker_exhausted)
    if not isinstance(environment.runner, WorkerRunner):
        gevent.spawn(_report_status, state)


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    state = _state
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        state.worker = f"worker-{max(runner.worker_index, 0)}@{socket.gethostname()}"
    if not isinstance(runner, MasterRunner):
        items = read_workload_jsonl(state.settings.workload)
        index, processes = 0, 1
        if isinstance(runner, WorkerRunner):
            index = max(runner.worker_index, 0)
            processes = int(getattr(environment.parsed_options, "expect_workers", 1) or 1)
        state.cursor = recording.WorkloadCursor.for_process(
            items, cycle=state.settings.cycle, index=index, processes=processes
        )
        log.info("%s: %d work items, cycle=%s", state.worker, len(state.cursor.items), state.settings.cycle)
        gevent.spawn(_flush_periodically, state)
    if not isinstance(runner, WorkerRunner) and state.settings.duration_s > 0:
        gevent.spawn_later(state.settings.duration_s, state.finish, "duration reached")


@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs) -> None:
    state = _state
    state.flush()
    if isinstance(environment.runner, WorkerRunner):
        # A stopped worker would otherwise idle for --stop-timeout before it reads the master's quit.
        gevent.spawn_later(1.0, environment.runner.quit)


@events.quitting.add_listener
def _on_quitting(environment, **_kwargs) -> None:
    if _state is not None and _state.role != "worker":
        _state.flush()
        _write_status(_state)


def _on_worker_records(environment, msg, **_kwargs) -> None:
    # The master's names win, so a remote worker started without RAGPERF_SCENARIO etc. still records right.
    settings = _state.settings
    for record in msg.data:
        record.update(scenario=settings.scenario, step=settings.step, users_target=settings.users_target)
    _state.sink.write(msg.data)


def _on_worker_exhausted(environment, msg, **_kwargs) -> None:
    state = _state
    state.exhausted_workers.add(msg.node_id)
    expected = int(getattr(environment.parsed_options, "expect_workers", 1) or 1)
    if len(state.exhausted_workers) >= expected:
        gevent.spawn(state.finish, "workload exhausted on every worker")


def _flush_periodically(state: _State) -> None:
    while True:
        gevent.sleep(FLUSH_INTERVAL_S)
        try:
            state.flush()
        except Exception:  # a lost batch must not stop the users
            log.exception("could not flush records")


def _report_status(state: _State) -> None:
    while True:
        try:
            _write_status(state)
        except OSError:
            log.exception("could not write the status file")
        gevent.sleep(STATUS_INTERVAL_S)


def _write_status(state: _State) -> None:
    recording.write_status(
        state.settings.records_dir / "status.json",
        state=str(state.runner.state),
        users=int(state.runner.user_count),
        requests=int(state.sink.count),
        time=time.time(),
    )


class AskUser(FastHttpUser):
    """A user who asks the next question of the workload as soon as the last answer arrived."""

    wait_time = constant(0)
    network_timeout = float(os.environ.get(recording.ENV_TIMEOUT) or 30.0)
    connection_timeout = float(os.environ.get(recording.ENV_TIMEOUT) or 30.0)

    @task
    def ask(self) -> None:
        """POST /ask with the next work item and record the outcome."""
        state = _state
        item = state.cursor.next() if state.cursor is not None else None
        if item is None:
            state.on_exhausted()
            gevent.sleep(0.1)  # until the stop arrives
            return
        active = self.environment.runner.user_count
        payload = {"question": item.question, "mode": item.mode}
        start = time.time()
        t0 = time.perf_counter()
        try:
            with self.client.post("/ask", json=payload, name=f"/ask {item.mode}", catch_response=True) as resp:
                latency = time.perf_counter() - t0
                record = _record(state, item, resp, start, latency, active)
                if record["ok"]:
                    resp.success()
                else:
                    resp.failure(record["error"])
        except Exception as exc:  # anything geventhttpclient raised outside Locust's own net
            latency = time.perf_counter() - t0
            error = recording.classify_exception(exc)
            record = recording.make_record(
                state.settings,
                item,
                worker=state.worker,
                start=start,
                latency_s=latency,
                status=0,
                error=error,
                response_bytes=0,
                cache="",
                active_users=active,
            )
        state.sink.add(record)


def _record(state: _State, item, resp, start: float, latency: float, active: int) -> dict:
    status = int(resp.status_code or 0)
    exception = resp.request_meta.get("exception") or getattr(resp, "error", None)
    try:
        body = resp.content
    except Exception as exc:  # the body could not be read: the transport error says why
        body, exception = None, exception or exc
    error = recording.classify(status, exception, body, latency, state.settings.timeout_s)
    return recording.make_record(
        state.settings,
        item,
        worker=state.worker,
        start=start,
        latency_s=latency,
        status=status,
        error=error,
        response_bytes=int(resp.request_meta.get("response_length") or 0),
        cache=recording.cache_status(resp.headers),
        shared_cache=recording.shared_cache_status(resp.headers),
        active_users=active,
    )
