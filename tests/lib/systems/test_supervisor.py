"""supervisord as a ragperf system: real supervisord running small real HTTP programs (no mocks)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from supervisor.datatypes import RestartUnconditionally
from supervisor.options import ServerOptions

from ragperf.core import procs
from ragperf.systems import supervisor
from ragperf.systems.supervisor import (
    Program,
    Supervisor,
    SupervisorApplier,
    SupervisorConfig,
    SupervisorError,
    plan,
    render,
)

SECRET = "s3cr3t-value-4b9e1f"  # what the secret file holds; must never show up in a file, argv or log

# A tiny HTTP program: 200 on /health; GET /env answers a JSON object of the variables named after the port.
PROGRAM = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT, NAMES = int(sys.argv[1]), sys.argv[2:]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = b"ok"
        elif self.path == "/env":
            body = json.dumps({name: os.environ.get(name) for name in NAMES}).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print("listening on", PORT, flush=True)
HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
"""


def _get(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        return response.read().decode()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sv")
    path.chmod(0o755)
    (path / "app.py").write_text(PROGRAM)
    secret = path / "secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    return path


def _program(base: Path, name: str, port: int | None = None, **kw) -> Program:
    port = port or procs.free_port()
    argv = (sys.executable, str(base / "app.py"), str(port), "PLAIN_VAR", "SECRET_VAR")
    return Program(name=name, argv=argv, port=port, start_s=kw.pop("start_s", 1), stop_s=kw.pop("stop_s", 5), **kw)


def _config(base: Path, state: str = "state", count: int = 2, **kw) -> SupervisorConfig:
    programs = tuple(
        _program(
            base,
            f"app-{i + 1}",
            env=(("PLAIN_VAR", f"plain {i + 1}, 50%% done"),),
            secret_env=(("SECRET_VAR", str(base / "secret")),),
            **kw,
        )
        for i in range(count)
    )
    return SupervisorConfig(state_dir=base / state, programs=programs)


def _gone(pid: int, ticks: int) -> bool:
    """True once the process ``pid`` that started at ``ticks`` is gone (polled for a while: a stop is not instant)."""
    deadline = time.monotonic() + 10
    while procs.start_ticks(pid) == ticks:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module")
def running(base: Path) -> Iterator[tuple[Supervisor, SupervisorConfig]]:
    """One supervisord with two programs for the tests that only look at it, kill or restart a program."""
    cfg = _config(base)
    server = Supervisor(cfg.state_dir)
    try:
        server.start(cfg)
        yield server, cfg
    finally:
        server.stop(timeout=10)
        server.clear_state()


def test_start_two_programs_serving_without_leaking_the_secret(running, base):
    server, cfg = running
    rows = server.processes()
    assert [r["name"] for r in rows] == ["app-1", "app-2"]
    assert all(r["state"] == "RUNNING" and r["pid"] > 0 and r["start"] > 0 for r in rows)
    assert [r["port"] for r in rows] == [p.port for p in cfg.programs]
    for program in cfg.programs:
        assert procs.http_ok(program.health_url) is None
        seen = json.loads(_get(f"http://127.0.0.1:{program.port}/env"))
        assert seen == {"SECRET_VAR": SECRET, "PLAIN_VAR": f"plain {program.name[-1]}, 50% done"}
    assert cfg.socket.parent == cfg.state_dir and stat.S_ISSOCK(cfg.socket.stat().st_mode)
    assert stat.S_IMODE(cfg.socket.stat().st_mode) == 0o700
    assert cfg.addresses == tuple(f"127.0.0.1:{p.port}" for p in cfg.programs)
    # The secret is in no file of the state directory (conf, record, logs, children.json) and not on argv.
    files = [p for p in cfg.state_dir.iterdir() if p.is_file()]
    assert {"supervisord.conf", "supervisor.json", "supervisord.out", "supervisord.log"} <= {p.name for p in files}
    for path in files:
        assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in Path(f"/proc/{server.proc.pid}/cmdline").read_text()
    status = server.status()
    assert status["running"] and [p["name"] for p in status["programs"]] == ["app-1", "app-2"]
    assert SECRET not in json.dumps(status)
    assert server.config == cfg
    assert server.start(cfg).pid == server.proc.pid  # the same configuration: kept, not restarted


def test_kill_is_followed_by_a_restart_with_a_new_pid(running):
    server, _ = running
    old = server.pid_of("app-1")
    ticks = procs.start_ticks(old)
    assert server.kill("app-1") == old
    seconds = server.wait_serving("app-1", not_pid=old, timeout=30)
    assert seconds > 0
    assert _gone(old, ticks)
    new = server.pid_of("app-1")
    assert new != old and procs.start_ticks(new) is not None
    with pytest.raises(SupervisorError, match="no program 'nope'.*known: app-1, app-2"):
        server.kill("nope")


def test_restart_program_gets_a_new_pid_and_serves_again(running):
    server, cfg = running
    old = server.pid_of("app-2")
    seconds = server.restart_program("app-2", timeout=30)
    assert seconds > 0
    new = server.pid_of("app-2")
    assert new != old
    assert procs.http_ok(cfg.programs[1].health_url) is None
    assert server.pid_of("app-1")  # the other one was left alone


def test_stop_leaves_nothing_running_even_after_supervisord_was_killed(base):
    cfg = _config(base, state="stopme")
    server = Supervisor(cfg.state_dir)
    try:
        server.start(cfg)
        daemon = server.proc
        children = [(r["pid"], procs.start_ticks(r["pid"])) for r in server.processes()]
        assert server.stop() is True
        assert _gone(daemon.pid, daemon.start_ticks)
        assert all(_gone(pid, ticks) for pid, ticks in children)
        assert not server.record_path.exists() and not cfg.socket.exists()
        assert server.stop() is False
        assert server.status()["running"] is False

        # supervisord killed with SIGKILL orphans its programs; stop() kills exactly those.
        server.start(cfg)
        daemon = server.proc
        children = [(r["pid"], procs.start_ticks(r["pid"])) for r in server.processes()]
        os.kill(daemon.pid, signal.SIGKILL)
        assert _gone(daemon.pid, daemon.start_ticks)
        assert all(procs.start_ticks(pid) == ticks for pid, ticks in children)  # orphaned, still alive
        assert server.stop() is False  # supervisord was not running any more
        assert all(_gone(pid, ticks) for pid, ticks in children)
        assert not server.record_path.exists()

        # A start after such a kill (no stop in between) first kills the orphans that hold the programs' ports.
        server.start(cfg)
        children = [(r["pid"], procs.start_ticks(r["pid"])) for r in server.processes()]
        os.kill(server.proc.pid, signal.SIGKILL)
        assert _gone(server.proc.pid, server.proc.start_ticks)
        server.start(cfg)
        assert all(_gone(pid, ticks) for pid, ticks in children)
        assert [r["state"] for r in server.processes()] == ["RUNNING", "RUNNING"]
    finally:
        server.stop(timeout=10)
        server.clear_state()
    assert not cfg.state_dir.exists()  # clear_state removed every file it made, then the empty directory


def test_a_taken_port_refuses_the_start_before_supervisord_is_spawned(base):
    cfg = _config(base, state="taken")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", cfg.programs[1].port))
        busy.listen()
        server = Supervisor(cfg.state_dir)
        try:
            with pytest.raises(SupervisorError, match=rf"programs\[1\] app-2: port {cfg.programs[1].port} .* taken"):
                server.start(cfg)
            assert (
                server.proc is None
                and not server.log_path.exists()
                and not (cfg.state_dir / "supervisord.conf").exists()
            )
        finally:
            server.stop(timeout=5)
            server.clear_state()


def _secret_file(base: Path, name: str, mode: int | None) -> str:
    path = base / name
    if mode is not None:
        path.write_text(SECRET)
        path.chmod(mode)
    return str(path)


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        (None, "does not exist; write the value there with mode 0600"),
        (0o644, r"is readable by others \(mode 0644\); run chmod 600"),
    ],
)
def test_a_bad_secret_file_refuses_the_start(base, mode, words):
    path = _secret_file(base, f"bad-secret-{mode}", mode)
    program = _program(base, "app-1", secret_env=(("SECRET_VAR", path),))
    cfg = SupervisorConfig(state_dir=base / f"badsecret{mode}", programs=(program,))
    server = Supervisor(cfg.state_dir)
    try:
        with pytest.raises(SupervisorError, match=rf"program app-1: secret_env SECRET_VAR: {path} {words}") as err:
            server.start(cfg)
        assert SECRET not in str(err.value) and server.proc is None
    finally:
        server.stop(timeout=5)
        server.clear_state()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"name": "App"}, r"name: 'App' is not a program name"),
        ({"name": "1app"}, "name: '1app' is not a program name"),
        ({"argv": ("python3", "app.py")}, r"argv\[0\]: the executable must be an absolute path, not 'python3'"),
        ({"argv": ()}, "argv: must be a non-empty sequence"),
        ({"env": (("DSN", "postgresql://u:hunter2@db/x"),)}, "env DSN: the value looks like it holds a password"),
        ({"env": (("DSN", "host=db password=hunter2"),)}, "env DSN: the value looks like it holds a password"),
        ({"env": (("X", "50%"),)}, "env X: a '%' must be doubled"),
        ({"env": (("X", "a\nb"),)}, "env X: must not contain line breaks"),
        ({"env": (("X", "a ;b"),)}, "env X: must not hold ';' or '#' after a space"),
        ({"env": (("X", "1"), ("X", "2"))}, "env: X given more than once"),
        ({"env": (("9X", "1"),)}, r"env\[0\]: '9X' is not a variable name"),
        ({"secret_env": (("K", "relative/file"),)}, "secret_env K: must be an absolute path"),
        ({"argv": ("/usr/bin/env", "--password=hunter2")}, r"argv\[1\]: the value looks like it holds a password"),
        ({"port": 0}, "port: must be a whole number from 1 to 65535"),
        ({"start_s": -1}, "start_s: must be a whole number from 0 to 3600"),
        ({"health_path": "health"}, "health_path: must be a URL path starting with '/'"),
    ],
)
def test_bad_program_is_refused_with_one_clear_error(base, change, words):
    fields = {"name": "app", "argv": ("/usr/bin/true",), "port": 8001, **change}
    with pytest.raises(ValueError, match=words) as err:
        Program(**fields)
    assert "hunter2" not in str(err.value)


def test_bad_configuration_is_refused_with_one_clear_error(base):
    one = Program(name="app", argv=("/usr/bin/true",), port=8001)
    with pytest.raises(ValueError, match="programs: name app given to more than one program"):
        SupervisorConfig(state_dir=base / "x", programs=(one, Program(name="app", argv=one.argv, port=8002)))
    with pytest.raises(ValueError, match="programs: port 8001 given to more than one program"):
        SupervisorConfig(state_dir=base / "x", programs=(one, Program(name="other", argv=one.argv, port=8001)))
    with pytest.raises(ValueError, match="programs: must be a non-empty sequence"):
        SupervisorConfig(state_dir=base / "x", programs=())
    with pytest.raises(ValueError, match="state_dir: must be an absolute path"):
        SupervisorConfig(state_dir=Path("rel"), programs=(one,))
    with pytest.raises(ValueError, match="state_dir: .* too long"):
        SupervisorConfig(state_dir=Path("/tmp") / ("d" * 100), programs=(one,))
    a = Program(name="a", argv=one.argv, port=1, secret_env=(("K", "/etc/a"),))
    b = Program(name="b", argv=one.argv, port=2, secret_env=(("K", "/etc/b"),))
    with pytest.raises(ValueError, match="secret_env K comes from /etc/a and /etc/b"):
        SupervisorConfig(state_dir=base / "x", programs=(a, b))
    with pytest.raises(ValueError, match=r"programs\[0\]: name: 'Bad' is not a program name"):
        SupervisorConfig.from_dict({"state_dir": "/tmp/x", "programs": [{**one.to_dict(), "name": "Bad"}]})
    with pytest.raises(ValueError, match="unknown SupervisorConfig field"):
        SupervisorConfig.from_dict({"state_dir": "/tmp/x", "programs": [one.to_dict()], "extra": 1})


def test_render_is_what_supervisord_reads(base, tmp_path):
    tricky = (("A", 'say "hi", then go'), ("B", "it's 100%% = done"), ("C", ""), ("D", "x=1,y=2"))
    program = Program(
        name="app-1",
        argv=("/usr/bin/printf", "%s %d", "two words", "a'b"),
        port=8123,
        env=tricky,
        secret_env=(("SECRET_VAR", str(base / "secret")),),
        cwd="/tmp",
        start_s=2,
        stop_s=7,
    )
    cfg = SupervisorConfig(state_dir=tmp_path / "st", programs=(program,))
    text = render(cfg)
    assert text == render(cfg)  # pure
    assert SECRET not in text and "SECRET_VAR" not in text
    cfg.state_dir.mkdir()
    conf = cfg.state_dir / "supervisord.conf"
    conf.write_text(text)
    options = ServerOptions()
    options.realize(args=["-c", str(conf)])  # supervisord's own parser
    assert options.nodaemon is True
    assert options.logfile == str(cfg.state_dir / "supervisord.log") and options.logfile_maxbytes > 0
    assert options.pidfile == str(cfg.state_dir / "supervisord.pid")
    assert options.server_configs[0]["file"] == str(cfg.socket) and options.server_configs[0]["chmod"] == 0o700
    (group,) = options.process_group_configs
    (proc,) = group.process_configs
    assert proc.name == "app-1" and proc.directory == "/tmp"
    assert proc.environment == {"A": 'say "hi", then go', "B": "it's 100% = done", "C": "", "D": "x=1,y=2"}
    assert proc.command == "/usr/bin/printf '%s %d' 'two words' 'a'\"'\"'b'"
    assert (proc.autorestart, proc.startsecs, proc.stopwaitsecs, proc.stopsignal) == (
        RestartUnconditionally,
        2,
        7,
        signal.SIGTERM,
    )
    assert proc.stopasgroup and proc.killasgroup and proc.redirect_stderr and proc.uid is None
    assert proc.stdout_logfile == str(cfg.state_dir / "program-app-1.log") and proc.stdout_logfile_maxbytes > 0
    assert "user=" not in text


def test_plan_and_round_trip(base):
    cfg = _config(base, state="plan")
    data = json.loads(json.dumps(cfg.to_dict()))
    assert isinstance(data["programs"][0]["env"][0], list)
    assert SupervisorConfig.from_dict(data) == cfg
    assert plan(cfg, cfg) == [] and plan(None, None) == []

    (start,) = plan(None, cfg)
    assert (start.kind, start.name, start.before, start.restart) == ("supervisor", "instances", None, False)
    assert start.after == cfg.to_dict() and start.details["action"] == "start"
    assert start.details["addresses"] == list(cfg.addresses)
    assert "app-1, app-2" in start.reason

    moved = _program(base, "app-2", port=cfg.programs[1].port + 1 if cfg.programs[1].port < 65535 else 1024)
    changed = SupervisorConfig(state_dir=cfg.state_dir, programs=(cfg.programs[0], moved, _program(base, "app-3")))
    (restart,) = plan(cfg, changed)
    assert restart.details["action"] == "restart" and restart.before == cfg.to_dict()
    diff = restart.details["diff"]["programs"]
    assert diff["app-3"] == "added" and "app-1" not in diff
    assert diff["app-2"]["port"] == [cfg.programs[1].port, moved.port]
    assert f"port {cfg.programs[1].port} -> {moved.port}" in restart.reason and "program app-3 added" in restart.reason

    (stop,) = plan(cfg, None)
    assert stop.details == {"action": "stop", "addresses": list(cfg.addresses)} and stop.after is None


def test_applier_starts_and_undo_stops_and_clears(base):
    cfg = SupervisorConfig(state_dir=base / "applied", programs=(_program(base, "app-1"),))
    changes = plan(None, cfg)
    applier = SupervisorApplier(timeout=30)
    assert applier.kind == supervisor.KIND
    server = Supervisor(cfg.state_dir)
    try:
        applier.apply(changes)
        assert server.running and server.config == cfg
        pid = server.pid_of("app-1")
        ticks = procs.start_ticks(pid)
        applier.apply(changes)  # idempotent: the same supervisord keeps running
        assert server.pid_of("app-1") == pid
        applier.undo(changes)
        assert not server.running and _gone(pid, ticks)
        assert not cfg.state_dir.exists()
    finally:
        server.stop(timeout=10)
        server.clear_state()


def test_secret_files_are_checked_before_a_start_and_removed_when_the_state_is_cleared(base: Path):
    secrets_dir = base / "files-secrets"
    secrets_dir.mkdir(mode=0o700)
    passfile = secrets_dir / "pgpass"
    passfile.write_text("*:*:*:*:hunter2-hunter2\n")
    passfile.chmod(0o644)
    program = _program(base, "app", secret_files=(str(passfile),), env=(("PLAIN_VAR", "x"), ("SECRET_VAR", "y")))
    cfg = SupervisorConfig(state_dir=base / "files-state", programs=(program,))
    server = Supervisor(cfg.state_dir)
    with pytest.raises(SupervisorError, match="readable by others"):
        server.start(cfg)
    passfile.chmod(0o600)
    try:
        server.start(cfg)
        assert "hunter2" not in (cfg.state_dir / "secret-files.json").read_text()
    finally:
        server.stop(timeout=10)
    server.clear_state()
    assert not passfile.exists() and not secrets_dir.exists() and not cfg.state_dir.exists()
