"""The lab: a disposable stand-in of the users' stack that ragperf starts itself on loopback.

PostgreSQL 18 with pgvector (stock settings), the LLM provider simulator and the frozen legacy
RAG service. All state lives in one lab directory (``.lab/`` in the checkout unless
RAGPERF_LAB_DIR says otherwise): state.json with the PID and port of every process, the
0600 secrets file, the data directory and the logs. ``up`` is idempotent and recovers from a
crash; ``down`` stops exactly the processes the state records, by PID.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from pydantic import SecretStr

from ragperf.core import procs, targetlock
from ragperf.core.params import REPO_ROOT
from ragperf.lab import labdb, pginstall
from ragperf.systems import cachetier
from ragperf.systems.llm import Provider
from ragperf.systems.monitoring import stack as monitoring

log = logging.getLogger(__name__)

PROFILES = ("smoke", "demo")
SERVICES = ("postgres", "llm", "app")
COLLECTION = labdb.COLLECTION  # the app's LangChain collection on the lab
APP_MODULE = "ragperf_lab.legacy.app:app"  # the frozen app, as uvicorn loads it
APP_ROLE = labdb.APP_ROLE  # the role the lab's app connects as
JOURNALS = "journals.txt"  # the journals of the phases that worked on the lab, one path a line


class LabError(RuntimeError):
    """The lab could not be brought to the asked state."""


def default_lab_dir() -> Path:
    """``$RAGPERF_LAB_DIR``, else ``.lab/`` in the checkout (or a /var/tmp fallback, see below)."""
    if env := os.environ.get("RAGPERF_LAB_DIR"):
        return Path(env).resolve()
    lab_dir = REPO_ROOT / ".lab"
    if labdb.run_as_user() is not None and not _traversable_by_others(REPO_ROOT):
        # As root, the server runs as an unprivileged user who must reach its data directory.
        digest = hashlib.sha1(str(REPO_ROOT).encode()).hexdigest()[:10]
        return Path("/var/tmp") / f"ragperf-lab-{digest}"
    return lab_dir


def _traversable_by_others(path: Path) -> bool:
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents])


@dataclass
class LabState:
    """What state.json records. Passwords are not in it (see secrets.json)."""

    lab_dir: Path
    profile: str | None = None
    processes: dict[str, procs.Proc] = field(default_factory=dict)
    corpus: dict[str, object] = field(default_factory=dict)
    llm_base_url: str | None = None

    @property
    def path(self) -> Path:
        return self.lab_dir / "state.json"

    @classmethod
    def load(cls, lab_dir: Path) -> LabState:
        path = lab_dir / "state.json"
        if not path.exists():
            return cls(lab_dir)
        data = json.loads(path.read_text())
        return cls(
            lab_dir,
            profile=data.get("profile"),
            processes={k: procs.Proc.from_json(v) for k, v in data.get("processes", {}).items()},
            corpus=data.get("corpus", {}),
            llm_base_url=data.get("llm_base_url"),
        )

    def save(self) -> None:
        data = {
            "profile": self.profile,
            "processes": {k: v.to_json() for k, v in self.processes.items()},
            "corpus": self.corpus,
            "llm_base_url": self.llm_base_url,
        }
        procs.write_atomic(self.path, json.dumps(data, indent=2) + "\n")

    def alive(self, name: str) -> bool:
        return name in self.processes and procs.is_alive(self.processes[name])

    def port(self, name: str) -> int | None:
        proc = self.processes.get(name)
        return proc.port if proc else None


def credentials(lab_dir: Path) -> labdb.Credentials:
    """The lab's passwords, made once and kept in a 0600 file inside the lab directory."""
    path = lab_dir / "secrets.json"
    if not path.exists():
        lab_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"superuser_password": secrets.token_urlsafe(18),
                       "app_password": secrets.token_urlsafe(18)}, out)  # fmt: skip
    return labdb.Credentials(**json.loads(path.read_text()))


@contextlib.contextmanager
def _locked(lab_dir: Path) -> Iterator[None]:
    lab_dir.mkdir(parents=True, exist_ok=True)
    with open(lab_dir / "lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LabError(f"another ragperf command is working on the lab in {lab_dir}") from None
        yield


def register_journal(lab_dir: Path, journal: Path) -> None:
    """Remember that the phase journaling into ``journal`` works on this lab, so that ``ragperf lab reset``
    can undo it from the journal whichever outputs directory the run lives in."""
    path, line = lab_dir / JOURNALS, str(Path(journal).absolute())
    known = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if line not in known:
        procs.write_atomic(path, "\n".join([*known, line]) + "\n")


def registered_journals(lab_dir: Path) -> list[Path]:
    """The journals of the phases that worked on this lab, oldest first (they may have been deleted since)."""
    path = lab_dir / JOURNALS
    return [Path(line) for line in path.read_text(encoding="utf-8").splitlines() if line] if path.exists() else []


def _port_for(state: LabState, name: str) -> int:
    """Reuse the service's previous port when it is still free, so URLs stay stable."""
    previous = state.port(name)
    return previous if previous and procs.port_is_free(previous) else procs.free_port()


SIMULATOR_KEY_ENV = "RAGPERF_LLM_API_KEY"  # ragperf_lab.llm_simulator.API_KEY_ENV: set, it requires that key


def external_provider() -> Provider | None:
    """A real provider from RAGPERF_LLM_BASE_URL / RAGPERF_LLM_API_KEY, if one is configured."""
    url = os.environ.get("RAGPERF_LLM_BASE_URL")
    if not url:
        return None
    return Provider(url, SecretStr(os.environ.get(SIMULATOR_KEY_ENV, "")))


def up(profile: str = "smoke", lab_dir: Path | None = None) -> LabState:
    """Bring the lab up for ``profile``: reuse what runs, restart what died, load what is missing."""
    if profile not in PROFILES:
        raise LabError(f"unknown profile {profile!r}: allowed are {', '.join(PROFILES)}")
    lab_dir = lab_dir or default_lab_dir()
    pginstall.bin_path("postgres")  # fails early, with the fix, if setup has not run
    with _locked(lab_dir):
        state = LabState.load(lab_dir)
        creds = credentials(lab_dir)
        _ensure_postgres(state, creds)
        provider = _ensure_llm(state)
        if state.profile != profile or labdb.loaded_chunks(state.port("postgres"), creds) == 0:
            _stop_service(state, "app")  # no requests against a half-loaded corpus
            _load(state, creds, profile, provider)
        _ensure_app(state, creds, provider)
        return state


def restart_postgres(lab_dir: Path | None = None) -> None:
    """Restart the lab's PostgreSQL on the same port (settings that need a restart); the app reconnects."""
    lab_dir = lab_dir or default_lab_dir()
    with _locked(lab_dir):
        _restart_postgres(_running(lab_dir), credentials(lab_dir))


def reset_tuning(lab_dir: Path | None = None) -> list[str]:
    """Bring the lab back to the untuned state the users have (stock settings, LangChain's indexes only,
    a dimensionless embedding column, no role settings), restarting PostgreSQL if needed; returns what
    was undone. Phase 0 calls this on the lab, so a baseline never measures an earlier run's tuning; any
    other caller is refused while a run holds the lab (see :mod:`ragperf.core.targetlock`)."""
    lab_dir = lab_dir or default_lab_dir()
    with targetlock.held(targetlock.lab_target(lab_dir), command=targetlock.command_line()), _locked(lab_dir):
        state, creds = _running(lab_dir), credentials(lab_dir)
        done = [f"stopped {name} (Phase 4)" for name in _stop_scale_tier(lab_dir)]
        done += [f"stopped {name} (Phase 3)" for name in monitoring.stop_all(lab_dir / "monitor")]
        done += [f"stopped {name} (Phase 2)" for name in _stop_cache_tier(lab_dir)]
        untuned, pending = labdb.untune(state.port("postgres"), creds)
        done += untuned
        if pending:
            _restart_postgres(state, creds)
            done.append("restarted PostgreSQL")
        return done


FAULTABLE = ("llm", "postgres")


@contextlib.contextmanager
def interrupted(service: str, lab_dir: Path | None = None) -> Iterator[float]:
    """Stop one of the lab's services by its PID for as long as the ``with`` block runs, then start it again on
    the same port, so that nothing else restarts (the app reconnects per request); yields when the stop began
    (epoch seconds). A fault drill's fault: ``llm`` (the provider simulator) or ``postgres``.

    Raises:
        LabError: an unknown service, one that does not run, or a real provider in the simulator's place.
    """
    if service not in FAULTABLE:
        raise LabError(f"cannot interrupt {service!r}: allowed are {', '.join(FAULTABLE)}")
    lab_dir = lab_dir or default_lab_dir()
    with _locked(lab_dir):
        state = _running(lab_dir)
        if not state.alive(service):
            what = "a real provider is configured (RAGPERF_LLM_BASE_URL)" if service == "llm" else "it is not running"
            raise LabError(f"the lab's {service} cannot be interrupted: {what}")
        proc = state.processes[service]
        stopped = time.time()  # the fault begins with the stop: requests fail from the first signal on
        if service == "postgres":
            labdb.stop(proc)
        else:
            procs.stop(proc)
    try:
        yield stopped
    finally:
        with _locked(lab_dir):
            state = LabState.load(lab_dir)
            if service == "postgres":
                _ensure_postgres(state, credentials(lab_dir))
            else:
                _restart_llm(state, proc)


def _restart_llm(state: LabState, previous: procs.Proc) -> None:
    """The simulator again, on its previous port and command line (the app keeps its provider URL)."""
    if state.alive("llm"):
        return
    if previous.port is None or not procs.port_is_free(previous.port):
        raise LabError(f"the LLM simulator's port {previous.port} is taken: run `ragperf lab up` to move it")
    proc = procs.start("llm", previous.argv, state.lab_dir / "llm.log", port=previous.port,
                       env=simulator_environment())  # fmt: skip
    procs.wait_http(f"http://127.0.0.1:{previous.port}/health", proc)
    state.processes["llm"] = proc
    state.save()


def _cache_tier(lab_dir: Path) -> CacheTierStatus:
    """Phase 2's parts running from the lab's directory: nginx's URL (the cached entrypoint), the add-on's, Redis's."""
    now = cachetier.running(lab_dir / "cache")
    return CacheTierStatus(
        nginx=f"http://{now.nginx.listen_host}:{now.nginx.listen_port}" if now.nginx else None,
        cache_addon=now.proxy.url if now.proxy else None,
        redis=now.redis.url if now.redis else None,
    )


def _stop_scale_tier(lab_dir: Path) -> list[str]:
    from ragperf.systems import scaletier

    return scaletier.stop_all(lab_dir / "scale")


def _scale_tier(lab_dir: Path) -> list[str]:
    from ragperf.systems import scaletier

    return [name for name, part in scaletier.status(lab_dir / "scale").items() if part["running"]]


def _stop_cache_tier(lab_dir: Path) -> list[str]:
    """Stop Phase 2's nginx, cache add-on and Redis if they run from the lab's directory."""
    return cachetier.stop_all(lab_dir / "cache")


def _running(lab_dir: Path) -> LabState:
    state = LabState.load(lab_dir)
    if not state.alive("postgres"):
        raise LabError(f"the lab's PostgreSQL is not running (lab {lab_dir}): run `ragperf lab up`")
    return state


def _restart_postgres(state: LabState, creds: labdb.Credentials) -> None:
    previous = state.port("postgres")
    labdb.stop(state.processes["postgres"])  # the record stays, so the same port is taken again
    _ensure_postgres(state, creds)
    if state.port("postgres") != previous:  # the port was taken meanwhile: the app is pointed at the new one
        log.warning("the lab's PostgreSQL moved from port %s to %s", previous, state.port("postgres"))
        _ensure_app(state, creds, _ensure_llm(state))


def _ensure_postgres(state: LabState, creds: labdb.Credentials) -> None:
    if state.alive("postgres"):
        return
    pgdata = state.lab_dir / "pgdata"
    if not (pgdata / "PG_VERSION").exists():
        log.info("creating a new PostgreSQL cluster in %s", pgdata)
        labdb.initdb(pgdata, creds.superuser_password)
        state.profile = None
    previous = state.port("postgres")
    port = _port_for(state, "postgres")
    state.processes["postgres"] = labdb.start(pgdata, port, state.lab_dir / "run", state.lab_dir / "postgres.log")
    if port != previous:
        _stop_service(state, "app")  # its DATABASE_URL names the old port
    state.save()
    labdb.bootstrap(port, creds)


def simulator_environment() -> dict[str, str]:
    """This process's environment without RAGPERF_LLM_API_KEY: that key is meant for a real provider, and the
    simulator, given it, would refuse the lab's app, which has no key for it."""
    return {k: v for k, v in os.environ.items() if k != SIMULATOR_KEY_ENV}


def _ensure_llm(state: LabState) -> Provider:
    if (provider := external_provider()) is not None:
        _stop_service(state, "llm")
        state.llm_base_url = provider.base_url
        return provider
    if not state.alive("llm"):
        port = _port_for(state, "llm")
        argv = [sys.executable, "-m", "ragperf_lab.llm_simulator", "--host", "127.0.0.1", "--port", str(port)]
        proc = procs.start("llm", argv, state.lab_dir / "llm.log", port=port, env=simulator_environment())
        procs.wait_http(f"http://127.0.0.1:{port}/health", proc)
        state.processes["llm"] = proc
        state.llm_base_url = f"http://127.0.0.1:{port}/v1"
        _stop_service(state, "app")  # the app must be pointed at the new provider URL
        state.save()
    return Provider(state.llm_base_url or "")


def _load(state: LabState, creds: labdb.Credentials, profile: str, provider: Provider) -> None:
    from ragperf_lab import corpus

    log.info("loading the %s corpus", profile)
    state.profile = None
    state.corpus = {}
    state.save()
    stats = labdb.load_corpus(state.port("postgres"), creds, profile, provider)
    questions = corpus.question_pool(profile)
    corpus.write_questions_jsonl(state.lab_dir / "questions.jsonl", questions)
    state.profile = profile
    state.corpus = {**stats, "questions": len(questions), "questions_file": str(state.lab_dir / "questions.jsonl")}
    state.save()


def _ensure_app(state: LabState, creds: labdb.Credentials, provider: Provider) -> None:
    if state.alive("app"):
        return
    port = _port_for(state, "app")
    env = {
        **os.environ,
        **app_environment(provider),
        "DATABASE_URL": labdb.dsn(state.port("postgres"), labdb.APP_ROLE, creds.app_password),
        "OPENAI_API_KEY": provider.api_key.get_secret_value(),
    }
    proc = procs.start("app", app_argv(port), state.lab_dir / "app.log", env=env, port=port)
    procs.wait_http(f"http://127.0.0.1:{port}/health", proc)
    state.processes["app"] = proc
    state.save()


def app_argv(port: int | str) -> list[str]:
    """The command line that runs the frozen app on ``port`` (the lab's app, and each of Phase 4's instances)."""
    return [sys.executable, "-m", "uvicorn", APP_MODULE, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]


def app_environment(provider: Provider) -> dict[str, str]:
    """The app's environment but for its secrets (``DATABASE_URL`` with a password, ``OPENAI_API_KEY``)."""
    return {"OPENAI_BASE_URL": provider.base_url, "COLLECTION_NAME": labdb.COLLECTION}


def provider(lab_dir: Path | None = None) -> Provider:
    """The LLM provider the lab's app is pointed at: a real one from the environment, else the running simulator.

    Raises:
        LabError: neither is configured nor runs.
    """
    if (external := external_provider()) is not None:
        return external
    state = LabState.load(lab_dir or default_lab_dir())
    if not state.alive("llm") or not state.llm_base_url:
        raise LabError("the lab's LLM simulator does not run: start the lab with `ragperf lab up`")
    return Provider(state.llm_base_url)


def _stop_service(state: LabState, name: str) -> bool:
    proc = state.processes.pop(name, None)
    if proc is None:
        return False
    stopped = labdb.stop(proc) if name == "postgres" else procs.stop(proc)
    state.save()
    return stopped


def down(lab_dir: Path | None = None) -> list[str]:
    """Stop every process the lab started, by its recorded PID; return the names that were running."""
    lab_dir = lab_dir or default_lab_dir()
    if not (lab_dir / "state.json").exists():
        return []
    with _locked(lab_dir):
        state = LabState.load(lab_dir)
        return (_stop_scale_tier(lab_dir) + monitoring.stop_all(lab_dir / "monitor")
                + _stop_cache_tier(lab_dir)
                + [name for name in reversed(SERVICES) if _stop_service(state, name)])  # fmt: skip


class ServiceStatus(TypedDict):
    """One process of the lab, as :func:`status` shows it."""

    pid: int
    port: int | None
    alive: bool
    log: str


class CacheTierStatus(TypedDict):
    """Phase 2's parts running from the lab's directory (None: not running)."""

    nginx: str | None
    cache_addon: str | None
    redis: str | None


class MonitoringStatus(TypedDict):
    """Phase 3's processes running from the lab's directory."""

    prometheus: str | None
    running: list[str]


def _monitoring(lab_dir: Path) -> MonitoringStatus:
    parts = monitoring.status(lab_dir / "monitor")
    prometheus = parts["prometheus"]
    return MonitoringStatus(
        prometheus=f"http://127.0.0.1:{prometheus['port']}" if prometheus["running"] else None,
        running=[name for name, part in parts.items() if part["running"]],
    )


class LabStatus(TypedDict):
    """What :func:`status` returns: for ``ragperf lab status``, the phases' target resolution and the tests."""

    lab_dir: str
    up: bool
    profile: str | None
    app_url: str | None
    llm_base_url: str | None
    dsn: str | None  # the app's, without password
    admin_dsn: str | None  # the superuser's, without password
    services: dict[str, ServiceStatus]
    corpus: dict[str, Any]
    cache_tier: CacheTierStatus
    monitoring: MonitoringStatus
    scale: list[str]  # Phase 4's parts running from the lab's directory
    postgres: dict[str, str] | None
    checked_at: str


def status(lab_dir: Path | None = None) -> LabStatus:
    """The lab's state for people and programs: URLs, DSN without password, ports, PIDs, liveness."""
    lab_dir = lab_dir or default_lab_dir()
    state = LabState.load(lab_dir)
    services = {
        name: ServiceStatus(pid=p.pid, port=p.port, alive=procs.is_alive(p), log=p.log)
        for name, p in state.processes.items()
    }
    pg_port = state.port("postgres")
    app_port = state.port("app")
    return {
        "lab_dir": str(lab_dir),
        "up": bool(services) and all(s["alive"] for s in services.values()) and "app" in services,
        "profile": state.profile,
        "app_url": f"http://127.0.0.1:{app_port}" if app_port else None,
        "llm_base_url": state.llm_base_url,
        "dsn": labdb.dsn(pg_port, labdb.APP_ROLE) if pg_port else None,
        "admin_dsn": labdb.dsn(pg_port, labdb.SUPERUSER) if pg_port else None,
        "services": services,
        "corpus": state.corpus,
        "cache_tier": _cache_tier(lab_dir),
        "monitoring": _monitoring(lab_dir),
        "scale": _scale_tier(lab_dir),
        "postgres": pginstall.installed(),
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
