"""Phase 4's tier as a system: app instances under supervisord, nginx balancing them, PgBouncer behind them.

Behind Phase 2's caches, each part on its own port and stopped by its recorded PID::

    client → nginx cache → cache add-on → load balancer (nginx: least_conn, shared zone, retries) →
        N app instances (supervisord restarts one that dies) → PgBouncer (session mode) → PostgreSQL

The app is the frozen one, unchanged: each instance runs the command line and environment the lab runs it with
(a deployment's own ``scale.app_command``), on a port of its own; only ``DATABASE_URL`` differs, naming PgBouncer
and a 0600 passfile instead of a password. The cache add-on is re-pointed at the balancer, so its single flight
holds across every instance.

:func:`desired` derives the tier from the target and the parameters; :func:`plan` compares it with what runs
(PgBouncer first, then the instances, the balancer, and last the add-on's new upstream; undone in reverse);
:func:`write_secrets` writes the files the instances and PgBouncer read their credentials from;
:func:`stop_all` stops a tier kept in a directory by its process records.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from ragperf.core import procs
from ragperf.core.changes import Change
from ragperf.core.params import Params
from ragperf.core.target import Target
from ragperf.systems import cacheproxy, cachetier, nginx, pgbouncer, supervisor

log = logging.getLogger(__name__)

PARTS = ("pgbouncer", "instances", "balancer")
PASSFILE = "pgpass"  # libpq's password file of the instances, in the secrets directory
API_KEY_FILE = "openai_api_key"


@dataclass(frozen=True)
class Database:
    """Where PostgreSQL is for the instances, as whom they connect (the app's role), and which database."""

    host: str
    port: int
    dbname: str
    role: str


@dataclass(frozen=True)
class App:
    """How one instance of the app runs: its command line with ``{port}`` and its environment but for secrets."""

    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    api_key: bool = False  # OPENAI_API_KEY comes from a 0600 file

    def argv(self, port: int) -> tuple[str, ...]:
        return tuple(part.replace("{port}", str(port)) for part in self.command)


def app_of_command(command: str, env: Mapping[str, str] | None = None) -> App:
    """A deployment's ``scale.app_command`` (with ``{port}``, an absolute program path first) as an :class:`App`."""
    return App(tuple(shlex.split(command)), tuple(sorted((env or {}).items())))


@dataclass(frozen=True)
class Tier:
    """Phase 4's parts, as configured: None for a part that is not wanted."""

    instances: supervisor.SupervisorConfig | None
    pgbouncer: pgbouncer.PgBouncerConfig
    balancer: nginx.CacheConfig
    proxy: cacheproxy.ProxyConfig | None  # Phase 2's add-on, pointed at the balancer (None: there is no tier)
    base: Path
    hosts: Mapping[str, supervisor.SupervisorConfig] = field(default_factory=dict)  # a deployment's other hosts
    pooled: bool = True  # the instances connect through PgBouncer (else straight to PostgreSQL)

    @property
    def remote(self) -> bool:
        """True when the instances (and their PgBouncer) run on the deployment's hosts, not here."""
        return bool(self.hosts)

    @property
    def url(self) -> str:
        """The balancer."""
        return self.balancer.url

    @property
    def secrets_dir(self) -> Path:
        return self.base / "secrets"

    def table(self) -> pd.DataFrame:
        """One row per part: where it listens, what it talks to, its settings."""
        rows = []
        if self.proxy is not None:
            rows.append({"part": "cache add-on (Phase 2)", "listens": self.proxy.url, "talks to": self.proxy.upstream,
                         "settings": "its upstream becomes the load balancer"})  # fmt: skip
        b = self.balancer
        rows.append({"part": "load balancer (nginx)", "listens": b.url, "talks to": ", ".join(b.upstreams),
                     "settings": f"least_conn, shared zone, max_fails {b.max_fails} / {b.fail_timeout_s} s, a request "
                                 f"tried on up to {b.next_upstream_tries} instances (POST too)"})  # fmt: skip
        if self.instances is not None:
            for program in self.instances.programs:
                rows.append({"part": f"instance {program.name} (supervisord)",
                             "listens": f"http://127.0.0.1:{program.port}",
                             "talks to": "PgBouncer" if self.pooled else "PostgreSQL",
                             "settings": "restarted when it dies"})  # fmt: skip
        p = self.pgbouncer
        rows.append({"part": "PgBouncer" + ("" if self.pooled else " (idle: the instances connect directly)"),
                     "listens": f"{p.listen_host}:{p.listen_port}", "talks to": f"{p.server_host}:{p.server_port}/"
                     f"{p.dbname}", "settings": f"{p.pool_mode} mode, {p.default_pool_size} server connections, "
                     "SCRAM"})  # fmt: skip
        return pd.DataFrame(rows)


def state_dir(target: Target, params: Params) -> Path:
    """Where the tier keeps its files: ``scale.state_dir``, else the lab's directory, else ~/.local/state."""
    if params.scale.state_dir is not None:
        return Path(params.scale.state_dir).expanduser().absolute()
    if target.kind == "lab" and target.lab_dir is not None:
        return Path(target.lab_dir).absolute() / "scale"
    return Path.home() / ".local" / "state" / "ragperf" / "scale"


@dataclass(frozen=True)
class Running:
    """What of the tier runs now (None for a part that does not)."""

    instances: supervisor.SupervisorConfig | None
    pgbouncer: pgbouncer.PgBouncerConfig | None
    balancer: nginx.CacheConfig | None

    def any(self) -> bool:
        return any(part is not None for part in (self.instances, self.pgbouncer, self.balancer))


def running(base: Path) -> Running:
    """The tier's parts running from ``base``, by their process records."""
    return Running(
        supervisor.Supervisor(base / "instances").config,
        pgbouncer.PgBouncer(base / "pgbouncer").config,
        nginx.Nginx(base / "balancer").config,
    )


def _ports(wanted: int, count: int, now: tuple[int, ...]) -> list[int]:
    """``count`` ports from ``wanted`` on, or the running ones (and free ones for the rest) when ``wanted`` is 0."""
    if wanted:
        return [wanted + i for i in range(count)]
    ports = list(now[:count])
    while len(ports) < count:
        port = procs.free_port()
        if port not in ports:
            ports.append(port)
    return ports


def desired(
    target: Target,
    params: Params,
    app: App,
    database: Database,
    tier: cachetier.Running,
    *,
    instances: int | None = None,
    balanced: int | None = None,
    pooled: bool = True,
    run_as: str | None = None,
    now: Running | None = None,
) -> Tier:
    """The tier the parameters ask for: ``instances`` app instances (default ``scale.instances``), the first
    ``balanced`` of them behind the balancer (default all), connecting through PgBouncer when ``pooled`` and
    straight to PostgreSQL otherwise (PgBouncer runs either way, as ``run_as``: it refuses root).

    On a deployment with ``scale.instance_addresses`` the balancer here balances those, and each of their hosts is
    to run its own instances under supervisord and its own PgBouncer on loopback: :attr:`Tier.hosts` holds each
    host's supervisord configuration and :attr:`Tier.pgbouncer` the PgBouncer configuration they share; neither is
    started here."""
    s, base = params.scale, state_dir(target, params)
    now = now or running(base)
    remote = target.kind != "lab" and bool(s.instance_addresses)
    port = s.pgbouncer_port or (now.pgbouncer.listen_port if now.pgbouncer else procs.free_port())
    bouncer = pgbouncer.PgBouncerConfig(
        listen_port=port, server_host=database.host, server_port=database.port, dbname=database.dbname,
        role=database.role, state_dir=base / "pgbouncer", default_pool_size=s.pool_size, run_as=run_as,
    )  # fmt: skip
    via = (bouncer.connect_host, bouncer.listen_port) if pooled else (database.host, database.port)
    dsn = (f"host={via[0]} port={via[1]} dbname={database.dbname} user={database.role} "
           f"passfile={base / 'secrets' / PASSFILE}")  # fmt: skip
    secret = (("OPENAI_API_KEY", str(base / "secrets" / API_KEY_FILE)),) if app.api_key else ()

    def supervised(ports: Sequence[int]) -> supervisor.SupervisorConfig:
        programs = tuple(
            supervisor.Program(name=f"app-{i + 1}", argv=app.argv(port), port=port,
                               env=(*app.env, ("DATABASE_URL", dsn)), secret_env=secret,
                               secret_files=(str(base / "secrets" / PASSFILE),))
            for i, port in enumerate(ports)
        )  # fmt: skip
        return supervisor.SupervisorConfig(state_dir=base / "instances", programs=programs)

    config, hosts = None, {}
    if remote:
        by_host: dict[str, list[int]] = {}
        for address in s.instance_addresses:
            host, _, port = address.rpartition(":")
            by_host.setdefault(host, []).append(int(port))
        hosts = {host: supervised(ports) for host, ports in by_host.items()}
        addresses = tuple(s.instance_addresses)
    else:
        running_ports = tuple(p.port for p in now.instances.programs) if now.instances else ()
        config = supervised(_ports(s.instance_port, instances or s.instances, running_ports))
        addresses = config.addresses
    addresses = tuple(addresses[: balanced or len(addresses)])
    port = s.balancer_port or (now.balancer.listen_port if now.balancer else procs.free_port())
    balancer = nginx.CacheConfig(
        listen_port=port, upstreams=addresses, state_dir=base / "balancer", cache_enabled=False,
        proxy_timeout_s=max(60.0, params.load.timeout_s), max_fails=s.max_fails, fail_timeout_s=s.fail_timeout_s,
        next_upstream_tries=min(s.next_upstream_tries, len(addresses) + 1) if len(addresses) > 1 else 1,
        next_upstream=s.next_upstream,
    )  # fmt: skip
    proxy = replace(tier.proxy, upstream=balancer.url) if tier.proxy is not None else None
    return Tier(config, bouncer, balancer, proxy, base, hosts, pooled)


def plan(now: Running, tier: Tier, proxy_now: cacheproxy.ProxyConfig | None) -> list[Change]:
    """The changes from what runs to ``tier``: PgBouncer, the instances, the balancer, then the add-on's upstream
    (only the balancer and the add-on when the instances run on other hosts)."""
    changes = [] if tier.remote else [
        *pgbouncer.plan(now.pgbouncer, tier.pgbouncer),
        *supervisor.plan(now.instances, tier.instances),
    ]  # fmt: skip
    changes += nginx.plan(now.balancer, tier.balancer, name="balancer")
    if tier.proxy is not None:
        changes += cacheproxy.plan(proxy_now, tier.proxy)
    return changes


def write_secrets(tier: Tier, *, password: str | None, verifier: str | None, api_key: str = "") -> list[Path]:
    """The files the parts read their credentials from, each 0600 in the secrets directory (0700): the instances'
    passfile (the app role's password, for PgBouncer and PostgreSQL alike), the provider's API key, and PgBouncer's
    auth file (the role's SCRAM verifier). Returns the files written."""
    tier.secrets_dir.mkdir(parents=True, exist_ok=True)
    tier.secrets_dir.chmod(0o700)
    written = []
    if password is not None and tier.instances is not None:
        entries = [("*", "*", "*", tier.pgbouncer.role, password)]
        written.append(pgbouncer.write_passfile(tier.secrets_dir / PASSFILE, entries))
    if api_key:
        path = tier.secrets_dir / API_KEY_FILE
        procs.write_atomic(path, api_key, 0o600)
        written.append(path)
    if verifier is not None:
        tier.pgbouncer.state_dir.mkdir(parents=True, exist_ok=True)
        written.append(pgbouncer.write_auth_file(tier.pgbouncer.state_dir, tier.pgbouncer.role, verifier))
    return written


def stop_all(base: Path) -> list[str]:
    """Stop every part of a tier kept in ``base`` by its recorded PID, front first, and remove its secrets; the
    names of those that ran. (The cache add-on is Phase 2's: its upstream is put back by the journal.)"""
    stopped = []
    for name, server in (("load balancer", nginx.Nginx(base / "balancer")),
                         ("app instances", supervisor.Supervisor(base / "instances")),
                         ("PgBouncer", pgbouncer.PgBouncer(base / "pgbouncer"))):  # fmt: skip
        if server.stop():
            stopped.append(name)
        server.clear_state()
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(base / "secrets")
    return stopped


def status(base: Path) -> dict[str, dict]:
    """What runs of the tier, by part (the servers' own status)."""
    return {
        "balancer": dict(nginx.Nginx(base / "balancer").status()),
        "instances": dict(supervisor.Supervisor(base / "instances").status()),
        "pgbouncer": dict(pgbouncer.PgBouncer(base / "pgbouncer").status()),
    }
