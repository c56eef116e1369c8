import json
import signal
import sys
import time
from dataclasses import dataclass

from ragperf import changes, procs


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
