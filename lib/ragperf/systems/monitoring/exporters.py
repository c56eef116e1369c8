"""Prometheus exporters of one thing each (the machine, nginx, Redis), started and stopped by ragperf (Phase 3).

Prometheus only scrapes; what it scrapes is an exporter: a small HTTP server that turns one program's own
counters into the text format on ``/metrics``. Debian's exporters are used as they are, each started from a
state directory of its own with ``exporter.json`` (the process record, so any Python process can stop it by
its PID) and ``exporter.log`` (its output):

* ``node``: ``/usr/bin/prometheus-node-exporter`` (1.5, double-dash flags), the machine's CPU, memory, load,
  disks, file systems, network and pressure. ``--collector.disable-defaults`` and then only the collectors
  that matter here: in a container many default ones fail on every scrape (systemd has no D-Bus; hwmon, dmi,
  nvme, rapl, mdadm, zfs ... find nothing) and the textfile collector would read a system directory.
* ``nginx``: ``/usr/bin/prometheus-nginx-exporter`` (0.11, single-dash flags), reads nginx's ``stub_status``
  page (connections and requests; open-source nginx has no per-upstream numbers). It exits at once when the
  page does not answer at its start.
* ``redis``: ``/usr/bin/prometheus-redis-exporter`` (1.45), INFO and a few other commands. Nothing that walks
  the key space is switched on (``-check-keys``, ``-count-keys``, ``-check-streams`` stay empty), and its
  keyspace hits/misses count every key lookup, not only cache reads.

Every exporter listens on a loopback address only: they answer anyone without authentication. Their flags
also have environment-variable defaults (``SCRAPE_URI``, ``TIMEOUT``, ``REDIS_EXPORTER_CHECK_KEYS`` ...); those
are removed from the child's environment so that only this module's configuration counts.

A start counts once ``/metrics`` answers 200 and, for nginx and Redis, the exporter reports its target up
(``nginx_up 1``, ``redis_up 1``). :func:`plan` plans ``exporter`` changes (the change's name is the exporter's
``which``); :class:`ExporterApplier` makes and undoes them. :func:`scrape` and :func:`samples` read any
exporter's metrics.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError, Config, check_int, config_diff, diff_text

log = logging.getLogger(__name__)

KIND = "exporter"
RECORD = "exporter.json"
LOG = "exporter.log"
WHICH = ("node", "nginx", "redis")
BINARIES = {
    "node": "/usr/bin/prometheus-node-exporter",
    "nginx": "/usr/bin/prometheus-nginx-exporter",
    "redis": "/usr/bin/prometheus-redis-exporter",
}
# The node exporter's collectors kept on (all others off): cheap, and they work in a container.
NODE_COLLECTORS = ("cpu", "meminfo", "loadavg", "diskstats", "filesystem", "netdev", "stat", "pressure", "vmstat",
                   "time", "uname")  # fmt: skip
# The metric that says whether the exporter reaches its target; the node exporter has none.
UP_METRIC = {"nginx": "nginx_up", "redis": "redis_up"}
# Environment variables the exporters read as flag defaults: never inherited.
_ENV_NAMES = {
    "nginx": {"NGINX_PLUS", "NGINX_RETRIES", "NGINX_RETRY_INTERVAL", "SCRAPE_URI", "SSL_CA_CERT", "SSL_CLIENT_CERT",
              "SSL_CLIENT_KEY", "SSL_VERIFY", "TIMEOUT", "CONST_LABELS", "LISTEN_ADDRESS", "SECURED_METRICS",
              "SSL_SERVER_CERT", "SSL_SERVER_KEY", "TELEMETRY_PATH"},
    "redis": {"REDIS_ADDR", "REDIS_USER", "REDIS_PASSWORD", "REDIS_PASSWORD_FILE"},
    "node": set(),
}  # fmt: skip
_ENV_PREFIXES = {"nginx": (), "redis": ("REDIS_EXPORTER_",), "node": ()}

_NGINX_TARGET_RE = re.compile(r"^http://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})(/[A-Za-z0-9._~/-]*)$")
_REDIS_TARGET_RE = re.compile(r"^redis://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})$")


class ExporterError(procs.ProcessError, ChangeError):
    """An exporter could not be started, asked or stopped."""


def check_loopback(name: str, value: object) -> None:
    """ValueError naming ``name`` unless ``value`` is an IPv4 loopback address (exporters have no authentication)."""
    try:
        address = ipaddress.IPv4Address(value)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not an IPv4 address; give a loopback one such as 127.0.0.1") from None
    if not address.is_loopback:
        raise ValueError(
            f"{name}: {value} is not a loopback address; exporters answer anyone without authentication, so they "
            "listen on 127.0.0.1 (or another 127.x address) only"
        )


def check_state_dir(value: object) -> Path:
    """The absolute state directory; ValueError unless it is an absolute path without line breaks."""
    path = Path(value)  # type: ignore[arg-type]
    if not path.is_absolute():
        raise ValueError(f"state_dir: must be an absolute path, not {str(path)!r}")
    if any(ch in str(path) for ch in "\n\r\0"):
        raise ValueError("state_dir: must not contain line breaks or NUL characters")
    return path


def _check_target(which: str, target: object) -> None:
    if which == "node":
        if target != "":
            raise ValueError(
                f"target: the node exporter reads this machine and takes no target; give '', not {target!r}"
            )
        return
    regex, shape = (
        (_NGINX_TARGET_RE, "http://host:port/path of nginx's stub_status page")
        if which == "nginx"
        else (_REDIS_TARGET_RE, "redis://host:port, without a password (it is on the command line)")
    )
    match = regex.match(target) if isinstance(target, str) else None
    if match is None or not 1 <= int(match.group(2)) <= 65535:
        raise ValueError(f"target: {target!r} is not {shape}")


@dataclass(frozen=True)
class ExporterConfig(Config):
    """One exporter: ``which`` program ("node", "nginx" or "redis"), where it listens, its state directory, and
    its ``target`` ("" for node; nginx: the stub_status URL ``http://127.0.0.1:P/path``; redis: ``redis://127.0.0.1:P``).

    Raises ValueError (naming the field and what is allowed) when a value is not valid.
    """

    which: str
    listen_port: int
    state_dir: Path
    target: str = ""
    listen_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.which not in WHICH:
            raise ValueError(f"which: must be one of {', '.join(WHICH)}; not {self.which!r}")
        check_int("listen_port", self.listen_port, 1, 65535)
        object.__setattr__(self, "state_dir", check_state_dir(self.state_dir))
        _check_target(self.which, self.target)
        check_loopback("listen_host", self.listen_host)

    @property
    def url(self) -> str:
        """The exporter's base URL; its metrics are at ``url + "/metrics"``."""
        return f"http://{self.listen_host}:{self.listen_port}"

    @property
    def metrics_url(self) -> str:
        """Where Prometheus (and :func:`scrape`) reads the metrics."""
        return f"{self.url}/metrics"

    @property
    def scrape_address(self) -> str:
        """``host:port``, as a Prometheus ``static_configs`` target."""
        return f"{self.listen_host}:{self.listen_port}"


def argv(cfg: ExporterConfig) -> list[str]:
    """The command line that runs ``cfg``'s exporter in the foreground (pure)."""
    binary = BINARIES[cfg.which]
    if cfg.which == "node":
        return [
            binary,
            f"--web.listen-address={cfg.scrape_address}",
            "--collector.disable-defaults",
            *(f"--collector.{name}" for name in NODE_COLLECTORS),
        ]
    if cfg.which == "nginx":  # single-dash flags
        return [binary, f"-web.listen-address={cfg.scrape_address}", f"-nginx.scrape-uri={cfg.target}"]
    return [
        binary,
        f"-web.listen-address={cfg.scrape_address}",
        f"-redis.addr={cfg.target}",
        # Explicitly empty: nothing walks the key space (SCAN over every key on each scrape).
        "-check-keys=",
        "-check-single-keys=",
        "-count-keys=",
        "-check-streams=",
        "-include-system-metrics=false",
        "-export-client-list=false",
    ]


def environment(which: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (this process's environment by default) without the variables ``which``'s exporter reads as
    flag defaults, so that only the command line configures it."""
    names, prefixes = _ENV_NAMES[which], _ENV_PREFIXES[which]
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if k not in names and not k.startswith(prefixes)}


# -- reading metrics -----------------------------------------------------------------------------------------


def scrape(url: str, timeout: float = 5.0) -> str:
    """The text an exporter answers at ``url`` (its ``/metrics``); never through a proxy from the environment.

    Raises:
        ExporterError: it did not answer 200.
    """
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(url, timeout=timeout) as response:
            return response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        raise ExporterError(f"{url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ExporterError(f"{url} did not answer ({getattr(exc, 'reason', exc)})") from None


_SAMPLE_RE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def _labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text) and (match := _LABEL_RE.match(text, pos)):
        labels[match.group(1)] = re.sub(r"\\.", lambda m: _UNESCAPE.get(m.group(0), m.group(0)), match.group(2))
        pos = match.end()
    return labels


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of the exposition ``text`` as (name, labels, value), names exactly as written.

    (prometheus_client's parser renames a counter's samples to ``<name>_total``; the names here are the
    ones Prometheus stores and queries use.)
    """
    result = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE_RE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        result.append((name, _labels(labels or ""), number))
    return result


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called ``name`` in the exposition ``text``, as (labels, value)."""
    return [(labels, value) for sample, labels, value in parse(text) if sample == name]


def metric_names(text: str) -> set[str]:
    """The names of all samples in the exposition ``text``."""
    return {name for name, _, _ in parse(text)}


def _up(text: str, name: str) -> str | None:
    values = [value for _, value in samples(text, name)]
    if not values:
        return f"no {name} in its metrics"
    return None if all(value == 1 for value in values) else f"{name} is {values[0]:g} (it cannot read its target)"


class ExporterServer(procs.Server):
    """One exporter whose record and log live in ``state_dir`` (one exporter per state directory); stopped by
    its recorded PID. A start with the configuration it already runs with does nothing; another configuration
    of the same exporter restarts it; another exporter's state directory is refused."""

    NAME = "exporter"
    WHAT = "exporter"
    RECORD = RECORD
    LOG = LOG
    CONFIG = ExporterConfig
    ERROR = ExporterError
    STOP_TIMEOUT = 10.0

    def argv(self, cfg: ExporterConfig) -> list[str]:
        return argv(cfg)

    def env(self, cfg: ExporterConfig) -> dict[str, str]:
        return environment(cfg.which)

    def awaited(self, cfg: ExporterConfig) -> str:
        up = f" with {UP_METRIC[cfg.which]} 1" if cfg.which in UP_METRIC else ""
        return f"serve the {cfg.which} exporter's metrics at {cfg.metrics_url}{up}"

    def ready(self, cfg: ExporterConfig) -> str | None:
        try:
            text = scrape(cfg.metrics_url, timeout=2.0)
        except ExporterError as exc:
            return str(exc)
        if cfg.which in UP_METRIC:
            return _up(text, UP_METRIC[cfg.which])
        return None if any(name.startswith("node_") for name in metric_names(text)) else "no node_ metrics yet"

    def on_running(self, proc: procs.Proc, cfg: ExporterConfig) -> procs.Proc | None:
        current = self.config
        if current is not None and current.which != cfg.which:
            raise ExporterError(
                f"state_dir: the {current.which} exporter runs from {self.state_dir} (pid {proc.pid}); "
                f"give the {cfg.which} exporter a state directory of its own"
            )
        return super().on_running(proc, cfg)

    def metrics(self, timeout: float = 5.0) -> str:
        """The running exporter's metrics text.

        Raises:
            ExporterError: none runs from this state directory, or it did not answer.
        """
        cfg = self.config
        if cfg is None:
            raise ExporterError(f"no exporter runs from {self.state_dir}")
        return scrape(cfg.metrics_url, timeout=timeout)


def plan(current: ExporterConfig | None, desired: ExporterConfig) -> list[Change]:
    """The change that takes ``desired.which``'s exporter from ``current`` (None: not running) to ``desired``;
    none when equal. The change's name is ``which``, so several exporters fit in one group."""
    if current is not None and current.which != desired.which:
        raise ValueError(f"which: current is the {current.which} exporter, desired the {desired.which} exporter")
    if current == desired:
        return []
    target = f" reading {desired.target}" if desired.target else " reading this machine"
    if current is None:
        reason = f"start the {desired.which} exporter on {desired.metrics_url}{target}, for Prometheus to scrape"
    else:
        reason = f"restart the {desired.which} exporter: {diff_text(config_diff(current, desired))}"
    details = {"url": desired.metrics_url, "scrape_address": desired.scrape_address}
    return [Change.of_config(KIND, desired.which, current, desired, reason, details)]


class ExporterApplier(procs.ServerApplier):
    """Makes and undoes ``exporter`` changes: the exporter of ``after`` runs; undo brings back ``before`` (None:
    stopped). See :class:`ragperf.core.procs.ServerApplier`."""

    kind = KIND
    SERVER = ExporterServer
    TIMEOUT = 15.0


def status(state_dirs: Iterable[Path]) -> list[procs.ServerStatus]:
    """What runs from each of ``state_dirs`` (JSON values)."""
    return [ExporterServer(Path(d)).status() for d in state_dirs]
