"""Run one load test with Locust in its own processes, watch it, and read back every request.

Locust never runs in the calling process (importing it monkey-patches the process with gevent and
freezes a Jupyter kernel). Its processes are started by PID, bounded in time, and stopped by PID.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil

from ragperf.core.params import REPO_ROOT
from ragperf.core.progress import bar as progress_bar
from ragperf.measure.loadgen.recording import RECORD_COLUMNS, RECORD_DTYPES, Settings
from ragperf.measure.workload import WorkItem, write_workload_jsonl

log = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
SAMPLE_INTERVAL_S = 0.5
SATURATED_CPU_PERCENT = 90.0
SATURATED_SHARE = 1 / 3  # "sustained": at least this share of the samples taken while the test ran
OVERRUN_S = 30.0  # allowed beyond duration + timeout before the processes are killed
WORKER_GRACE_S = 10.0  # how long workers may outlive the master
_RUNNING_STATES = ("spawning", "running")


class LoadgenError(RuntimeError):
    """The load generator could not run the test."""


@dataclass
class LoadResult:
    """One load test: its per-request records and how the load generator itself fared.

    ``duration_s`` is the measured span of the test, from the first request's start to the last
    request's end (0 without records); throughput is ``len(records) / duration_s``.
    ``generator_cpu`` holds samples (t seconds since start, process, cpu_percent of one core,
    running) of the Locust processes on this machine.
    """

    records: pd.DataFrame
    generator_cpu: pd.DataFrame
    generator_note: str
    exit_code: int
    duration_s: float
    users: int
    scenario: str
    step: str
    workers: int = 0
    out_dir: Path | None = None
    pids: tuple[int, ...] = field(default_factory=tuple)
    stopped: bool = False  # ended early by the caller's stop event


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen
    ps: psutil.Process | None


def empty_records() -> pd.DataFrame:
    """A frame with the record schema and no rows."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in RECORD_DTYPES.items()})


def records_frame(rows: Iterable[dict]) -> pd.DataFrame:
    """Records (dicts of the record schema) as a frame with the schema's dtypes, by start time."""
    rows = list(rows)
    if not rows:
        return empty_records()
    frame = pd.DataFrame.from_records(rows, columns=list(RECORD_COLUMNS)).astype(RECORD_DTYPES)
    return frame.sort_values("start", kind="stable").reset_index(drop=True)


def _record_rows(records_dir: Path) -> tuple[list[dict], int]:
    """The records in ``records_dir`` and how many lines could not be read."""
    rows, bad = [], 0
    for path in sorted(Path(records_dir).glob("records-*.jsonl")):
        try:
            with path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:  # a line cut short by a killed process, or still being written
                        bad += 1
        except FileNotFoundError:  # replaced between the listing and the read
            continue
    return rows, bad


def read_records(records_dir: Path) -> pd.DataFrame:
    """All records the Locust processes wrote to ``records_dir`` (``records-*.jsonl``)."""
    rows, bad = _record_rows(records_dir)
    if bad:
        log.warning("%s: skipped %d unreadable record lines", records_dir, bad)
    return records_frame(rows)


def live_records(records_dir: Path) -> pd.DataFrame:
    """The records written so far by a test that may still run: as :func:`read_records`, without the warning
    about a line the writer has not finished yet."""
    return records_frame(_record_rows(records_dir)[0])


def generator_note(cpu: pd.DataFrame, *, workers: int = 0) -> str:
    """A sentence when a load-generator process was CPU-saturated for a sustained part of the test, else ""."""
    if cpu.empty:
        return ""
    ran = cpu[cpu["running"]] if "running" in cpu and cpu["running"].any() else cpu
    worst: tuple[str, float] | None = None
    for process, samples in ran.groupby("process"):
        hot = samples["cpu_percent"] >= SATURATED_CPU_PERCENT
        if len(samples) >= 3 and hot.mean() >= SATURATED_SHARE:
            level = float(samples.loc[hot, "cpu_percent"].median())
            if worst is None or level > worst[1]:
                worst = (str(process), level)
    if worst is None:
        return ""
    where = f" in {worst[0]}" if ran["process"].nunique() > 1 else ""
    advice = f"add workers (this run had {workers})" if workers else "add workers"
    return (
        f"The load generator itself was saturated ({worst[1]:.0f}% CPU of one core{where}): "
        f"latencies above are partly the generator's; {advice}."
    )


def run_load(
    base_url: str,
    items: Sequence[WorkItem],
    *,
    users: int,
    duration_s: float,
    out_dir: Path,
    scenario: str,
    step: str,
    spawn_rate: float | None = None,
    timeout_s: float = 30.0,
    cycle: bool = True,
    workers: int = 0,
    progress: bool = True,
    remote_workers: int = 0,
    master_port: int = 0,
    stop: threading.Event | None = None,
) -> LoadResult:
    """Run one closed-loop load test against ``base_url`` and record every request.

    Args:
        base_url: The service, e.g. ``http://127.0.0.1:8000``.
        items: The workload.
        users: Concurrent users (think time 0).
        duration_s: How long the test runs once started.
        out_dir: Where the workload, Locust's logs, the records and ``requests.parquet`` go.
        scenario: Scenario name, copied into every record.
        step: Step name (e.g. "users=8"), copied into every record.
        spawn_rate: Users started per second; default all within one second.
        timeout_s: Per-request timeout; a slower request counts as a failure ("timeout").
        cycle: Users loop over the items; without it each item is asked exactly once, in order,
            and the test ends when they are used up (or the duration elapses).
        workers: Local Locust worker processes (0: one process does everything).
        progress: Show a progress bar.
        remote_workers: Workers on other machines the master waits for (see the locustfile's docstring).
        master_port: The master's port; 0 picks a free one (give a fixed one for remote workers).
        stop: When set (from another thread), the test ends early: Locust's processes are stopped by PID
            (they flush their records as they quit) and what they recorded is read back (``stopped``).

    Raises:
        LoadgenError: Locust failed and recorded nothing; the message has the end of its log.
    """
    _check_args(base_url, items, users, duration_s, timeout_s, workers, remote_workers, spawn_rate)
    out_dir = Path(out_dir).resolve()  # Locust runs with out_dir as its working directory
    records_dir = out_dir / "records"
    _prepare_dirs(out_dir, records_dir)
    workload = out_dir / "workload.jsonl"
    write_workload_jsonl(workload, items)
    settings = Settings(workload, records_dir, timeout_s, cycle, scenario, step, users, duration_s)
    env = _environment(settings)
    stop_timeout = timeout_s + 5
    distributed = workers + remote_workers > 0
    port = master_port or (_free_port() if distributed else 0)
    argv = _master_argv(base_url, users, spawn_rate or float(users), duration_s, stop_timeout)
    if distributed:
        argv += _distribution_args(port, workers + remote_workers, remote_workers)
    if remote_workers:
        _log_remote_command(settings, port)

    procs: list[_Proc] = []
    try:
        procs.append(_spawn("master" if distributed else "locust", argv, env, out_dir))
        for i in range(workers):
            procs.append(_spawn(f"worker-{i}", _worker_argv(port), env, out_dir))
        limit = duration_s + timeout_s + OVERRUN_S + (120.0 if remote_workers else 0.0)
        samples = _watch(procs, records_dir / "status.json", duration_s, limit, progress, f"{scenario} {step}", stop)
        stopped = stop is not None and stop.is_set() and procs[0].popen.poll() is None
        if stopped:  # the master (or the only process) first: it quits its workers and flushes what they sent
            _stop_all(procs[:1])
        exit_code = _wait_and_stop(procs)
    finally:
        _stop_all(procs)

    records = read_records(records_dir)
    if records.empty and exit_code != 0:
        raise LoadgenError(f"Locust exited with {exit_code} and recorded nothing:\n{_tail(out_dir / 'locust.log')}")
    if records.empty:
        log.warning("the load test recorded no requests; see %s", out_dir / "locust.log")
    elif exit_code != 0 and not stopped:
        log.warning("Locust exited with %d; see %s", exit_code, out_dir / "locust.log")
    records.to_parquet(out_dir / "requests.parquet", index=False)
    cpu = pd.DataFrame(samples, columns=["t", "process", "cpu_percent", "running"])
    note = generator_note(cpu, workers=workers)
    if note:
        log.warning(note)
    span = float((records["start"] + records["latency_s"]).max() - records["start"].min()) if len(records) else 0.0
    return LoadResult(
        records=records,
        generator_cpu=cpu,
        generator_note=note,
        exit_code=exit_code,
        duration_s=span,
        users=users,
        scenario=scenario,
        step=step,
        workers=workers,
        out_dir=out_dir,
        pids=tuple(p.popen.pid for p in procs),
        stopped=stopped,
    )


def _check_args(
    base_url: str,
    items: Sequence[WorkItem],
    users: int,
    duration_s: float,
    timeout_s: float,
    workers: int,
    remote_workers: int,
    spawn_rate: float | None,
) -> None:
    problems = []
    if not base_url.startswith(("http://", "https://")):
        problems.append(f"base_url must start with http:// or https:// (got {base_url!r})")
    if not items:
        problems.append("the workload is empty")
    if users < 1:
        problems.append(f"users must be at least 1 (got {users})")
    if not duration_s > 0:
        problems.append(f"duration_s must be > 0 (got {duration_s})")
    if not timeout_s > 0:
        problems.append(f"timeout_s must be > 0 (got {timeout_s})")
    if workers < 0 or remote_workers < 0:
        problems.append(f"workers and remote_workers must be >= 0 (got {workers}, {remote_workers})")
    if spawn_rate is not None and not spawn_rate > 0:
        problems.append(f"spawn_rate must be > 0 (got {spawn_rate})")
    if problems:
        raise ValueError("; ".join(problems))


def _prepare_dirs(out_dir: Path, records_dir: Path) -> None:
    records_dir.mkdir(parents=True, exist_ok=True)
    stale = [*records_dir.glob("records-*.jsonl"), records_dir / "status.json", out_dir / "requests.parquet"]
    stale = [p for p in stale if p.exists()]
    if stale:
        log.warning("%s holds an earlier test's results; replacing them", out_dir)
        for path in stale:
            path.unlink()


def _environment(settings: Settings) -> dict[str, str]:
    """This process's environment without LOCUST_* (they would override our options), plus the settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    dropped = sorted(set(os.environ) - set(env))
    if dropped:
        log.info("not passing %s to Locust", ", ".join(dropped))
    package_root = str(REPO_ROOT / "lib")  # so the locustfile finds ragperf
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings.to_env())
    if Path("~/.locust.conf").expanduser().exists():
        log.warning("~/.locust.conf exists; options it sets that run_load does not pass will apply")
    return env


def _master_argv(base_url: str, users: int, spawn_rate: float, duration_s: float, stop_timeout: float) -> list[str]:
    # The locustfile stops the test after duration_s (to the fraction of a second); -t is a backstop.
    backstop = math.ceil(duration_s + stop_timeout + 10)
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "-u", str(users), "-r", f"{spawn_rate:g}", "-t", f"{backstop}s",
        "--host", base_url, "--only-summary", "--stop-timeout", f"{stop_timeout:g}",
        "--exit-code-on-error", "0",
    ]  # fmt: skip


def _distribution_args(port: int, expect: int, remote_workers: int) -> list[str]:
    bind = "*" if remote_workers else "127.0.0.1"
    wait = 30 + (120 if remote_workers else 0)
    return [
        "--master", "--master-bind-host", bind, "--master-bind-port", str(port),
        "--expect-workers", str(expect), "--expect-workers-max-wait", str(wait),
    ]  # fmt: skip


def _worker_argv(port: int) -> list[str]:
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
        "--master-host", "127.0.0.1", "--master-port", str(port), "--exit-code-on-error", "0",
    ]  # fmt: skip


def _log_remote_command(settings: Settings, port: int) -> None:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in settings.to_env().items() if k != "RAGPERF_RECORDS_DIR")
    log.warning(
        "waiting for remote workers; on each, with a copy of %s, run: %s python -m locust -f %s --worker "
        "--master-host <this machine's address> --master-port %d",
        settings.workload,
        env,
        LOCUSTFILE,
        port,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(name: str, argv: list[str], env: dict[str, str], out_dir: Path) -> _Proc:
    log_path = out_dir / ("locust.log" if name in ("locust", "master") else f"{name}.log")
    with log_path.open("wb") as out:
        popen = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=out_dir,
            start_new_session=True,  # an interrupt of the notebook reaches us, not Locust; we stop it
        )  # fmt: skip
    log.info("started %s (pid %d)", name, popen.pid)
    try:
        ps = psutil.Process(popen.pid)
        ps.cpu_percent(None)  # the first call only starts the measurement
    except psutil.Error:
        ps = None
    return _Proc(name, popen, ps)


def _watch(
    procs: list[_Proc],
    status_file: Path,
    duration_s: float,
    limit_s: float,
    progress: bool,
    desc: str,
    stop: threading.Event | None = None,
) -> list[tuple[float, str, float, bool]]:
    """Sample CPU and show progress until the first process (local or master) exits, overruns, or ``stop`` is set."""
    stop = stop or threading.Event()  # never set: the test runs to its end
    samples: list[tuple[float, str, float, bool]] = []
    t0 = time.monotonic()
    started: float | None = None
    main = procs[0].popen
    bar_format = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s {postfix}"
    with progress_bar(total=round(duration_s, 1), desc=desc, bar_format=bar_format, disable=not progress) as bar:
        while main.poll() is None:
            if stop.is_set():
                log.info("stopping the test early, as asked")
                break
            now = time.monotonic()
            if now - t0 > limit_s:
                log.error("Locust overran %.0f s; killing it", limit_s)
                break
            status = _read_status(status_file)
            running = status.get("state") in _RUNNING_STATES
            if running and started is None:
                started = now
            for proc in procs:
                cpu = _cpu(proc)
                if cpu is not None:
                    samples.append((now - t0, proc.name, cpu, running))
            if started is not None:
                bar.n = round(min(duration_s, now - started), 1)
                bar.set_postfix(users=status.get("users", 0), requests=status.get("requests", 0), refresh=False)
                bar.refresh()
            stop.wait(SAMPLE_INTERVAL_S)
        if started is not None:
            bar.n = round(min(duration_s, time.monotonic() - started), 1)
            bar.refresh()
    return samples


def _cpu(proc: _Proc) -> float | None:
    if proc.ps is None or proc.popen.poll() is not None:
        return None
    try:
        return float(proc.ps.cpu_percent(None))
    except psutil.Error:
        return None


def _read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _wait_and_stop(procs: list[_Proc]) -> int:
    """The first process's exit code, after giving the workers a moment to finish on their own."""
    deadline = time.monotonic() + WORKER_GRACE_S
    for proc in procs[1:]:
        try:
            proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) did not exit after the test; stopping it", proc.name, proc.popen.pid)
    _stop_all(procs)
    return int(procs[0].popen.returncode)


def _stop_all(procs: list[_Proc]) -> None:
    """Stop our processes by PID: SIGTERM, then SIGKILL after 5 s."""
    alive = [p for p in procs if p.popen.poll() is None]
    for proc in alive:
        proc.popen.terminate()
    for proc in alive:
        try:
            proc.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM; killing it", proc.name, proc.popen.pid)
            proc.popen.kill()
            proc.popen.wait(timeout=5)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} is missing)"
