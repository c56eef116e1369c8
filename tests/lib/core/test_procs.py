import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from ragperf.core import changes, procs
from ragperf.core.procs import log_tail


def _sleeper(tmp_path):
    return procs.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "s.log")


def test_start_records_a_live_process_and_stop_ends_it(tmp_path):
    proc = _sleeper(tmp_path)
    assert procs.is_alive(proc)
    assert procs.stop(proc, timeout=5)
    assert not procs.is_alive(proc)
    assert procs.stop(proc) is False  # already gone: nothing is signalled


def test_a_reused_pid_is_not_ours(tmp_path):
    proc = _sleeper(tmp_path)
    try:
        impostor = procs.Proc(proc.name, proc.pid, proc.start_ticks + 1, proc.argv, proc.log)
        assert not procs.is_alive(impostor)
        assert procs.stop(impostor) is False
        assert procs.is_alive(proc), "stop() signalled a process that was not the recorded one"
    finally:
        procs.stop(proc)


def test_stubborn_process_is_killed_after_the_timeout(tmp_path):
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    proc = procs.start("stubborn", [sys.executable, "-c", code], tmp_path / "x.log")
    deadline = time.monotonic() + 10
    while "ready" not in (tmp_path / "x.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert procs.stop(proc, sig=signal.SIGTERM, timeout=0.5)
    assert not procs.is_alive(proc)


def test_free_port_is_bindable():
    port = procs.free_port()
    assert procs.port_is_free(port)


def test_record_round_trips_through_json(tmp_path):
    proc = procs.Proc("x", 1, 2, ["a"], "log", 80, {"k": "v"})
    assert procs.Proc.from_json(proc.to_json()) == proc


@dataclass(frozen=True)
class _Settings(changes.Config):
    seconds: int
    hosts: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts", tuple(self.hosts))  # JSON gives a list back


class _Sleeper(procs.Recorded):
    RECORD = "sleeper.json"
    CONFIG = _Settings


def test_a_recorded_server_is_seen_and_stopped_from_its_record_alone(tmp_path):
    cfg = _Settings(60, ("127.0.0.1",))
    proc = procs.start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "sleep.log")
    _Sleeper(tmp_path)._save_record(proc, cfg, note="kept")
    other = _Sleeper(tmp_path)  # another object, as another Python process would build it
    assert other.running and other.proc == proc and other.config == cfg
    assert json.loads(other.record_path.read_text())["note"] == "kept"
    assert procs.stop(other.proc) and not other.running and other.config is None
    (tmp_path / "sleeper.json").write_text("{not json")
    assert other.proc is None and not other.running


def test_write_atomic_replaces_the_whole_file(tmp_path):
    path = tmp_path / "conf"
    path.write_text("old")
    procs.write_atomic(path, "new text")
    assert path.read_text() == "new text" and [p.name for p in tmp_path.iterdir()] == ["conf"]


# -- wait_until: the one polling loop -----------------------------------------------------------------------


def test_wait_until_returns_once_the_probe_is_satisfied_and_probes_at_least_once():
    answers = iter(["cold", "warm", None])
    procs.wait_until(lambda: next(answers), timeout=10, what="the oven did not heat", interval=0.01)
    assert next(answers, "all used") == "all used"
    calls = []
    with pytest.raises(procs.ProcessError, match=r"^the oven did not heat within 0 s \(still cold\)$"):
        procs.wait_until(lambda: calls.append(1) or "still cold", timeout=0, what="the oven did not heat")
    assert calls == [1]
    with pytest.raises(KeyError, match="x"):  # the caller's own error class
        procs.wait_until(lambda: "no", timeout=0, what="x", error=KeyError)


def test_wait_until_fails_early_with_the_log_tail_when_the_process_dies(tmp_path):
    code = "import time; print('giving up: no such table', flush=True); time.sleep(0.3)"
    proc = procs.start("quitter", [sys.executable, "-c", code], tmp_path / "quitter.log")
    started = time.monotonic()
    expected = r"^quitter did not answer: quitter \(pid \d+\) exited; its log "
    with pytest.raises(procs.ProcessError, match=expected) as err:
        procs.wait_until(lambda: "no answer", timeout=60, what="quitter did not answer", proc=proc)
    assert time.monotonic() - started < 30, "it waited for the deadline instead of failing when the process died"
    assert "giving up: no such table" in str(err.value)


# -- Server: the one life cycle --------------------------------------------------------------------------

# A toy server: reads toy.conf from its state directory, sleeps ready_after_s seconds, then answers every GET
# with the file's text.
TOY = r"""
import http.server, pathlib, sys, time
state, port, delay = pathlib.Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
text = (state / "toy.conf").read_text()
print("toy read its configuration", flush=True)
time.sleep(delay)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


@dataclass(frozen=True)
class _ToyConfig(changes.Config):
    listen_port: int
    state_dir: Path
    greeting: str = "hello"
    ready_after_s: float = 0.0
    listen_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir))

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.listen_port}/"


class _Toy(procs.Server):
    NAME = "toy"
    WHAT = "toy server"
    RECORD = "toy.json"
    LOG = "toy.log"
    CONFIG = _ToyConfig
    TIMEOUT = 10.0
    STOP_TIMEOUT = 5.0
    waited_for: procs.Proc | None = None

    def files(self, cfg: _ToyConfig) -> dict[str, str | None]:
        return {"toy.conf": cfg.greeting, "stale.pid": None}

    def check_files(self, files: Mapping[str, str]) -> None:
        if files["toy.conf"] == "bad":
            raise procs.ProcessError("toy.conf: 'bad' is not a greeting")

    def argv(self, cfg: _ToyConfig) -> list[str]:
        return [sys.executable, "-c", TOY, str(self.state_dir), str(cfg.listen_port), str(cfg.ready_after_s)]

    def ready(self, cfg: _ToyConfig) -> str | None:
        self.waited_for = self.proc  # the record is there before the wait
        return procs.http_ok(cfg.url)

    def record_extra(self, cfg: _ToyConfig, files: Mapping[str, str]) -> dict[str, object]:
        return {"greeting_bytes": len(files["toy.conf"])}


def _get(url: str) -> str:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as response:
        return response.read().decode()


def test_a_server_starts_is_found_by_another_instance_restarts_on_a_new_config_and_stops(tmp_path):
    cfg = _ToyConfig(procs.free_port(), tmp_path / "toy")
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "stale.pid").write_text("123")
    server = _Toy(cfg.state_dir)
    try:
        proc = server.start(cfg)
        assert _get(server.url) == "hello" and server.url == cfg.url
        assert not (cfg.state_dir / "stale.pid").exists()  # a file the server must not find is removed
        record = json.loads(server.record_path.read_text())
        assert record["config"] == cfg.to_dict() and record["greeting_bytes"] == 5
        assert "ragperf starts:" in server.log_path.read_text() and "toy read its configuration" in log_tail(proc)

        other = _Toy(cfg.state_dir)  # knows only the directory, as another Python process would
        assert other.running and other.proc == proc and other.config == cfg
        assert other.status() | {"config": None} == {
            "state_dir": str(cfg.state_dir), "running": True, "pid": proc.pid, "port": cfg.listen_port, "config": None,
        }  # fmt: skip
        assert other.start(cfg) == proc  # same configuration: left running

        changed = replace(cfg, greeting="bonjour")
        new = other.start(changed)  # another configuration: restarted
        assert new.pid != proc.pid and not procs.is_alive(proc)
        assert _get(server.url) == "bonjour" and server.config == changed

        procs.stop(new, sig=signal.SIGKILL, timeout=5)  # a crash: the record outlives its process
        assert not server.running and server.record_path.exists()
        again = server.start(changed)
        assert again.pid != new.pid and _get(server.url) == "bonjour"

        assert other.stop() is True
        assert not procs.is_alive(again) and not server.record_path.exists() and procs.port_is_free(cfg.listen_port)
        assert other.stop() is False and other.status()["running"] is False
        with pytest.raises(procs.ProcessError, match="no toy server runs from"):
            assert other.url
    finally:
        server.stop()


def test_a_start_refuses_another_state_directory_a_taken_port_and_a_rejected_config(tmp_path):
    server = _Toy(tmp_path / "toy")
    with pytest.raises(procs.ProcessError, match=r"^state_dir: the configuration names .*/elsewhere, this toy server"):
        server.start(_ToyConfig(procs.free_port(), tmp_path / "elsewhere"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(procs.ProcessError, match=rf"^listen_port: port {port} on 127.0.0.1 is taken"):
            server.start(_ToyConfig(port, tmp_path / "toy"))
    with pytest.raises(procs.ProcessError, match="'bad' is not a greeting"):
        server.start(_ToyConfig(procs.free_port(), tmp_path / "toy", greeting="bad"))
    assert not (tmp_path / "toy" / "toy.conf").exists() and not server.log_path.exists()  # nothing written
    assert not server.running and server.proc is None


def test_a_server_that_does_not_get_ready_is_stopped_and_the_error_shows_its_log(tmp_path):
    cfg = _ToyConfig(procs.free_port(), tmp_path / "toy", ready_after_s=60)
    server = _Toy(cfg.state_dir, timeout=1.0)
    expected = rf"^toy did not get ready on 127.0.0.1:{cfg.listen_port} within 1 s \(.*\); its log "
    with pytest.raises(procs.ProcessError, match=expected) as err:
        server.start(cfg)
    assert "toy read its configuration" in str(err.value)  # the log's tail
    assert server.waited_for is not None and not procs.is_alive(server.waited_for)  # recorded, then stopped
    assert not server.record_path.exists() and not server.running


def test_the_record_is_there_while_it_waits_so_another_instance_can_stop_it(tmp_path):
    cfg = _ToyConfig(procs.free_port(), tmp_path / "toy", ready_after_s=60)
    server = _Toy(cfg.state_dir, timeout=60)
    failure: list[BaseException] = []

    def start() -> None:
        try:
            server.start(cfg)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=start)
    started = time.monotonic()
    thread.start()
    other = _Toy(cfg.state_dir)
    while not other.running and time.monotonic() - started < 10:
        time.sleep(0.02)
    assert other.stop() is True  # stopped by its recorded PID while the start still waits
    thread.join(timeout=30)
    assert not thread.is_alive() and time.monotonic() - started < 30  # the start failed at once, not at 60 s
    [exc] = failure
    assert isinstance(exc, procs.ProcessError) and re.search(r"toy \(pid \d+\) exited; its log ", str(exc))
    assert not server.running and not server.record_path.exists()


LEADER_EXITS_FIRST = """
import ctypes, socket, sys, threading, time
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
threading.Thread(target=time.sleep, args=(float(sys.argv[2]),)).start()
print("listening", flush=True)
ctypes.CDLL(None).pthread_exit(None)  # the main thread ends; the other one keeps the process and its socket
"""


def test_a_zombie_leader_whose_threads_still_run_is_alive_until_they_end(tmp_path):
    """A Go server's main thread can exit before its other threads, which still hold its listening socket: such a
    process is not gone yet, or a restart on its port would find the port taken."""
    port = procs.free_port()
    proc = procs.start("leader", [sys.executable, "-c", LEADER_EXITS_FIRST, str(port), "2"], tmp_path / "log")
    procs.wait_until(lambda: None if "listening" in (tmp_path / "log").read_text() else "not yet", timeout=10,
                     what="the child did not listen")  # fmt: skip
    procs.wait_until(lambda: None if Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] == "Z" else "no",
                     timeout=10, what="the main thread did not exit")  # fmt: skip
    assert procs.is_alive(proc) and not procs.port_is_free(port)
    procs.wait_until(lambda: None if not procs.is_alive(proc) else "threads left", timeout=15, what="it did not end")
    assert procs.port_is_free(port)


def test_unreachable_names_the_first_directory_another_user_cannot_enter():
    base = Path(tempfile.mkdtemp(prefix="ragperf-test-reach-", dir="/var/tmp"))  # pytest's own are private
    try:
        base.chmod(0o755)
        outer = base / "outer"
        inner = outer / "inner"
        inner.mkdir(parents=True)
        outer.chmod(0o700)
        stranger = os.getuid() + 4242  # neither the owner nor in its group
        assert procs.unreachable(inner, stranger, [stranger]) == outer
        assert procs.unreachable(inner, os.getuid(), [os.getgid()]) is None
        outer.chmod(0o711)
        assert procs.unreachable(inner, stranger, [stranger]) is None
    finally:
        shutil.rmtree(base)
