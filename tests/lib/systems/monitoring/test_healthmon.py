"""The health monitor: bounded in time and memory, every sample on disk, metrics that add up (real processes).

The service it probes is a tiny HTTP app in a thread of the test process, so the test knows what it answered.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ragperf.core import procs
from ragperf.measure.metrics import CACHE_HIT_STATUSES
from ragperf.systems.monitoring import healthmon
from ragperf.systems.monitoring.healthmon import (
    COLUMNS,
    STANDARD_BUCKETS,
    HealthMonApplier,
    HealthMonConfig,
    HealthMonError,
    HealthMonServer,
    SampleBuffer,
    buckets_with,
    is_ask,
    plan,
    read_samples,
    served_by,
)


class App:
    """A stand-in of the RAG service. /ask answers each question with cache headers that depend on its number
    (q<n>: n % 3 == 0 an nginx HIT, 1 a Redis HIT, 2 a MISS that reached the app) and counts what it served."""

    HEADERS = ({"X-Cache-Status": "HIT"}, {"X-Cache-Status": "MISS", "X-Shared-Cache-Status": "HIT"},
               {"X-Shared-Cache-Status": "MISS"})  # fmt: skip
    LAYER = ("nginx", "redis", "app")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.questions: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.health = 0
        self.health_status = 200
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each answer waits for a delayed ACK (40 ms)

            def reply(self, code: int, data: dict, headers: dict[str, str] | None = None) -> None:
                body = json.dumps(data).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                with app.lock:
                    app.health += 1
                self.reply(app.health_status, {"status": "ok"})

            def do_POST(self) -> None:  # noqa: N802
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.path == "/ask" and data["mode"] == "fast"
                n = int(data["question"][1:])
                with app.lock:
                    app.questions[data["question"]] += 1
                    app.served[app.LAYER[n % 3]] += 1
                self.reply(200, {"answer": f"echo {data['question']}", "sources": []}, app.HEADERS[n % 3])

            def log_message(self, format, *args) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def received(self) -> int:
        with self.lock:
            return self.health + sum(self.questions.values())


@pytest.fixture
def app():
    app = App()
    app.thread.start()
    try:
        yield app
    finally:
        app.server.shutdown()
        app.server.server_close()


def pool(path: Path, n: int) -> Path:
    """A lab question pool of ``n`` questions q0..q<n-1> (JSONL with id and question)."""
    path.write_text("".join(json.dumps({"id": i, "question": f"q{i}"}) + "\n" for i in range(n)))
    return path


def cfg_for(tmp_path: Path, url: str, **kw) -> HealthMonConfig:
    values = {"base_url": url, "questions_file": pool(tmp_path / "pool.jsonl", 60),
              "out_path": tmp_path / "out" / "probes.parquet", "listen_port": procs.free_port(),
              "state_dir": tmp_path / "healthmon", "interval_s": 0.002, "buffer": 10, "timeout_s": 5.0}  # fmt: skip
    return HealthMonConfig(**{**values, **kw})


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page by (name, sorted labels)."""
    text = httpx.get(f"{url}/metrics", timeout=5, trust_env=False).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def by_label(samples: dict, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: v for (n, labels), v in samples.items() if n == name}


# -- pure parts ---------------------------------------------------------------------------------------------


def test_the_ring_buffer_never_holds_more_than_its_size_and_never_drops():
    batches: list[list[int]] = []
    buffer = SampleBuffer(10, lambda batch: batches.append([s["i"] for s in batch]))
    for i in range(25):
        buffer.add({"i": i})
        assert len(buffer) < 10  # a full buffer is flushed at once
    assert batches == [list(range(10)), list(range(10, 20))]
    assert len(buffer) == 5 and buffer.max_seen == 10
    buffer.flush()
    assert batches[-1] == list(range(20, 25)) and len(buffer) == 0
    buffer.flush()  # empty: nothing to write
    assert len(batches) == 3

    def broken(batch):
        raise OSError("disk full")

    kept = SampleBuffer(3, broken)
    kept.add({"i": 0})
    kept.add({"i": 1})
    with pytest.raises(OSError):
        kept.add({"i": 2})
    assert len(kept) == 3  # a failed write loses nothing


def test_served_by_follows_the_load_tests_rule():
    assert healthmon.NGINX_HIT_STATUSES == CACHE_HIT_STATUSES
    assert served_by("HIT", "MISS") == "nginx"
    assert served_by("STALE", "") == "nginx"
    assert served_by("MISS", "HIT") == "redis"
    assert served_by("", "COALESCED") == "coalesced"
    assert served_by("MISS", "MISS") == "app"
    assert served_by("", "BYPASS") == "app"
    assert served_by("", "") == "none"


def test_asks_are_spread_evenly():
    assert sum(is_ask(i, 0.5) for i in range(300)) == 150
    assert [is_ask(i, 0.5) for i in range(4)] == [False, True, False, True]
    assert sum(is_ask(i, 0.3) for i in range(10)) == 3
    assert not any(is_ask(i, 0.0) for i in range(50)) and all(is_ask(i, 1.0) for i in range(50))


def test_buckets_take_the_slos_bound():
    assert buckets_with(1.2) == tuple(sorted((*STANDARD_BUCKETS, 1.2)))
    assert buckets_with(1.5) == STANDARD_BUCKETS  # already there


def test_config_checks_each_field(tmp_path):
    cfg = cfg_for(tmp_path, "http://127.0.0.1:8080/", max_probes=5)
    assert cfg.base_url == "http://127.0.0.1:8080" and cfg.buckets == STANDARD_BUCKETS
    assert HealthMonConfig.from_dict(cfg.to_dict()) == cfg
    argv = cfg.argv()
    assert argv[argv.index("--max-probes") + 1] == "5" and "--duration" not in argv
    with pytest.raises(ValueError, match="duration_s, max_probes"):
        cfg_for(tmp_path, "http://127.0.0.1:8080")
    for kw, field in (
        ({"buffer": 9}, "buffer"),
        ({"ask_share": 1.5}, "ask_share"),
        ({"interval_s": 0}, "interval_s"),
        ({"duration_s": -1}, "duration_s"),
        ({"max_probes": 0}, "max_probes"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"buckets": (1.0, 0.5)}, "buckets"),
        ({"out_path": tmp_path / "probes.csv"}, "out_path"),
        ({"listen_host": "::1"}, "listen_host"),
        ({"base_url": "ftp://127.0.0.1:21"}, "base_url"),
    ):
        with pytest.raises(ValueError, match=field):
            cfg_for(tmp_path, "http://127.0.0.1:8080", **{"max_probes": 5, **kw})
    with pytest.raises(ValueError, match="base_url") as err:
        cfg_for(tmp_path, "http://probe:s3cret@127.0.0.1:8080", max_probes=5)
    assert "s3cret" not in str(err.value)


def test_the_program_refuses_to_run_unbounded(tmp_path, capsys):
    argv = ["--base-url", "http://127.0.0.1:1", "--questions", str(pool(tmp_path / "p.jsonl", 3)),
            "--out", str(tmp_path / "o.parquet"), "--listen-port", str(procs.free_port())]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        healthmon.main(argv)
    assert exit_.value.code == 2 and "--duration or --max-probes" in capsys.readouterr().err
    assert not (tmp_path / "o.parquet").exists()


def test_plan(tmp_path):
    cfg = cfg_for(tmp_path, "http://127.0.0.1:8080", duration_s=60.0, max_probes=100)
    assert plan(cfg, cfg) == []
    (start,) = plan(None, cfg)
    assert start.kind == "healthmon" and start.before is None and start.after == cfg.to_dict()
    assert "60 s or 100 probes" in start.reason and "at most 10 samples in memory" in start.reason
    (stop,) = plan(cfg, None)
    assert stop.after is None and "samples file stays" in stop.reason


def test_start_refuses_a_question_pool_it_cannot_read(tmp_path):
    cfg = cfg_for(tmp_path, "http://127.0.0.1:8080", max_probes=5)
    cfg.questions_file.write_text("")
    with pytest.raises(HealthMonError, match="questions_file"):
        HealthMonServer(cfg.state_dir).start(cfg)
    assert not HealthMonServer(cfg.state_dir).running
    with pytest.raises(HealthMonError, match="no complete samples file"):
        read_samples(cfg.out_path)


# -- the program, as ragperf runs it -----------------------------------------------------------------------


def test_300_probes_with_a_buffer_of_10_all_reach_the_file_and_the_metrics_add_up(tmp_path, app):
    cfg = cfg_for(tmp_path, app.url, max_probes=300)
    applier = HealthMonApplier()
    (change,) = plan(None, cfg)
    server = HealthMonServer(cfg.state_dir)
    try:
        applier.apply([change])
        final = server.wait_finished(timeout=120)
        assert final["probes"] == 300 and final["written"] == 300 and final["running"] is False
        m = scrape(cfg.url)  # it keeps serving the final counts after probing
        assert server.running
    finally:
        applier.undo([change])
    assert not server.running and procs.port_is_free(cfg.listen_port)

    requests = {
        (dict(k)["endpoint"], dict(k)["code"]): v for (n, k), v in m.items() if n == "ragperf_probe_requests_total"
    }
    assert requests == {("health", "200"): 150, ("ask", "200"): 150}
    assert app.health == 150 and sum(app.questions.values()) == 150
    durations = by_label(m, "ragperf_probe_duration_seconds_count", "endpoint")
    assert durations == {"health": 150, "ask": 150}
    inf = {dict(k)["endpoint"]: v for (n, k), v in m.items()
           if n == "ragperf_probe_duration_seconds_bucket" and dict(k)["le"] == "+Inf"}  # fmt: skip
    assert inf == durations
    served = by_label(m, "ragperf_probe_served_total", "by")
    assert served == {"nginx": app.served["nginx"], "redis": app.served["redis"], "app": app.served["app"],
                      "coalesced": 0, "none": 150}  # fmt: skip
    assert by_label(m, "ragperf_probe_up", "endpoint") == {"health": 1, "ask": 1}
    assert m[("ragperf_probe_samples_written_total", ())] == 300
    assert m[("ragperf_probe_samples_buffered", ())] == 0
    assert m[("ragperf_probe_samples_buffered_max", ())] == 10  # never more than the buffer
    assert m[("ragperf_probe_running", ())] == 0

    # Questions rotate: every one of the pool's 60 asked, evenly (150 asks: 2 or 3 times each).
    assert len(app.questions) == min(60, 150)
    assert set(app.questions.values()) == {2, 3}

    frame = read_samples(cfg.out_path)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 300
    assert pq.ParquetFile(cfg.out_path).num_row_groups == 30  # one row group per flush of 10
    assert sorted(frame["seq"]) == list(range(300))
    assert frame["ok"].all() and (frame["status"] == 200).all() and (frame["error"] == "").all()
    asks = frame[frame["endpoint"] == "ask"]
    assert (
        set(asks["question_id"]) == set(range(60))
        and (frame.loc[frame["endpoint"] == "health", "question_id"] == -1).all()
    )
    assert frame["served_by"].value_counts().to_dict() == {k: v for k, v in served.items() if v}
    assert set(asks["cache_status"]) == {"HIT", "MISS", ""} and set(asks["shared_cache_status"]) == {"HIT", "MISS", ""}
    assert (frame["latency_s"] > 0).all() and frame["t"].is_monotonic_increasing
    assert not cfg.out_path.with_name(cfg.out_path.name + ".partial").exists()


def test_no_answer_is_code_0_and_a_duration_ends_probing(tmp_path):
    closed = procs.free_port()  # nothing listens there
    cfg = cfg_for(tmp_path, f"http://127.0.0.1:{closed}", duration_s=0.6, interval_s=0.05, timeout_s=1.0)
    server = HealthMonServer(cfg.state_dir)
    try:
        server.start(cfg)
        final = server.wait_finished(timeout=60)
        m = scrape(cfg.url)
    finally:
        server.stop()
    frame = read_samples(cfg.out_path)
    assert final["probes"] == len(frame) >= 1
    requests = by_label(m, "ragperf_probe_requests_total", "code")
    assert set(requests) == {"0"} and sum(v for (n, _), v in m.items() if n == "ragperf_probe_requests_total") == len(
        frame
    )
    assert (frame["status"] == 0).all() and not frame["ok"].any()
    assert set(frame["error"]) == {"ConnectError"} and set(frame["served_by"]) == {"none"}
    assert set(by_label(m, "ragperf_probe_up", "endpoint").values()) == {0}
    assert m[("ragperf_probe_served_total", (("by", "none"),))] == len(frame)
    assert not any(n == "ragperf_probe_duration_seconds_count" for n, _ in m)  # no answer, no latency


def test_sigterm_while_probing_writes_every_sample(tmp_path, app):
    cfg = cfg_for(tmp_path, app.url, max_probes=1_000_000, interval_s=0.005, ask_share=0.0)
    server = HealthMonServer(cfg.state_dir)
    try:
        server.start(cfg)
        procs.wait_until(lambda: None if server.health()["probes"] >= 35 else "not yet", timeout=60,
                         what="the monitor did not probe", proc=server.proc, interval=0.1)  # fmt: skip
        assert server.health()["running"] is True
    finally:
        server.stop()
    frame = read_samples(cfg.out_path)
    assert len(frame) == app.received >= 35  # the samples still in the buffer were written on SIGTERM
    assert (frame["endpoint"] == "health").all() and sorted(frame["seq"]) == list(range(len(frame)))
