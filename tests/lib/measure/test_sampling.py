"""Sampling beside a load step: a busy process's CPU is seen, a restarted one followed, a broken probe dropped."""

from __future__ import annotations

import subprocess
import sys
import time

from ragperf.measure import sampling


def _spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_busy_process_uses_more_cpu_than_a_sleeping_one_and_a_restart_is_followed():
    busy, idle = _spawn("while True: pass"), _spawn("import time; time.sleep(60)")
    current = {"busy": busy}
    try:
        with sampling.Sampler({"busy": sampling.cpu_probe(lambda: [current["busy"].pid]),
                               "idle": sampling.cpu_probe(lambda: [idle.pid])}, interval_s=0.2) as sampler:  # fmt: skip
            time.sleep(1.5)
            busy.kill()
            busy.wait()
            current["busy"] = _spawn("while True: pass")
            time.sleep(1.5)
        frame = sampler.frame()
        summary = sampler.summary()
        assert summary["busy"] > summary["idle"] + 5
        late = frame[(frame["probe"] == "busy") & (frame["t"] > frame["t"].max() - 0.7)]
        assert len(late) and late["value"].max() > 5  # the new process is sampled
        assert set(frame.columns) == {"t", "probe", "value"} and summary["busy_max"] >= summary["busy"]
    finally:
        for proc in (current["busy"], idle):
            proc.kill()
            proc.wait()


def test_a_probe_that_fails_is_dropped_and_the_others_go_on():
    calls = {"n": 0}

    def broken() -> float:
        raise RuntimeError("no such thing")

    def counter() -> float:
        calls["n"] += 1
        return float(calls["n"])

    with sampling.Sampler({"broken": broken, "counter": counter}, interval_s=0.05) as sampler:
        time.sleep(0.4)
    frame = sampler.frame()
    assert set(frame["probe"]) == {"counter"} and calls["n"] >= 3
    assert sampler.summary(start=frame["t"].max())["counter"] == frame["value"].max()


def test_a_process_that_is_gone_reads_as_nothing():
    proc = _spawn("pass")
    proc.wait()
    probe = sampling.cpu_probe(lambda: [proc.pid])
    assert probe() is None and probe() is None


def test_children_that_live_a_moment_and_are_reaped_are_counted_with_their_parent():
    # like PostgreSQL's backend of a connection per request: each child busy for 50 ms, then reaped
    spawner = _spawn(
        "import subprocess, sys\n"
        "busy = 'import time\\nt = time.time()\\nwhile time.time() - t < 0.05: pass'\n"
        "while True:\n"
        "    subprocess.run([sys.executable, '-c', busy])"
    )
    try:
        with sampling.Sampler({"with": sampling.cpu_probe(lambda: [spawner.pid]),
                               "without": sampling.cpu_probe(lambda: [spawner.pid], children=False)},
                              interval_s=0.5) as sampler:  # fmt: skip
            time.sleep(3)
        summary = sampler.summary()
        assert summary["with"] > 2 * summary["without"] and summary["with"] > 10
    finally:
        spawner.kill()
        spawner.wait()
