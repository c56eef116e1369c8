"""One run at a time on a target: a second run, a rollback or a lab reset is refused at once, naming the holder;
a holder that dies releases the target; a run's own children go on under its hold.

The holder is a real process that takes the lock through ragperf.core.targetlock and sleeps. No lab is needed:
the refusal comes before anything touches the lab.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ragperf import runs
from ragperf.core import changes, params, targetlock
from ragperf.runs import execute

HOLDER_RUN = "20261201T224003Z-0a80853-smoke"
HOLDER_COMMAND = "`ragperf run phase1`"
AT_ONCE_S = 30  # a refused command exits after its imports, never after the holder (which sleeps 300 s)
DSN = "host=db.example port=6543 dbname=rag_bidding_v2 user=sakana"

HOLDER = """
import sys, time
from ragperf.core import targetlock
target = targetlock.deployment_target(sys.argv[2]) if sys.argv[2] else targetlock.lab_target(sys.argv[1])
hold = targetlock.acquire(target, command=sys.argv[3], run_id=sys.argv[4])
print(hold.token, flush=True)
time.sleep(300)
"""

CHILD = """
import sys
from ragperf.core import targetlock
target = targetlock.lab_target(sys.argv[1])
if sys.argv[2] == "held":
    with targetlock.held(target, command="`child`") as hold:
        print("through" if hold is None else "own hold", flush=True)
else:
    print("through" if targetlock.hold_for_process(target, command="kernel") is None else "own hold", flush=True)
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A ``ragperf`` command's environment: a lab directory and outputs of the test's own, no inherited hold."""
    base = {k: v for k, v in os.environ.items() if k != targetlock.HOLD_ENV}
    (tmp_path / "lab").mkdir()
    return {**base, "RAGPERF_LAB_DIR": str(tmp_path / "lab"), "RAGPERF_OUTPUTS": str(tmp_path / "outputs"),
            "XDG_STATE_HOME": str(tmp_path / "state")}  # fmt: skip


@pytest.fixture
def spawn(env: dict[str, str]) -> Iterator:
    """Starts holder processes (stopped at the end, by their PID): ``spawn(dsn="")`` → (process, token)."""
    started: list[subprocess.Popen] = []

    def start(dsn: str = "") -> tuple[subprocess.Popen, str]:
        argv = [sys.executable, "-c", HOLDER, env["RAGPERF_LAB_DIR"], dsn, HOLDER_COMMAND, HOLDER_RUN]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        token = proc.stdout.readline().strip()
        assert token and proc.poll() is None, "the holder did not take the lock"
        return proc, token

    yield start
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()


@pytest.fixture
def holder(spawn) -> tuple[subprocess.Popen, str]:
    """A process holding the test's lab, as a ``ragperf run phase1`` would."""
    return spawn()


def _refused(done: subprocess.CompletedProcess, elapsed: float, holder: subprocess.Popen, label: str) -> None:
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert elapsed < AT_ONCE_S
    err = done.stderr
    assert err.startswith(f"ragperf: {label} is in use by run {HOLDER_RUN} (pid {holder.pid}, {HOLDER_COMMAND}, since ")
    assert " UTC): wait for it to finish, or stop that process; a holder that dies releases it" in err
    assert "Traceback" not in err


def _timed(ragperf, env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = ragperf(env, *args)
    return done, time.monotonic() - start


def _lab_label(env: dict[str, str]) -> str:
    return f"the lab in {Path(env['RAGPERF_LAB_DIR']).resolve()}"


def _recorded_run(env: dict[str, str], phase: str, monkeypatch: pytest.MonkeyPatch) -> runs.Run:
    """A run whose ``phase`` changed a setting on the lab and did not undo it (as an interrupted phase leaves it)."""
    monkeypatch.setenv(runs.OUTPUTS_ENV, env["RAGPERF_OUTPUTS"])
    run = runs.new_run("smoke")
    out = run.path / phase
    out.mkdir()
    recorded = {**params.load("smoke", "lab").model_dump(mode="json"), "target_name": "lab"}
    (out / "params.yaml").write_text(yaml.safe_dump(recorded))
    change = changes.Change("setting", "work_mem", "4MB", "16MB", "a test")
    changes.Journal(out).write("applied", change)
    return run


def _new_runs(env: dict[str, str], before: set[str] = frozenset()) -> set[str]:
    outputs = Path(env["RAGPERF_OUTPUTS"])
    return (set(os.listdir(outputs)) if outputs.is_dir() else set()) - set(before)


# --- refused at once, naming the holder ------------------------------------------------------------------


def test_a_second_run_on_the_lab_is_refused_at_once_and_makes_no_run_directory(ragperf, env, holder):
    proc, _ = holder
    done, elapsed = _timed(ragperf, env, "run", "phase0", "--profile", "smoke")
    _refused(done, elapsed, proc, _lab_label(env))
    assert _new_runs(env) == set()
    assert not (Path(env["RAGPERF_LAB_DIR"]) / "state.json").exists()  # the lab was not touched


def test_a_rollback_of_the_lab_is_refused_while_a_run_holds_it(ragperf, env, holder, monkeypatch):
    proc, _ = holder
    run = _recorded_run(env, "phase1", monkeypatch)
    done, elapsed = _timed(ragperf, env, "rollback", "phase1")  # finds the run by its outstanding journal
    _refused(done, elapsed, proc, _lab_label(env))
    assert changes.Journal(run.path / "phase1").outstanding()  # nothing was undone
    assert _new_runs(env, {run.id}) == set()


def test_a_lab_reset_is_refused_while_a_run_holds_it(ragperf, env, holder):
    proc, _ = holder
    done, elapsed = _timed(ragperf, env, "lab", "reset")
    _refused(done, elapsed, proc, _lab_label(env))


def test_a_run_on_a_deployment_is_refused_while_another_run_holds_its_database(ragperf, env, spawn, tmp_path):
    proc, _ = spawn(DSN)
    other = tmp_path / "deployment.yaml"
    target = {"kind": "deployment", "base_url": "http://127.0.0.1:9", "dsn": DSN.replace("sakana", "someone_else")}
    other.write_text(yaml.safe_dump({"target": target}))
    done, elapsed = _timed(ragperf, env, "run", "phase0", "--params", str(other))
    _refused(done, elapsed, proc, "the database rag_bidding_v2 on db.example:6543")
    assert _new_runs(env) == set()


# --- a holder that dies releases the target --------------------------------------------------------------


def test_a_holder_killed_by_sigkill_releases_the_lab(ragperf, env, holder):
    proc, token = holder
    target = targetlock.lab_target(Path(env["RAGPERF_LAB_DIR"]))
    with pytest.raises(targetlock.TargetBusyError):
        targetlock.acquire(target, command="`test`")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert token in target.lock_path.read_text()  # the dead holder's details are still there, and do not block
    hold = targetlock.acquire(target, command="`test`", run_id="after")
    try:
        assert json.loads(target.lock_path.read_text())["run_id"] == "after"
    finally:
        hold.release()
    done = ragperf(env, "lab", "reset")  # now it gets as far as the lab, which is not running
    assert done.returncode == 2 and "in use" not in done.stderr and "not running" in done.stderr, done.stderr


def test_a_stale_lock_file_of_a_dead_process_does_not_block(tmp_path):
    target = targetlock.lab_target(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = {"token": "0" * 32, "pid": int(dead.stdout), "command": "`ragperf run phase1`",
             "since": "2026-12-01T22:40:03+00:00", "run_id": HOLDER_RUN}  # fmt: skip
    target.lock_path.write_text(json.dumps(stale))
    hold = targetlock.acquire(target, command="`test`")
    try:
        assert json.loads(target.lock_path.read_text())["pid"] == os.getpid()
    finally:
        hold.release()
    assert target.lock_path.read_text() == ""  # released: nothing left that names a holder


# --- a run's own children go on under its hold -----------------------------------------------------------


@pytest.mark.parametrize("how", ["held", "hold_for_process"])
def test_a_child_with_the_holders_token_goes_on_and_one_without_it_is_refused(env, holder, how):
    proc, token = holder
    argv = [sys.executable, "-c", CHILD, env["RAGPERF_LAB_DIR"], how]
    with_token = subprocess.run(argv, env={**env, targetlock.HOLD_ENV: token}, capture_output=True, text=True)
    assert with_token.returncode == 0 and with_token.stdout.strip() == "through", with_token.stderr
    for other in ({**env, targetlock.HOLD_ENV: "f" * 32}, env):
        without = subprocess.run(argv, env=other, capture_output=True, text=True)
        assert without.returncode == 1 and "TargetBusyError" in without.stderr
        assert f"in use by run {HOLDER_RUN} (pid {proc.pid}" in without.stderr
    assert proc.poll() is None


def test_ragperf_run_holds_the_target_across_its_phases_for_its_kernels_and_releases_it(env, monkeypatch):
    monkeypatch.setenv("RAGPERF_LAB_DIR", env["RAGPERF_LAB_DIR"])
    monkeypatch.setenv(runs.OUTPUTS_ENV, env["RAGPERF_OUTPUTS"])
    monkeypatch.delenv(targetlock.HOLD_ENV, raising=False)
    target = targetlock.lab_target(Path(env["RAGPERF_LAB_DIR"]))
    seen: list[tuple[str, str, str]] = []

    def kernel(phase: str, run_: runs.Run, **_: object) -> Path:
        """Stands in for papermill: a child process that goes on under the run's hold, as begin() does."""
        child = [sys.executable, "-c", CHILD, env["RAGPERF_LAB_DIR"], "hold_for_process"]
        done = subprocess.run(child, env={**os.environ}, capture_output=True, text=True)
        holder = json.loads(target.lock_path.read_text())
        seen.append((phase, done.stdout.strip() or done.stderr[-300:], holder["run_id"] == run_.id))
        return run_.notebook_path(phase)

    monkeypatch.setattr(execute, "execute", kernel)
    run = execute.run("all", profile="smoke")
    assert run.path.parent == Path(env["RAGPERF_OUTPUTS"])
    assert seen == [(name, "through", True) for name in params.phases()]
    assert targetlock.HOLD_ENV not in os.environ
    targetlock.acquire(target, command="`test`").release()  # released at the end


# --- what a target is ------------------------------------------------------------------------------------


def test_a_deployment_is_its_host_port_and_dbname_never_its_user_or_password(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    for name in ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE"):
        monkeypatch.delenv(name, raising=False)
    same = [
        DSN,
        "host=DB.example port=6543 dbname=rag_bidding_v2",
        "postgresql://other:s3cret-pw@db.example:6543/rag_bidding_v2",
    ]
    assert {targetlock.deployment_target(d) for d in same} == {targetlock.deployment_target(DSN)}
    assert targetlock.deployment_identity(DSN) == {"host": "db.example", "port": "6543", "dbname": "rag_bidding_v2"}
    different = [DSN.replace("db.example", "db2.example"), DSN.replace("6543", "5432"), DSN.replace("v2", "v3")]
    paths = {targetlock.deployment_target(d).lock_path for d in [DSN, *different]}
    assert len(paths) == 4 and all(p.parent == tmp_path / "ragperf" / "locks" for p in paths)
    assert targetlock.deployment_identity("dbname=rag") == {"host": "localhost", "port": "5432", "dbname": "rag"}
    monkeypatch.setenv("PGPORT", "6000")
    assert targetlock.deployment_identity("host=/var/run/postgresql user=rag")["port"] == "6000"
    assert targetlock.deployment_identity("host=/var/run/postgresql user=rag")["dbname"] == "rag"  # libpq's default


def test_a_deployment_without_a_dsn_is_its_service_url(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    url = targetlock.deployment_identity(None, "http://user:pw@RAG.example:8000/api/")
    assert url == {"base_url": "http://rag.example:8000/api"}
    assert targetlock.deployment_target(None, "http://rag.example:8000/api").label == (
        "the deployment at http://rag.example:8000/api"
    )
    assert targetlock.deployment_target(None, "http://a:8000") != targetlock.deployment_target(None, "http://b:8000")


def test_no_password_reaches_the_lock_file(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    password = "hunter2-not-in-the-lock"
    target = targetlock.deployment_target(f"postgresql://sakana:{password}@db.example:6543/rag")
    command = targetlock.command_line(["/x/bin/ragperf", "run", "phase0", f"--dsn=postgresql://u:{password}@h/db"])
    hold = targetlock.acquire(target, command=command, run_id=HOLDER_RUN)
    try:
        text = target.lock_path.read_text()
        assert password not in text and password not in target.label and "sakana" not in text
        assert json.loads(text)["command"].startswith("`ragperf run phase0 ")
    finally:
        hold.release()


def test_the_lab_is_its_resolved_directory(tmp_path):
    (tmp_path / "lab").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "lab")
    assert targetlock.lab_target(tmp_path / "link") == targetlock.lab_target(tmp_path / "lab")
    assert targetlock.lab_target(tmp_path / "lab").lock_path == (tmp_path / "lab").resolve() / "target.lock"
