"""One validated parameter object per run, built from YAML files in params/.

Layers, later wins: ``params/profiles/<profile>.yaml`` (how hard and how long to measure),
``params/targets/<target>.yaml`` (what to measure), then any ``--params`` files. Unknown keys
and bad values fail before anything starts, naming the key and what is allowed. Secrets are
never read from YAML: a deployment's database password and provider key come from the
environment (RAGPERF_PGPASSWORD or PGPASSWORD, RAGPERF_LLM_API_KEY) as SecretStr.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from ragperf.core import criteria
from ragperf.core.redact import MASK, embedded_passwords, is_secret_key, redact, scrub_message, scrub_text, secrets_in

REPO_ROOT = Path(__file__).resolve().parents[3]  # the checkout: lib/ragperf/core/params.py
PARAMS_DIR = REPO_ROOT / "params"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"


class ParamsError(ValueError):
    """Parameters that cannot be used; the message names the key and what is allowed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Strict):
    """What is measured: the embedded lab, or a real deployment."""

    kind: Literal["lab", "deployment"] = "lab"
    base_url: str | None = Field(None, description="the service's URL (deployment only; the lab knows its own)")
    dsn: str | None = Field(None, description="libpq DSN without password (deployment only)")
    restart_command: str | None = Field(None, description="how PostgreSQL is restarted on a deployment")
    host: Host | None = Field(None, description="the database host's memory, CPUs and disk (deployment only)")
    collection: str | None = Field(None, min_length=1, description="the app's LangChain collection "
                                   "(langchain_pg_collection.name; default: the only one there is)")  # fmt: skip

    @model_validator(mode="after")
    def _deployment_needs_a_url(self) -> Target:
        if self.kind == "deployment" and not self.base_url:
            raise ValueError("target.base_url is required when target.kind is 'deployment'")
        if self.dsn and ("password" in self.dsn.lower() or embedded_passwords(self.dsn)):
            raise ValueError("target.dsn must not contain a password: set RAGPERF_PGPASSWORD in the environment")
        return self


class Slo(_Strict):
    """The service-level objective a load step must hold."""

    p95_s: float = Field(5.0, gt=0)
    success_rate_pct: float = Field(70.0, gt=0, le=100)


class Load(_Strict):
    """How hard and how long the scenarios push."""

    timeout_s: float = Field(30.0, gt=0, le=600)
    query_latency_questions: int = Field(50, ge=1)
    query_latency_time_limit_s: float = Field(120.0, gt=0)
    fixed_users: tuple[int, ...] = (5, 10)
    fixed_duration_s: float = Field(60.0, gt=0)
    ladder_users: tuple[int, ...] = (5, 10, 25, 40, 60, 100, 150, 200)
    ladder_step_s: float = Field(45.0, gt=0)
    cache_speedup_questions: int = Field(20, ge=1)
    workers: int = Field(0, ge=0, le=64, description="local Locust worker processes beside the master")
    remote_workers: int = Field(0, ge=0, le=256, description="workers on other machines the master waits for")
    master_port: int = Field(0, ge=0, le=65535, description="the master's port (fixed for remote workers)")

    @model_validator(mode="after")
    def _positive_users(self) -> Load:
        for key in ("fixed_users", "ladder_users"):
            values = getattr(self, key)
            if not values or any(u < 1 for u in values):
                raise ValueError(f"load.{key} must be a non-empty list of positive user counts, got {list(values)}")
        if list(self.ladder_users) != sorted(set(self.ladder_users)):
            raise ValueError(f"load.ladder_users must be strictly increasing, got {list(self.ladder_users)}")
        return self


class Workload(_Strict):
    """Which questions are asked: the lab's pool with Zipf popularity, or a replayed query log."""

    kind: Literal["zipf", "replay"] = "zipf"
    zipf_exponent: float = Field(1.1, gt=0)
    log_file: Path | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _replay_needs_a_log(self) -> Workload:
        if self.kind == "replay" and self.log_file is None:
            raise ValueError("workload.log_file is required when workload.kind is 'replay'")
        return self


class Host(_Strict):
    """A deployment database host's facts, for planning settings (the lab reads its own)."""

    memory_gb: float = Field(gt=0)
    cpus: int = Field(ge=1)
    disk: Literal["hdd", "ssd", "nvme"] = "ssd"


class Changes(_Strict):
    """Whether and how a phase changes the target."""

    mode: Literal["plan", "apply"] | None = Field(None, description="default: apply on the lab, plan elsewhere")
    allow_restart: bool = Field(False, description="a deployment's PostgreSQL may be restarted (restart_command)")
    allow_host_changes: bool = Field(False, description="sysctl drop-in on this host (needs root; never on the lab)")
    hnsw_m: int = Field(16, ge=2, le=100)
    hnsw_ef_construction: int = Field(64, ge=4, le=1000)
    ef_search_values: tuple[int, ...] = (10, 20, 40, 80, 160)
    recall_target: float = Field(0.95, gt=0, le=1)
    recall_queries: int = Field(50, ge=5, le=2000)
    app_role: str | None = Field(None, min_length=1, description="the app's database role, for ALTER ROLE ... SET "
                                 "(the lab knows its own; a deployment's must be named)")  # fmt: skip


class Cache(_Strict):
    """Phase 2's caching tier: nginx's per-host cache in front, the shared Redis cache add-on behind it."""

    ttl_s: int = Field(600, ge=1, le=30 * 86400, description="how long an answer is served from either cache")
    nginx_cache_mb: int = Field(256, ge=1, description="disk nginx's cache may use")
    max_body_kb: int = Field(16, ge=1, le=1024, description="largest question body cached (larger pass through)")
    redis_maxmemory_mb: int = Field(256, ge=8, description="Redis's memory limit; beyond it, eviction")
    redis_policy: Literal["allkeys-lru", "allkeys-lfu", "volatile-lru", "volatile-ttl"] = "allkeys-lru"
    listen_port: int = Field(0, ge=0, le=65535, description="nginx's port, the new entrypoint (0: a free port)")
    proxy_port: int = Field(0, ge=0, le=65535, description="the cache add-on's port (0: a free port)")
    redis_port: int = Field(0, ge=0, le=65535, description="Redis's port (0: a free port)")
    state_dir: Path | None = Field(None, description="where the tier keeps its files (default: in the lab's directory, "
                                   "else ~/.local/state/ragperf/cache)")  # fmt: skip
    zipf_exponents: tuple[float, float] = Field((0.8, 1.2), description="the two Zipf workloads' exponents")
    workload_users: int = Field(10, ge=1, description="concurrent users of the hit-rate workloads")
    workload_duration_s: float = Field(30.0, gt=0, description="how long each hit-rate workload runs")
    outage_drill: bool = Field(True, description="stop Redis in the middle of a load step, and see what happens")

    @model_validator(mode="after")
    def _two_exponents(self) -> Cache:
        low, high = self.zipf_exponents
        if not 0 < low < high:
            raise ValueError(f"cache.zipf_exponents must be two positive exponents, lower first, got {[low, high]}")
        return self


class Monitor(_Strict):
    """Phase 3's monitoring: Prometheus and its exporters, Alertmanager, the health monitor, the drill."""

    scrape_interval_s: float = Field(2.0, ge=1, le=300, description="how often Prometheus scrapes (short on the "
                                     "lab, so a load step of minutes has enough points)")  # fmt: skip
    retention_hours: int = Field(24, ge=1, le=8760, description="how long Prometheus keeps samples")
    retention_size_mb: int = Field(1024, ge=16, description="the most disk Prometheus's samples may use")
    burn_window_scale: float = Field(
        1 / 120,
        gt=0,
        le=1,
        description="multiplies every burn-rate alert window "
        "(1: the SRE Workbook's 1 h/5 min ...; 1/120: 30 s/5 s, for a lab run of minutes)",
    )
    state_dir: Path | None = Field(None, description="where the monitoring keeps its files (default: in the lab's "
                                   "directory, else ~/.local/state/ragperf/monitor)")  # fmt: skip
    prometheus_port: int = Field(0, ge=0, le=65535, description="Prometheus's port (0: a free port)")
    role: str = Field(
        "ragperf_monitor",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="the database role the postgres exporter connects as (member of pg_monitor)",
    )
    health_interval_s: float = Field(1.0, gt=0, le=3600, description="seconds between the health monitor's probes")
    health_buffer: int = Field(1000, ge=10, le=1_000_000, description="samples the health monitor keeps in memory")
    health_ask_share: float = Field(0.5, ge=0, le=1, description="share of probes that ask (POST /ask)")
    drill: Literal["llm", "postgres", "none"] = Field("llm", description="what the fault drill stops for a while")
    drill_fault_s: float = Field(40.0, gt=0, le=3600, description="how long the drill's fault lasts")
    drill_users: int = Field(10, ge=1, description="users of the drill's load step")
    cost_rounds: int = Field(2, ge=1, le=10, description="pairs of load steps without and with monitoring")
    cost_step_s: float = Field(20.0, gt=0, description="how long each step of the monitoring-cost test runs")
    cost_users: int = Field(10, ge=1, description="users of the monitoring-cost steps")


class Scale(_Strict):
    """Phase 4: app instances under supervisord behind nginx's load balancer, PgBouncer between them and PostgreSQL."""

    instances: int = Field(3, ge=1, le=16, description="app instances the phase leaves running (and fails over with)")
    curve_instances: tuple[int, ...] = Field((1, 2, 3, 4), description="instance counts of the scaling curve")
    curve_users: tuple[int, ...] = Field((10, 40, 80, 120), description="users of each scaling-curve step")
    curve_step_s: float = Field(20.0, gt=0, description="how long each scaling-curve step runs")
    curve_pgbouncer: bool = Field(True, description="measure each instance count through PgBouncer and without it")
    capacity_users: tuple[int, ...] = Field((50, 100, 150, 200, 300, 400), description="the full stack's ladder from "
                                            "empty caches with the Zipf mix, well past 200 users")  # fmt: skip
    capacity_step_s: float = Field(30.0, gt=0, description="how long each step of that ladder runs")
    failover_users: int = Field(30, ge=1, description="users of the failover and rolling-restart steps")
    failover_step_s: float = Field(40.0, gt=0, description="how long the failover step runs (the kill is midway)")
    generator_workers: int = Field(2, ge=0, le=16, description="Locust workers of Phase 4's load steps, so that the "
                                   "load generator is not the limit")  # fmt: skip
    pool_size: int = Field(40, ge=1, le=10_000, description="PgBouncer's server connections per database and role")
    max_fails: int = Field(1, ge=1, le=100, description="failed attempts before nginx takes an instance out")
    fail_timeout_s: int = Field(5, ge=1, le=3600, description="for how long nginx takes it out")
    next_upstream_tries: int = Field(3, ge=1, le=20, description="how many instances one request may be tried on")
    next_upstream: tuple[str, ...] = Field(("error", "timeout", "http_503"), description="what makes nginx pass a "
                                           "request on to another instance, POST included (not http_502: the app "
                                           "answers 502 when its LLM provider fails)")  # fmt: skip
    instance_port: int = Field(0, ge=0, le=65000, description="the first instance's port, the next ones follow "
                               "(0: free ports)")  # fmt: skip
    balancer_port: int = Field(0, ge=0, le=65535, description="the load balancer's port (0: a free port)")
    pgbouncer_port: int = Field(0, ge=0, le=65535, description="PgBouncer's port (0: a free port)")
    state_dir: Path | None = Field(None, description="where Phase 4 keeps its files (default: in the lab's directory, "
                                   "else ~/.local/state/ragperf/scale)")  # fmt: skip
    instance_addresses: tuple[str, ...] = Field((), description="a deployment's instances as host:port, on one host "
                                                "or several (the lab's are started here)")  # fmt: skip
    app_command: str | None = Field(None, description="a deployment's command that runs one instance in the "
                                    "foreground, with {port} where its port goes (the lab knows its own)")  # fmt: skip

    @model_validator(mode="after")
    def _counts(self) -> Scale:
        for key in ("curve_instances", "curve_users", "capacity_users"):
            values = list(getattr(self, key))
            if not values or values != sorted(set(values)) or values[0] < 1:
                raise ValueError(f"scale.{key} must be a non-empty, strictly increasing list of positive counts, "
                                 f"got {values}")  # fmt: skip
        if max(self.curve_instances) > 16:
            raise ValueError(f"scale.curve_instances: at most 16 instances, got {max(self.curve_instances)}")
        for address in self.instance_addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"scale.instance_addresses: {address!r} is not host:port (port 1-65535)")
        example = "'/srv/rag/.venv/bin/uvicorn src.api.main:app --host 127.0.0.1 --port {port}'"
        if self.app_command is not None and (
            "{port}" not in self.app_command or not self.app_command.lstrip().startswith("/")
        ):
            raise ValueError(
                "scale.app_command must start with the absolute path of the program (supervisord runs "
                f"it without a shell) and hold {{port}}, where each instance's port goes, e.g. {example}"
            )
        return self


class Criterion(_Strict):
    """One phase's success criteria: p95 and success rate at 10 users, and the users it must hold."""

    p95_s: float = Field(gt=0)
    success_rate_pct: float = Field(gt=0, le=100)
    min_users: int = Field(ge=1)

    @classmethod
    def users(cls, phase: str) -> Criterion:
        """The criteria the users' plan sets for ``phase``."""
        return cls(**asdict(criteria.PHASE_CRITERIA[phase]))


class Criteria(_Strict):
    """The users' success criteria per phase (PLAN.md); override any of them in a parameter file."""

    phase1: Criterion = Criterion.users("phase1")
    phase2: Criterion = Criterion.users("phase2")
    phase3: Criterion = Criterion.users("phase3")
    phase4: Criterion = Criterion.users("phase4")


class Params(_Strict):
    """Everything a phase notebook needs, validated."""

    profile: Literal["smoke", "demo"] = "smoke"
    target: Target = Target()
    slo: Slo = Slo()
    load: Load = Load()
    workload: Workload = Workload()
    changes: Changes = Changes()
    cache: Cache = Cache()
    monitor: Monitor = Monitor()
    scale: Scale = Scale()
    criteria: Criteria = Criteria()

    def criteria_of(self, phase: str) -> criteria.Slo:
        """The success criteria of ``phase`` as these parameters set them."""
        criterion = getattr(self.criteria, phase, None)
        if criterion is None:
            raise ParamsError(f"no success criteria for {phase!r}: allowed are {', '.join(Criteria.model_fields)}")
        return criteria.Slo(**criterion.model_dump())

    def effective_mode(self) -> str:
        """``changes.mode``, defaulting to apply on the lab and plan anywhere else."""
        return self.changes.mode or ("apply" if self.target.kind == "lab" else "plan")

    def db_password(self) -> SecretStr | None:
        """A deployment's database password, from the environment only."""
        value = os.environ.get("RAGPERF_PGPASSWORD") or os.environ.get("PGPASSWORD")
        return SecretStr(value) if value else None


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping a parameter file holds; a file that cannot give one is a ParamsError naming it and the fix."""
    if not path.exists():
        raise ParamsError(f"parameter file {path} does not exist")
    if path.is_dir():
        raise ParamsError(f"parameter file {path} is a directory: give the path of a YAML file")
    try:
        raw = path.read_bytes()
    except PermissionError:
        raise ParamsError(f"parameter file {path} cannot be read: permission denied (check its mode)") from None
    except OSError as exc:
        raise ParamsError(f"parameter file {path} cannot be read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, line_start = raw.count(b"\n", 0, exc.start) + 1, raw.rfind(b"\n", 0, exc.start) + 1
        column = len(raw[line_start : exc.start].decode("utf-8", "replace")) + 1
        raise ParamsError(
            f"parameter file {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}, "
            f"column {column}): save it as UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(scrub_message(_yaml_problem(path, text, exc), secrets_in(text))) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single value ({type(data).__name__})"
        raise ParamsError(f"parameter file {path} must hold a mapping (`key: value` lines) at the top, not {kind}")
    return data


_YAML_HINTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), hint)
    for pattern, hint in (
        (r"found character '\\t'", "YAML indents with spaces, not tabs: replace the tab with spaces"),
        (r"while scanning a quoted scalar", "a quoted value is not closed: end it with the quote it starts with"),
        (r"found character '(?P<char>.)' that cannot start", r"a value that starts with \g<char> must be quoted"),
        (r"mapping values are not allowed here", "write one `key: value` per line, and quote a value that holds ': '"),
        (r"could not find expected ':'", "each line of a mapping is `key: value`"),
        (r"expected <block end>", "keys of one mapping start in the same column: check the indentation"),
        (r"expected ',' or '[\]}]'", "a [list] or {mapping} written on one line is not closed, or lacks a comma"),
        (r"could not determine a constructor", "use plain values (text, numbers, lists, mappings), not YAML tags"),
        (r"found undefined alias", "'*' refers to an '&anchor': quote a value that starts with '*'"),
        (r"special characters are not allowed", "remove the control character, or write it escaped in double quotes"),
    )
)
"""What to do about a YAML syntax error, by what yaml says it found (the first match wins; ``\\g<name>``: a group)."""


def _yaml_problem(path: Path, text: str, exc: yaml.YAMLError) -> str:
    """One line: the file, the line and column (1-based), what yaml found there, and how to fix it."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        line, column = mark.line + 1, mark.column + 1
    elif isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
    else:
        line = column = None
    if isinstance(exc, yaml.reader.ReaderError):
        found = f"found character #x{exc.character:04x}: {exc.reason}"
    else:
        found = str(getattr(exc, "problem", None) or exc).replace("found character '\\t'", "found a tab")
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        found += f" ({context} that starts at line {context_mark.line + 1}, column {context_mark.column + 1})"
    said = f"{context or ''} {getattr(exc, 'problem', None) or exc}"
    hint = next((m.expand(h) for p, h in _YAML_HINTS if (m := p.search(said))), None)
    where = f", line {line}, column {column}" if line is not None else ""
    return (f"parameter file {path}{where} is not valid YAML: {found}; "
            f"{hint or 'check the YAML there: `key: value` lines, nested keys indented with spaces'}")  # fmt: skip


def _named(kind: str, name: str) -> Path:
    path = PARAMS_DIR / kind / f"{name}.yaml"
    if not path.exists():
        allowed = sorted(p.stem for p in (PARAMS_DIR / kind).glob("*.yaml"))
        raise ParamsError(scrub_message(f"unknown {kind[:-1]} {name!r}: allowed are {', '.join(allowed)}",
                                        secrets_in(name)))  # fmt: skip
    return path


def _explain(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            model = _model_at([str(p) for p in item["loc"][:-1]])
            allowed = ", ".join(model.model_fields) if model else "?"
            lines.append(f"unknown key {key!r}: allowed here are {allowed}")
        else:
            lines.append(f"{key}: {scrub_text(item['msg'])} (got {_shown(item['loc'], item.get('input'))})")
    return "bad parameters:\n  " + "\n  ".join(lines)


def _shown(loc: tuple[int | str, ...], value: Any) -> str:
    """An error's input as it may be shown: masked under a secret key, else with every password redacted.

    Inputs are quoted back to name what was wrong; a mapping (a whole ``target``) or a DSN, URL or
    restart command may hold a password, which ``redact`` masks.
    """
    if loc and is_secret_key(loc[-1]):
        return MASK
    return repr(redact(value))


def _model_at(path: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = Params
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def load(profile: str = "smoke", target: str = "lab", files: Iterable[str | Path] = ()) -> Params:
    """Build the run's parameters from the named profile and target, then ``files`` in order.

    Raises:
        ParamsError: a file that is missing, unreadable or not YAML, an unknown key, a bad value, or a
            replayed log that cannot be replayed; the message never quotes a password the files hold.
    """
    data = _merge(_read_yaml(_named("profiles", profile)), {"profile": profile})
    data = _merge(data, {"target": _read_yaml(_named("targets", target))})
    for file in files:
        if str(file):
            data = _merge(data, _read_yaml(Path(file)))
    try:
        params = Params.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(scrub_message(_explain(exc), secrets_in(data))) from None
    if params.workload.kind == "replay" and (problem := _log_file_problem(params.workload.log_file)):
        raise ParamsError(scrub_message(problem, secrets_in(data)))
    return params


# --- what can be checked before a run starts --------------------------------------------------

DATABASE_PHASES = frozenset({"phase1", "phase3", "phase4"})  # phases that read and change the database
TUNING_PHASES = frozenset({"phase1"})  # phases that set the app's role settings or restart PostgreSQL
"""Phases that read and change the target's database (pg_settings, indexes, role settings)."""


def preflight(phases: Sequence[str], p: Params) -> None:
    """Check what can be checked before ``phases`` start on ``p``'s target, before a run directory exists.

    Raises:
        ParamsError: every problem found, each naming the key and what is allowed.
    """
    problems = [problem for check in PREFLIGHT_CHECKS for problem in check(phases, p)]
    if problems:
        text = f"cannot start {', '.join(phases)}:\n  " + "\n  ".join(problems)
        raise ParamsError(scrub_message(text, secrets_in(p)))


def _database_access(phases: Sequence[str], p: Params) -> Iterator[str]:
    uses = [phase for phase in phases if phase in DATABASE_PHASES]
    if p.target.kind == "deployment" and uses and not p.target.dsn:
        yield (f"target.dsn is required on a deployment for {', '.join(uses)}, which reads and changes the database: "
               "a libpq DSN without password, e.g. 'host=db.example port=5432 dbname=rag user=sakana'")  # fmt: skip


def _dsn_syntax(phases: Sequence[str], p: Params) -> Iterator[str]:
    if p.target.kind != "deployment" or not p.target.dsn:
        return
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = conninfo_to_dict(p.target.dsn)
    except psycopg.Error as exc:
        yield (f"target.dsn must be a libpq connection string, 'host=db port=5432 dbname=rag user=sakana' "
               f"or 'postgresql://sakana@db:5432/rag': {str(exc).strip()}")  # fmt: skip
        return
    if "password" in given:  # as URL user info or a query parameter, which the model's own check misses
        yield "target.dsn must not contain a password: set RAGPERF_PGPASSWORD in the environment"


def _service_url(phases: Sequence[str], p: Params) -> Iterator[str]:
    url = p.target.base_url
    if p.target.kind != "deployment" or not url:
        return
    try:
        parts = urlsplit(url)
        good = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is no number from 0 to 65535, or a bad IPv6 address
        good = False
    if not good:
        yield (f"target.base_url must be an http:// or https:// URL with a host, e.g. 'http://10.0.0.5:8000', "
               f"got {redact(url)!r}")  # fmt: skip


def _restart_command(phases: Sequence[str], p: Params) -> Iterator[str]:
    restarts = p.effective_mode() == "apply" and p.changes.allow_restart and TUNING_PHASES.intersection(phases)
    if p.target.kind == "deployment" and restarts and not p.target.restart_command:
        yield ("target.restart_command is required when changes.mode is 'apply' and changes.allow_restart is true "
               "on a deployment: how PostgreSQL is restarted there, e.g. 'sudo systemctl restart postgresql' "
               "(or set changes.allow_restart: false)")  # fmt: skip


def _app_role(phases: Sequence[str], p: Params) -> Iterator[str]:
    applies = p.effective_mode() == "apply" and TUNING_PHASES.intersection(phases)
    if p.target.kind == "deployment" and applies and not p.changes.app_role:
        yield (
            "changes.app_role is required when changes.mode is 'apply' on a deployment: the role the app "
            "connects as, which gets hnsw.ef_search with ALTER ROLE ... SET (the app's code cannot set it)"
        )


def _log_file(phases: Sequence[str], p: Params) -> Iterator[str]:
    if p.workload.log_file is not None and (problem := _log_file_problem(p.workload.log_file)):
        yield problem


def _log_file_problem(path: Path) -> str | None:
    """What keeps ``path`` from being replayed (read from its beginning only), or None."""
    from ragperf.core.querylog import WorkloadError, validate_log_file

    allowed = "a readable query log (.csv, .jsonl or .ndjson with a 'question' column)"
    try:
        validate_log_file(path)
    except WorkloadError as exc:
        return f"workload.log_file must be {allowed}: {exc}"
    except UnicodeDecodeError:
        return f"workload.log_file must be {allowed}: {path} is not UTF-8 text"
    except OSError as exc:
        return f"workload.log_file must be {allowed}: {path} cannot be read ({exc.strerror or exc})"
    return None


def _state_dir(phases: Sequence[str], p: Params) -> Iterator[str]:
    dirs = (
        ("cache.state_dir", p.cache.state_dir),
        ("monitor.state_dir", p.monitor.state_dir),
        ("scale.state_dir", p.scale.state_dir),
    )
    for key, value in dirs:
        if value is not None and (problem := _state_dir_problem(Path(value).expanduser().absolute())):
            yield f"{key} {problem}: give a directory this user can create and write to"


def _state_dir_problem(path: Path) -> str | None:
    existing = next(parent for parent in (path, *path.parents) if parent.exists())
    if not existing.is_dir():
        problem = "is a file" if existing == path else f"cannot be made: {existing} is a file"
    elif not os.access(existing, os.W_OK | os.X_OK):
        problem = "is not writable" if existing == path else f"cannot be made: {existing} is not writable"
    else:
        return None
    return f"{path} {problem}"


def _scale_on_a_deployment(phases: Sequence[str], p: Params) -> Iterator[str]:
    if p.target.kind != "deployment" or "phase4" not in phases or p.effective_mode() != "apply":
        return
    if not p.changes.allow_restart:
        yield ("changes.allow_restart must be true to apply phase4 on a deployment: it moves the service's traffic "
               "to new instances behind a load balancer (or set changes.mode: plan)")  # fmt: skip
    if not p.scale.app_command:
        yield ("scale.app_command is required to apply phase4 on a deployment: the command that runs one instance "
               "of the app in the foreground, with {port} where its port goes")  # fmt: skip


PREFLIGHT_CHECKS: tuple[Callable[[Sequence[str], Params], Iterator[str]], ...] = (
    _database_access,
    _dsn_syntax,
    _service_url,
    _restart_command,
    _app_role,
    _log_file,
    _state_dir,
    _scale_on_a_deployment,
)
"""Every check ``preflight`` makes; each yields its problems, naming the key and what is allowed."""


def _notebooks() -> dict[str, Path]:
    """``{phase: notebook}`` for every ``notebooks/phase<N>_<name>.ipynb``, in phase order."""
    found = {p.name.split("_", 1)[0]: p for p in NOTEBOOKS_DIR.glob("phase*_*.ipynb")}
    return dict(sorted(found.items(), key=lambda item: int(item[0].removeprefix("phase") or 0)))


def phases() -> list[str]:
    """The phases that have a notebook, in order."""
    return list(_notebooks())


def check_phase(phase: str) -> str:
    """``phase`` if it has a notebook, else an error naming the phases that do."""
    if phase not in _notebooks():
        raise ParamsError(f"unknown phase {phase!r}: allowed are {', '.join(phases())} (or 'all')")
    return phase


def notebook_for(phase: str) -> Path:
    """The notebook of ``phase``."""
    return _notebooks()[check_phase(phase)]
