"""supervisord as a process ragperf runs: N app instances (Phase 4), each on its own loopback port.

:class:`Supervisor` runs one ``supervisord`` (PyPI ``supervisor``) in the foreground from a state directory, started
and stopped by its recorded PID like every other server ragperf runs. supervisord in turn starts the instances
(:class:`Program`) and restarts one that dies; ragperf never starts or signals an instance by pattern: it asks
supervisord (its XML-RPC interface on a unix socket in the state directory, mode 0700) for their PIDs.

Files in the state directory: ``supervisord.conf`` (written by :func:`render`), ``supervisor.json`` (the process
record), ``supervisord.out`` (supervisord's standard output), ``supervisord.log`` and ``program-<name>.log``
(size-bounded, rotated by supervisord), ``supervisord.pid``, ``supervisor.sock`` and ``children.json`` (the PID and
start time of every instance as last seen through XML-RPC: if supervisord is killed with SIGKILL, its instances are
orphaned, and :meth:`Supervisor.stop` kills exactly those processes, never anything else).

Secrets: a :class:`Program` gets plain variables through ``env`` (written into supervisord.conf) and secrets through
``secret_env``, pairs of a variable name and the path of a 0600 file holding its value. The values are read at start
and put into supervisord's own environment, which every instance inherits; they are never in supervisord.conf, the
process record, a command line or a log line. As every instance inherits supervisord's environment, a secret
variable must come from the same file for every program that names it.

:class:`SupervisorApplier` makes and undoes ``supervisor`` changes of the change model; :func:`plan` plans them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import shlex
import shutil
import signal
import stat
import sys
import time
import xmlrpc.client
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from supervisor.datatypes import dict_of_key_value_pairs
from supervisor.xmlrpc import SupervisorTransport, UnixStreamHTTPConnection

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError, Config, check_int

log = logging.getLogger(__name__)

KIND = "supervisor"
CHANGE_NAME = "instances"
HOST = "127.0.0.1"
CONF = "supervisord.conf"
RECORD = "supervisor.json"
LOG = "supervisord.out"
DAEMON_LOG = "supervisord.log"
PIDFILE = "supervisord.pid"
SOCKET = "supervisor.sock"
CHILDREN = "children.json"
SECRET_FILES = "secret-files.json"  # the paths (never the values) of the programs' secret files, cleared with it
PROGRAM_LOG = "program-{name}.log"
LOG_BACKUPS = 2  # rotated copies supervisord keeps of every log (<log>.1, <log>.2)
START_RETRIES = 5  # supervisord's startretries: quick deaths in a row before a program is FATAL

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# A value that holds a password: password=..., passwd=..., secret=..., token=..., api_key=..., or a URL's user:secret@.
_SECRET_RE = re.compile(
    r"(?i)(\b(pass|passwd|password|pwd|secret|token|api[_-]?key)\s*=)|(://[^/\s@:]*:[^/\s@]+@)",
)
_COMMENT_RE = re.compile(r"\s[;#]")  # supervisord's parser cuts a value at an inline comment (';' or '#' after a space)
_SINGLE_PERCENT_RE = re.compile(r"%(?!%)")
_MAX_SOCKET_BYTES = 107 - 12  # sun_path holds 107 bytes; supervisord binds "<socket>.<pid>" first, then renames it
STATES_UP = ("RUNNING",)


def supervisord_binary() -> str:
    """The supervisord to run: the one on PATH, else the one next to this Python (the virtualenv's)."""
    return shutil.which("supervisord") or str(Path(sys.executable).parent / "supervisord")


class SupervisorError(procs.ProcessError, ChangeError):
    """supervisord or one of its programs could not be started, asked or stopped."""


# -- the configuration -----------------------------------------------------------------------------------------------


def _check_text(name: str, value: object, *, show: bool = True) -> str:
    """``value`` when it is a string supervisord.conf can hold on one line; else ValueError naming ``name``
    (the value itself is named only when ``show``: an environment value may be a secret given by mistake)."""
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be a string, not {type(value).__name__}")
    shown = f" {value!r}" if show else ""
    if any(ch in value for ch in "\n\r\0"):
        raise ValueError(f"{name}:{shown} must not contain line breaks or NUL characters")
    if _COMMENT_RE.search(value):
        raise ValueError(
            f"{name}:{shown} must not hold ';' or '#' after a space (supervisord.conf reads that as a comment)"
        )
    return value


def _check_path(name: str, value: object) -> str:
    """``value`` as a string when it is an absolute path supervisord.conf can hold; else ValueError naming ``name``."""
    text = _check_text(name, str(value) if isinstance(value, Path) else value)
    if not Path(text).is_absolute():
        raise ValueError(f"{name}: must be an absolute path, not {text!r}")
    return text


def _check_no_secret(name: str, value: str) -> None:
    if _SECRET_RE.search(value):
        raise ValueError(
            f"{name}: the value looks like it holds a password (password=..., token=..., user:secret@ ...); "
            "give secrets through secret_env (NAME, path of a 0600 file holding the value)"
        )


def _pairs(name: str, value: object) -> tuple[tuple[str, str], ...]:
    """``value`` (pairs, as tuples or as the lists JSON gives back) as a tuple of 2-tuples of strings."""
    if isinstance(value, str | bytes) or not isinstance(value, tuple | list):
        raise ValueError(f"{name}: must be a sequence of (NAME, value) pairs, not {type(value).__name__}")
    result = []
    for i, pair in enumerate(value):
        if isinstance(pair, str | bytes) or not isinstance(pair, tuple | list) or len(pair) != 2:
            raise ValueError(f"{name}[{i}]: must be a (NAME, value) pair")
        key, val = pair
        if not isinstance(key, str) or not ENV_NAME_RE.match(key):
            raise ValueError(
                f"{name}[{i}]: {key!r} is not a variable name (letters, digits and '_', not first a digit)"
            )
        if not isinstance(val, str):
            raise ValueError(f"{name} {key}: the value must be a string, not {type(val).__name__}")
        result.append((key, val))
    names = [key for key, _ in result]
    duplicates = sorted({key for key in names if names.count(key) > 1})
    if duplicates:
        raise ValueError(f"{name}: {', '.join(duplicates)} given more than once")
    return tuple(result)


def _quote_env(value: str) -> str:
    """``value`` quoted for supervisord's ``environment=`` (read by a non-POSIX shlex: no escapes inside quotes)."""
    return f"'{value}'" if '"' in value else f'"{value}"'


def _environment(env: tuple[tuple[str, str], ...]) -> str:
    """The ``environment=`` value of ``env`` (values kept as given: a literal '%' is already '%%')."""
    return ",".join(f"{key}={_quote_env(value)}" for key, value in env)


def _check_env_value(key: str, value: str) -> None:
    name = f"env {key}"
    _check_text(name, value, show=False)
    _check_no_secret(name, value)
    if _SINGLE_PERCENT_RE.search(value.replace("%%", "")):
        raise ValueError(f"{name}: a '%' must be doubled ('%%': supervisord expands %(...)s in environment=)")
    if '"' in value and "'" in value:
        raise ValueError(f"{name}: the value may hold double quotes or single quotes, not both (supervisord's quoting)")
    if value and (value[0] in "\"'" or value[-1] in "\"'"):
        raise ValueError(f"{name}: the value must not begin or end with a quote (supervisord strips them)")
    parsed = dict_of_key_value_pairs(_environment(((key, value),)) % {})
    if parsed != {key: value.replace("%%", "%")}:
        raise ValueError(f"{name}: supervisord would not read the value back as given; simplify it")


def _lit(text: str) -> str:
    """``text`` for a supervisord.conf value that supervisord expands (``%(here)s`` ...): every '%' doubled."""
    return text.replace("%", "%%")


@dataclass(frozen=True)
class Program(Config):
    """One program supervisord runs: an app instance listening on ``127.0.0.1:<port>``.

    ``argv`` is the full command line (an absolute executable first; no secrets), ``env`` plain variables written
    into supervisord.conf (a literal '%' written '%%'), ``secret_env`` pairs of a variable name and the absolute path
    of a 0600 file holding its value (see the module's docstring), ``secret_files`` the absolute paths of further
    0600 files the program reads itself (a libpq passfile named in its ``env``; checked before a start like the
    ``secret_env`` files, and removed with them when the supervisor's state is cleared), ``cwd`` its working
    directory (None:
    supervisord's), ``health_path`` the path that answers 200 once it serves. ``start_s`` is supervisord's
    ``startsecs`` (it counts as started once it ran that long), ``stop_s`` its ``stopwaitsecs`` (SIGTERM, then
    SIGKILL after that many seconds).

    Raises ValueError (naming the field and what is allowed) when a value is not valid.
    """

    name: str
    argv: tuple[str, ...]
    port: int
    env: tuple[tuple[str, str], ...] = ()
    secret_env: tuple[tuple[str, str], ...] = ()
    secret_files: tuple[str, ...] = ()
    cwd: str | None = None
    health_path: str = "/health"
    start_s: int = 3
    stop_s: int = 30

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise ValueError(
                f"name: {self.name!r} is not a program name (a lowercase letter, then up to 30 lowercase letters, "
                "digits, '-' or '_')"
            )
        self._check_argv()
        check_int("port", self.port, 1, 65535)
        object.__setattr__(self, "env", _pairs("env", self.env))
        for key, value in self.env:
            _check_env_value(key, value)
        secrets = _pairs("secret_env", self.secret_env)
        object.__setattr__(self, "secret_env", tuple((key, _check_path(f"secret_env {key}", p)) for key, p in secrets))
        files = self.secret_files
        if isinstance(files, str) or not isinstance(files, tuple | list):
            raise ValueError(f"secret_files: must be a sequence of absolute paths, not {files!r}")
        object.__setattr__(self, "secret_files", tuple(_check_path("secret_files", f) for f in files))
        both = sorted({key for key, _ in self.env} & {key for key, _ in self.secret_env})
        if both:
            raise ValueError(f"env: {', '.join(both)} also in secret_env; give each variable in one of them")
        if self.cwd is not None:
            object.__setattr__(self, "cwd", _check_path("cwd", self.cwd))
        path = _check_text("health_path", self.health_path)
        if not path.startswith("/") or any(ch.isspace() or ch in "?#" for ch in path):
            raise ValueError(f"health_path: must be a URL path starting with '/' (no spaces, '?' or '#'), not {path!r}")
        check_int("start_s", self.start_s, 0, 3600)
        check_int("stop_s", self.stop_s, 1, 3600)

    def _check_argv(self) -> None:
        argv = self.argv
        if isinstance(argv, str | bytes) or not isinstance(argv, tuple | list) or not argv:
            raise ValueError(f"argv: must be a non-empty sequence of strings (the command line), not {argv!r}")
        argv = tuple(argv)
        object.__setattr__(self, "argv", argv)
        for i, part in enumerate(argv):
            _check_text(f"argv[{i}]", part, show=False)
            _check_no_secret(f"argv[{i}]", part)
        if not Path(argv[0]).is_absolute():
            raise ValueError(f"argv[0]: the executable must be an absolute path, not {argv[0]!r}")

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"{HOST}:{self.port}"

    @property
    def health_url(self) -> str:
        return f"http://{HOST}:{self.port}{self.health_path}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (the pairs as lists)."""
        data = super().to_dict()
        data["env"] = [list(pair) for pair in self.env]
        data["secret_env"] = [list(pair) for pair in self.secret_env]
        return data


@dataclass(frozen=True)
class SupervisorConfig(Config):
    """One supervisord and the programs it runs, from ``state_dir`` (absolute; created at start).

    Raises ValueError (naming the field and what is allowed) when a value is not valid: no programs, names or
    ports given twice, a secret variable taken from different files, or a state directory whose socket path
    would be too long.
    """

    state_dir: Path
    programs: tuple[Program, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(_check_path("state_dir", self.state_dir)))
        size = len(str(self.socket).encode())
        if size > _MAX_SOCKET_BYTES:
            raise ValueError(
                f"state_dir: {str(self.state_dir)!r} is too long: the socket path {self.socket} has {size} bytes, "
                f"at most {_MAX_SOCKET_BYTES} are allowed (a unix socket's limit); choose a shorter directory"
            )
        programs = self.programs
        if isinstance(programs, Program) or not isinstance(programs, tuple | list) or not programs:
            raise ValueError("programs: must be a non-empty sequence of Program")
        for i, program in enumerate(programs):
            if not isinstance(program, Program):
                raise ValueError(f"programs[{i}]: must be a Program, not {type(program).__name__}")
        object.__setattr__(self, "programs", tuple(programs))
        for what in ("name", "port"):
            values = [getattr(p, what) for p in self.programs]
            twice = sorted({str(v) for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(
                    f"programs: {what} {', '.join(twice)} given to more than one program; each needs its own"
                )
        files: dict[str, str] = {}
        for program in self.programs:
            for key, path in program.secret_env:
                if files.setdefault(key, path) != path:
                    raise ValueError(
                        f"programs: secret_env {key} comes from {files[key]} and {path}; every program inherits "
                        "supervisord's environment, so a secret variable must come from one file"
                    )

    @property
    def socket(self) -> Path:
        """supervisord's XML-RPC socket: ``state_dir / "supervisor.sock"``."""
        return self.state_dir / SOCKET

    @property
    def url(self) -> str:
        """supervisord's XML-RPC address, ``unix://<socket>``."""
        return f"unix://{self.socket}"

    @property
    def addresses(self) -> tuple[str, ...]:
        """``127.0.0.1:<port>`` of every program, in order."""
        return tuple(p.address for p in self.programs)

    def program(self, name: str) -> Program:
        """The program called ``name``; SupervisorError naming the known ones if there is none."""
        for program in self.programs:
            if program.name == name:
                return program
        raise SupervisorError(f"no program {name!r} in this supervisord; known: {', '.join(self.names)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.programs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: the state directory as a string, the programs as a list of their dicts."""
        return {"state_dir": str(self.state_dir), "programs": [p.to_dict() for p in self.programs]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SupervisorConfig:
        """The configuration :meth:`to_dict` wrote (programs as dicts or :class:`Program`); unknown keys are an
        error naming the known ones."""
        data = dict(data)
        programs = data.get("programs")
        if isinstance(programs, list | tuple):
            converted = []
            for i, program in enumerate(programs):
                if isinstance(program, Mapping):
                    try:
                        program = Program.from_dict(program)
                    except (TypeError, ValueError) as exc:
                        raise ValueError(f"programs[{i}]: {exc}") from None
                converted.append(program)
            data["programs"] = tuple(converted)
        return super().from_dict(data)


def render(cfg: SupervisorConfig) -> str:
    """The supervisord.conf text for ``cfg`` (pure: reads and writes nothing). It names no secret: those reach the
    programs through supervisord's environment (:meth:`Supervisor.env`)."""
    state = cfg.state_dir
    lines = [
        "; Written by ragperf (ragperf.systems.supervisor): supervisord for the app instances. Do not edit.",
        "[unix_http_server]",
        f"file={_lit(str(cfg.socket))}",
        "chmod=0700",
        "",
        "[supervisord]",
        "nodaemon=true",
        f"logfile={_lit(str(state / DAEMON_LOG))}",
        "logfile_maxbytes=5MB",
        f"logfile_backups={LOG_BACKUPS}",
        "loglevel=info",
        f"pidfile={_lit(str(state / PIDFILE))}",
        f"childlogdir={_lit(str(state))}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl={_lit(cfg.url)}",
    ]
    for program in cfg.programs:
        lines += [
            "",
            f"[program:{program.name}]",
            f"command={_lit(shlex.join(program.argv))}",
            *([f"directory={_lit(program.cwd)}"] if program.cwd is not None else []),
            "autostart=true",
            "autorestart=true",
            f"startsecs={program.start_s}",
            f"startretries={START_RETRIES}",
            "stopsignal=TERM",
            f"stopwaitsecs={program.stop_s}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={_lit(str(state / PROGRAM_LOG.format(name=program.name)))}",
            "stdout_logfile_maxbytes=10MB",
            f"stdout_logfile_backups={LOG_BACKUPS}",
            *([f"environment={_environment(program.env)}"] if program.env else []),
        ]
    return "\n".join(lines) + "\n"


# -- supervisord as a process ragperf starts and stops ---------------------------------------------------------------


class _Connection(UnixStreamHTTPConnection):
    """supervisor's unix-socket HTTP connection, with a timeout on every read and write."""

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.timeout)


class _Transport(SupervisorTransport):
    """supervisor's own XML-RPC transport over the unix socket at ``url``, each call bounded by ``timeout`` s."""

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(None, None, url)

        def connection() -> _Connection:
            conn = _Connection("localhost", timeout=timeout)
            conn.socketfile = url[len("unix://") :]
            return conn

        self._get_connection = connection


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...), or None without such a process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _started_epoch(ticks: int) -> float:
    """A start time in clock ticks since boot (:func:`procs.start_ticks`) as seconds since the epoch."""
    btime = next(
        int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
    )
    return btime + ticks / os.sysconf("SC_CLK_TCK")


class SupervisorStatus(procs.ServerStatus, total=False):
    """:meth:`Supervisor.status`: the server's fields, its log, and its programs (:meth:`Supervisor.processes`)."""

    log: str
    programs: list[dict[str, Any]]
    programs_error: str


class Supervisor(procs.Server):
    """One supervisord whose files all live in ``state_dir``, and the programs it runs; stopped by its recorded PID.

    A start checks every program's port is free and every secret file is there and 0600 before supervisord is
    spawned, and counts once supervisord answers XML-RPC, every program is RUNNING and answers 200 on its health
    path. A start with the configuration it already runs with does nothing; another one restarts supervisord and
    every program. The process record's ``port`` is 0: supervisord has no TCP port of its own.
    """

    NAME = "supervisord"
    WHAT = "supervisord"
    RECORD = RECORD
    LOG = LOG
    CONFIG = SupervisorConfig
    ERROR = SupervisorError
    TIMEOUT = 60.0
    STOP_TIMEOUT = 40.0  # stop()'s default only when the record names no programs (else their stop_s summed, + 10)

    @property
    def socket(self) -> Path:
        return self.state_dir / SOCKET

    @property
    def children_path(self) -> Path:
        return self.state_dir / CHILDREN

    # -- hooks ---------------------------------------------------------------------------------------------------

    def files(self, cfg: SupervisorConfig) -> dict[str, str | None]:
        secret_paths = sorted({path for p in cfg.programs for path in (*(f for _, f in p.secret_env), *p.secret_files)})
        return {CONF: render(cfg), SECRET_FILES: json.dumps(secret_paths, indent=2) + "\n"}

    def argv(self, cfg: SupervisorConfig) -> list[str]:
        return [supervisord_binary(), "--nodaemon", "--configuration", str(self.state_dir / CONF)]

    def env(self, cfg: SupervisorConfig) -> dict[str, str]:
        """This process's environment plus every program's secret_env values, read from their files."""
        return {**os.environ, **self._secrets(cfg)}

    def address(self, cfg: SupervisorConfig) -> tuple[str, int]:
        """supervisord has no TCP port of its own: its socket, and port 0 (the programs' ports are checked)."""
        return cfg.url, 0

    def _check_port(self, cfg: SupervisorConfig) -> None:
        """Before anything is written or spawned (no supervisord runs from here now): the programs a killed
        supervisord left behind are killed (:meth:`_kill_orphans`); then every program's port must be free, its
        executable and working directory there, and every secret file readable (:meth:`_secrets`)."""
        self._kill_orphans(None)
        for i, program in enumerate(cfg.programs):
            if not procs.port_is_free(program.port, HOST):
                raise SupervisorError(
                    f"programs[{i}] {program.name}: port {program.port} on {HOST} is taken (in use by another "
                    "process); stop it or choose another port"
                )
            if not os.access(program.argv[0], os.X_OK):
                raise SupervisorError(
                    f"programs[{i}] {program.name}: argv[0] {program.argv[0]} is not an executable file"
                )
            if program.cwd is not None and not Path(program.cwd).is_dir():
                raise SupervisorError(f"programs[{i}] {program.name}: cwd {program.cwd} is not a directory")
        self._secrets(cfg)

    def awaited(self, cfg: SupervisorConfig) -> str:
        return f"get every program serving ({', '.join(cfg.addresses)})"

    def ready(self, cfg: SupervisorConfig) -> str | None:
        try:
            infos = self._infos()
        except SupervisorError as exc:
            return str(exc)
        for program in cfg.programs:
            missing = self._serving(program, infos.get(program.name))
            if missing is not None:
                return missing
        return None

    def tail(self, proc: procs.Proc) -> str:
        daemon = procs.Proc(proc.name, proc.pid, proc.start_ticks, proc.argv, str(self.state_dir / DAEMON_LOG))
        return f"its log {daemon.log} ends:\n{procs.log_tail(daemon)}"

    def after_stop(self, proc: procs.Proc) -> None:
        """Kill the programs a supervisord that died uncleanly left behind (:meth:`_kill_orphans`), and remove the
        socket and pid file it left."""
        self._kill_orphans(proc.pid)
        self.children_path.unlink(missing_ok=True)
        self.socket.unlink(missing_ok=True)  # a killed supervisord leaves its socket (and pid file) behind
        (self.state_dir / PIDFILE).unlink(missing_ok=True)

    def clear_state(self) -> None:
        """Remove the files supervisord and ragperf made in the state directory (never anything else), and the
        directory itself when that leaves it empty."""
        self._clear_secret_files()
        own = [CONF, RECORD, LOG, PIDFILE, SOCKET, CHILDREN, DAEMON_LOG, SECRET_FILES]
        own += [f"{DAEMON_LOG}.{i}" for i in range(1, LOG_BACKUPS + 1)]
        for name in own:
            (self.state_dir / name).unlink(missing_ok=True)
        # Every program's log and its rotated copies; the temporary socket a supervisord killed at start leaves.
        for path in [*self.state_dir.glob(PROGRAM_LOG.format(name="*") + "*"), *self.state_dir.glob(f"{SOCKET}.*")]:
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()  # only if now empty

    def _clear_secret_files(self) -> None:
        """Remove the secret files the last start listed, and their directories when that leaves them empty."""
        try:
            paths = json.loads((self.state_dir / SECRET_FILES).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return
        for path in map(Path, paths):
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only if now empty

    # -- the life cycle --------------------------------------------------------------------------------------------

    def stop(self, timeout: float | None = None) -> bool:
        """Stop supervisord by its recorded PID (it stops its programs first, one by one, each within its ``stop_s``;
        SIGKILL when they took longer than all of them together and 10 s), then kill
        any program a supervisord that died uncleanly left behind, and clear the record.

        False if supervisord was not running; safe to call any number of times.
        """
        record = self._record()
        if timeout is None and record is not None:
            with contextlib.suppress(ValueError, TypeError, KeyError):
                programs = SupervisorConfig.from_dict(record["config"]).programs
                timeout = sum(p.stop_s for p in programs) + 10.0  # supervisord stops its programs one by one
        if record is not None and self.running:
            with contextlib.suppress(SupervisorError):
                self.processes()  # refresh children.json: the PIDs after_stop may have to kill
        return super().stop(timeout)

    # -- what runs -------------------------------------------------------------------------------------------------

    def processes(self) -> list[dict[str, Any]]:
        """Every program as supervisord reports it: name, state ("RUNNING", "STARTING", "BACKOFF", "EXITED",
        "FATAL", ...), pid (0 when not running), start (epoch s of its last start), port and exitstatus.

        Raises:
            SupervisorError: no supervisord runs from this state directory, or it did not answer.
        """
        cfg = self._running_config()
        infos = self._infos()
        return [
            {
                "name": program.name,
                "state": infos[program.name]["statename"] if program.name in infos else "UNKNOWN",
                "pid": int(infos.get(program.name, {}).get("pid", 0)),
                "start": int(infos.get(program.name, {}).get("start", 0)),
                "port": program.port,
                "exitstatus": int(infos.get(program.name, {}).get("exitstatus", 0)),
            }
            for program in cfg.programs
        ]

    def pid_of(self, name: str) -> int:
        """The PID of program ``name`` as supervisord reports it.

        Raises:
            SupervisorError: there is no such program, or it is not running (the message says its state).
        """
        info = self._info(name)
        if not info["pid"] or info["statename"] not in ("RUNNING", "STARTING"):
            raise SupervisorError(f"program {name} is not running (state {info['statename']})")
        return int(info["pid"])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to program ``name`` by the PID supervisord reports (checked first against /proc: that PID is
        supervisord's child and started when supervisord says it did); return the PID signalled.

        Raises:
            SupervisorError: there is no such program, it is not running, or the PID does not check out.
        """
        info = self._info(name)
        pid = int(info["pid"])
        if not pid or info["statename"] not in ("RUNNING", "STARTING"):
            raise SupervisorError(f"program {name} is not running (state {info['statename']}); not signalled")
        supervisord = self.proc
        fields_ = _stat_fields(pid)
        ticks = procs.start_ticks(pid)
        if fields_ is None or ticks is None or supervisord is None or int(fields_[1]) != supervisord.pid:
            raise SupervisorError(f"program {name}: pid {pid} is not a child of supervisord any more; not signalled")
        started = _started_epoch(ticks)
        if abs(started - float(info["start"])) > 5.0:
            raise SupervisorError(
                f"program {name}: pid {pid} started at {started:.0f}, supervisord says {info['start']}; not signalled"
            )
        os.kill(pid, sig)
        log.info("sent signal %d to program %s (pid %d)", sig, name, pid)
        return pid

    def wait_serving(self, name: str, *, timeout: float = 60.0, not_pid: int | None = None) -> float:
        """Seconds until program ``name`` is RUNNING (with a PID other than ``not_pid`` when given) and answers 200
        on its health path.

        Raises:
            SupervisorError: there is no such program, it went FATAL (supervisord gave up restarting it),
                supervisord died, or ``timeout`` passed.
        """
        began = time.monotonic()
        cfg = self._running_config()
        program = cfg.program(name)

        def probe() -> str | None:
            info = self._info(name)
            if not_pid is not None and int(info["pid"]) == not_pid:
                return f"{name} still has pid {not_pid} (state {info['statename']})"
            return self._serving(program, info)

        procs.wait_until(
            probe,
            timeout=timeout,
            what=f"program {name} did not serve on {program.health_url}",
            proc=self.proc,
            interval=0.05,
            error=SupervisorError,
            tail=lambda: self._program_tail(name),
        )
        return time.monotonic() - began

    def restart_program(self, name: str, *, timeout: float = 60.0) -> float:
        """Stop program ``name`` gracefully (SIGTERM, SIGKILL after its ``stop_s``), start it again, and return the
        seconds from the stop until it served again (:meth:`wait_serving`).

        Raises:
            SupervisorError: there is no such program, supervisord refused, or it did not serve within ``timeout``.
        """
        program = self._running_config().program(name)
        began = time.monotonic()
        info = self._info(name)
        old = int(info["pid"]) or None
        if info["statename"] in ("RUNNING", "STARTING", "BACKOFF"):  # what supervisord can stop
            self._call("stopProcess", name, True, timeout=program.stop_s + 10.0)
        self._call("startProcess", name, False)
        left = max(timeout - (time.monotonic() - began), 0.0)
        self.wait_serving(name, timeout=left, not_pid=old)
        return time.monotonic() - began

    def status(self) -> SupervisorStatus:
        """What runs (JSON values): the server's fields, its log, and ``programs`` (:meth:`processes`) when it runs."""
        base = super().status()
        result = SupervisorStatus(**base, log=str(self.log_path))
        if base["running"]:
            try:
                result["programs"] = self.processes()
            except SupervisorError as exc:
                result["programs_error"] = str(exc)
        return result

    # -- helpers ---------------------------------------------------------------------------------------------------

    def _running_config(self) -> SupervisorConfig:
        cfg = self.config
        if cfg is None:
            raise SupervisorError(f"no supervisord runs from {self.state_dir}")
        return cfg  # type: ignore[no-any-return]

    def _call(self, method: str, *args: Any, timeout: float = 5.0) -> Any:
        """supervisord's XML-RPC ``supervisor.<method>(*args)``; every fault and socket error is a SupervisorError."""
        url = f"unix://{self.socket}"
        transport = _Transport(url, timeout)
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        call = f"{method}({', '.join(repr(a) for a in args)})"
        try:
            return getattr(proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as exc:
            raise SupervisorError(f"supervisord ({url}) refused {call}: {exc.faultString}") from None
        except (xmlrpc.client.Error, OSError, http.client.HTTPException) as exc:
            raise SupervisorError(
                f"supervisord did not answer {call} on {url} ({type(exc).__name__}: {exc}); is it running?"
            ) from None
        finally:
            transport.close()

    def _info(self, name: str) -> dict[str, Any]:
        """supervisord's getProcessInfo of program ``name`` (which must be in the running configuration)."""
        self._running_config().program(name)
        info = self._call("getProcessInfo", name)
        self._remember({name: info})
        return info  # type: ignore[no-any-return]

    def _infos(self) -> dict[str, dict[str, Any]]:
        """supervisord's getAllProcessInfo, by program name; remembers the PIDs (``children.json``)."""
        infos = {info["name"]: info for info in self._call("getAllProcessInfo")}
        self._remember(infos)
        return infos

    def _serving(self, program: Program, info: Mapping[str, Any] | None) -> str | None:
        """None when ``program`` is RUNNING and answers its health path; else what is missing. Raises
        SupervisorError when supervisord gave up on it (FATAL), with its log's tail."""
        if info is None:
            return f"supervisord does not know {program.name}"
        state = info["statename"]
        if state == "FATAL":
            why = info.get("spawnerr") or f"it exited {START_RETRIES + 1} times within {program.start_s} s of a start"
            raise SupervisorError(
                f"program {program.name} is FATAL (supervisord gave up starting it: {why}); "
                f"{self._program_tail(program.name)}"
            )
        if state not in STATES_UP:
            return f"{program.name} is {state}"
        missing = procs.http_ok(program.health_url, timeout=1.0)
        return None if missing is None else f"{program.health_url}: {missing}"

    def _program_tail(self, name: str) -> str:
        path = self.state_dir / PROGRAM_LOG.format(name=name)
        return f"its log {path} ends:\n{procs.log_tail(procs.Proc(name, 0, 0, [], str(path)))}"

    def _kill_orphans(self, supervisord: int | None) -> None:
        """Kill exactly the processes (and their process groups) whose PID and start time were last seen through
        XML-RPC (``children.json``) and that still run; nothing else. Called once supervisord is gone."""
        for name, seen in self._children().items():
            pid, ticks = int(seen["pid"]), int(seen["start_ticks"])
            if procs.start_ticks(pid) != ticks:
                continue
            log.warning("supervisord (pid %s) left program %s (pid %d) behind; killing it", supervisord, name, pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:  # supervisord makes every program the leader of its own process group
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            orphan = procs.Proc(name, pid, ticks, [], "")
            procs.wait_until(
                lambda orphan=orphan: None if not procs.is_alive(orphan) else "still alive",  # type: ignore[misc]
                timeout=10.0,
                what=f"program {name} (pid {pid}) did not die after SIGKILL",
                error=SupervisorError,
            )
        self.children_path.unlink(missing_ok=True)

    def _children(self) -> dict[str, dict[str, int]]:
        try:
            data = json.loads(self.children_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _remember(self, infos: Mapping[str, Mapping[str, Any]]) -> None:
        """Keep the PID and start time of every running program in ``infos`` that is really supervisord's child."""
        supervisord = self.proc
        if supervisord is None:
            return
        children = self._children()
        for name, info in infos.items():
            pid = int(info.get("pid") or 0)
            fields_ = _stat_fields(pid) if pid else None
            ticks = procs.start_ticks(pid) if pid else None
            if fields_ is not None and ticks is not None and int(fields_[1]) == supervisord.pid:
                children[name] = {"pid": pid, "start_ticks": ticks}
        procs.write_atomic(self.children_path, json.dumps(children, indent=2) + "\n")

    def _secrets(self, cfg: SupervisorConfig) -> dict[str, str]:
        """The secret_env values, read from their files; SupervisorError naming a file that is missing, not a
        regular file, or readable by others, and the fix."""
        values: dict[str, str] = {}
        for program in cfg.programs:
            for key, path in program.secret_env:
                if key in values:
                    continue
                values[key] = _read_secret(program.name, key, Path(path))
            for path in program.secret_files:
                _secret_stat(f"program {program.name}: secret_files: {path}", Path(path))
        return values


def _read_secret(program: str, key: str, path: Path) -> str:
    where = f"program {program}: secret_env {key}: {path}"
    _secret_stat(where, path)
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise SupervisorError(f"{where} cannot be read ({type(exc).__name__})") from None
    if not value or "\0" in value or "\n" in value:
        raise SupervisorError(f"{where} must hold the value on one line (not empty, no NUL)")
    return value


def _secret_stat(where: str, path: Path) -> None:
    """SupervisorError naming ``where`` unless ``path`` is a regular file readable by its owner only."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SupervisorError(f"{where} does not exist; write the value there with mode 0600") from None
    except OSError as exc:
        raise SupervisorError(f"{where} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise SupervisorError(f"{where} is not a regular file; write the value to a file with mode 0600")
    if info.st_mode & 0o077:
        raise SupervisorError(
            f"{where} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}); run chmod 600 {path}"
        )


# -- the change model ------------------------------------------------------------------------------------------------


def _program_diff(old: Program, new: Program) -> dict[str, list[Any]]:
    before, after = old.to_dict(), new.to_dict()
    return {f.name: [before[f.name], after[f.name]] for f in fields(Program) if before[f.name] != after[f.name]}


def _diff(current: SupervisorConfig, desired: SupervisorConfig) -> dict[str, Any]:
    """What differs: ``state_dir`` [old, new], and by program name: "added", "removed", or {field: [old, new]}."""
    diff: dict[str, Any] = {}
    if current.state_dir != desired.state_dir:
        diff["state_dir"] = [str(current.state_dir), str(desired.state_dir)]
    old = {p.name: p for p in current.programs}
    new = {p.name: p for p in desired.programs}
    programs: dict[str, Any] = {}
    for name in [*old, *(n for n in new if n not in old)]:
        if name not in new:
            programs[name] = "removed"
        elif name not in old:
            programs[name] = "added"
        elif old[name] != new[name]:
            programs[name] = _program_diff(old[name], new[name])
    if not programs and current.names != desired.names:
        programs["order"] = [list(current.names), list(desired.names)]
    if programs:
        diff["programs"] = programs
    return diff


def _describe(diff: Mapping[str, Any]) -> str:
    parts = []
    if "state_dir" in diff:
        parts.append(f"state_dir {diff['state_dir'][0]} -> {diff['state_dir'][1]}")
    for name, change in diff.get("programs", {}).items():
        if isinstance(change, str):
            parts.append(f"program {name} {change}")
        elif name == "order" and isinstance(change, list):
            parts.append(f"program order {', '.join(change[0])} -> {', '.join(change[1])}")
        else:
            parts.append(f"{name}: " + ", ".join(f"{k} {old} -> {new}" for k, (old, new) in change.items()))
    return "; ".join(parts)


def plan(current: SupervisorConfig | None, desired: SupervisorConfig | None) -> list[Change]:
    """The change that takes supervisord from ``current`` to ``desired`` (None: not running): start, restart (the
    reason and ``details["diff"]`` name what differs), or stop; none when they are equal. Pure."""
    if current == desired:
        return []
    if current is None:
        assert desired is not None
        reason = (
            f"start supervisord with {len(desired.programs)} instance(s) ({', '.join(desired.names)}) on "
            f"{', '.join(desired.addresses)}; it restarts one that dies"
        )
        details: dict[str, Any] = {"action": "start", "addresses": list(desired.addresses)}
    elif desired is None:
        reason = f"stop supervisord and its {len(current.programs)} instance(s) ({', '.join(current.names)})"
        details = {"action": "stop", "addresses": list(current.addresses)}
    else:
        diff = _diff(current, desired)
        reason = f"restart supervisord and every instance: {_describe(diff)}"
        details = {"action": "restart", "addresses": list(desired.addresses), "diff": diff}
    return [Change.of_config(KIND, CHANGE_NAME, current, desired, reason, details)]


class SupervisorApplier(procs.ServerApplier):
    """Makes and undoes ``supervisor`` changes: starts (or restarts) supervisord with ``after``; undo brings back
    ``before``, or stops it and clears its files when ``before`` is None (see
    :class:`ragperf.core.procs.ServerApplier`)."""

    kind = KIND
    SERVER = Supervisor
    TIMEOUT = 90.0
