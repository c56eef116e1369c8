"""Our own Prometheus (Phase 3), started and stopped by ragperf, and the reads the notebooks make of it.

The machine's Prometheus service and ``/etc/prometheus`` are never touched: :class:`PrometheusServer` runs a
private ``prometheus`` whose every file lives in one state directory: ``prometheus.yml`` (written by
:func:`render`), ``rules.yml`` (the alert and recording rules, :attr:`PrometheusConfig.rules_yaml`),
``prometheus.json`` (the process record), ``prometheus.log`` (its output) and ``data/`` (the TSDB, bounded by a
retention time and size). It listens on the loopback address only.

Both files are checked with ``promtool check config`` before they are written (a bad file never replaces a
good one). A change of targets, rules, Alertmanager or scrape interval is applied to the running server by a
reload (``POST /-/reload``), which is confirmed by reading back the configuration and the rules it loaded; a
change of port, state directory or retention restarts it.

The reads (:func:`query`, :func:`query_range`, :func:`targets`, :func:`alerts`, :func:`rules`) return pandas
frames with floats (Prometheus sends sample values as strings) and UTC times. :class:`PrometheusApplier` makes
and undoes ``prometheus`` changes of the change model; :func:`plan` plans them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import yaml

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError, Config, check_int, config_diff

log = logging.getLogger(__name__)

KIND = "prometheus"
CHANGE_NAME = "prometheus"
RECORD = "prometheus.json"
LOG = "prometheus.log"
CONFIG_FILE = "prometheus.yml"
RULES_FILE = "rules.yml"
DATA_DIR = "data"
SELF_JOB = "prometheus"
MAX_POINTS = 11_000  # Prometheus refuses a range query with more points than this in one series
# What ragperf and Prometheus make in a state directory; undo removes these and nothing else.
OWN_FILES = (CONFIG_FILE, RULES_FILE, RECORD, LOG)
# Fields a running Prometheus takes by a reload; any other change restarts it.
RELOADABLE = ("targets", "rules_yaml", "alertmanager", "scrape_interval_s")
EMPTY_RULES = "groups: []\n"

_JOB_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_HOST_RE = re.compile(r"^(?:\d{1,3}(?:\.\d{1,3}){3}|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


def prometheus_binary() -> str:
    """The prometheus to run: the one on PATH, else Debian's ``/usr/bin/prometheus``."""
    return shutil.which("prometheus") or "/usr/bin/prometheus"


def promtool_binary() -> str:
    """The promtool to run: the one on PATH, else Debian's ``/usr/bin/promtool``."""
    return shutil.which("promtool") or "/usr/bin/promtool"


class PrometheusError(procs.ProcessError, ChangeError):
    """Our Prometheus could not be started, reloaded, asked or stopped, or refused a file."""


class PrometheusQueryError(PrometheusError):
    """Prometheus refused a query: ``error_type`` and ``error`` are its own words (``bad_data`` ...)."""

    def __init__(self, error_type: str, error: str, expr: str | None = None) -> None:
        self.error_type, self.error, self.expr = error_type, error, expr
        where = f" in {expr!r}" if expr else ""
        super().__init__(f"Prometheus refused the query{where}: {error_type}: {error}")


# -- configuration -------------------------------------------------------------------------------------


def _check_address(name: str, value: object) -> tuple[str, int]:
    """``host:port`` split; ValueError naming ``name`` unless it is a host name or IPv4 address and a port 1-65535."""
    text = value if isinstance(value, str) else ""
    host, sep, port = text.rpartition(":")
    if not sep or not _HOST_RE.match(host) or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{name}: {value!r} is not host:port (a host name or IPv4 address, a port from 1 to 65535)")
    return host, int(port)


@dataclass(frozen=True)
class ScrapeTarget(Config):
    """One endpoint Prometheus scrapes: its job (``[a-z_][a-z0-9_]*``), ``host:port`` and metrics path.

    Written as ``job=host:port/path`` (:meth:`parse`, ``str()``); the path defaults to ``/metrics``.

    Raises ValueError (naming the field and what is allowed) when a value is not valid.
    """

    job: str
    address: str
    path: str = "/metrics"

    def __post_init__(self) -> None:
        if not isinstance(self.job, str) or not _JOB_RE.match(self.job):
            raise ValueError(f"job: must match [a-z_][a-z0-9_]* (lower-case letters, digits, '_'), not {self.job!r}")
        _check_address("address", self.address)
        if not isinstance(self.path, str) or not _PATH_RE.match(self.path) or "//" in self.path:
            raise ValueError(
                f"path: must be a URL path starting with '/' (no query, spaces or '//'), not {self.path!r}"
            )

    @classmethod
    def parse(cls, text: str) -> ScrapeTarget:
        """The target written ``job=host:port/path`` (``/path`` optional: ``/metrics``).

        Raises:
            ValueError: ``text`` is not in that form, or a part is not valid.
        """
        if not isinstance(text, str) or "=" not in text:
            raise ValueError(f"targets: {text!r} is not job=host:port[/path]")
        job, _, rest = text.partition("=")
        address, slash, path = rest.partition("/")
        return cls(job=job, address=address, path=f"/{path}" if slash else "/metrics")

    def __str__(self) -> str:
        return f"{self.job}={self.address}{self.path}"


def _check_number(name: str, value: object, low: float, high: float, unit: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{name}: must be a number of {unit} from {low:g} to {high:g}, not {value!r}")


def _check_targets(value: Any) -> tuple[str, ...]:
    """The targets as a tuple of canonical ``job=host:port/path`` texts; ValueError for a bad or clashing one."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"targets: must be a list of job=host:port[/path] texts, not {value!r}")
    parsed = [ScrapeTarget.parse(item) for item in value]
    paths: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    for target in parsed:
        if target.job == SELF_JOB:
            raise ValueError(f"targets: the job name {SELF_JOB!r} is Prometheus's own scrape of itself; pick another")
        if paths.setdefault(target.job, target.path) != target.path:
            raise ValueError(
                f"targets: job {target.job!r} has two metrics paths ({paths[target.job]} and {target.path}); "
                "one job has one path: give the other path its own job name"
            )
        if (target.job, target.address) in seen:
            raise ValueError(f"targets: {target} is given twice")
        seen.add((target.job, target.address))
    return tuple(str(target) for target in parsed)


@dataclass(frozen=True)
class PrometheusConfig(Config):
    """How our Prometheus runs: where it listens and keeps its data, what it scrapes, its rules and Alertmanager.

    ``targets`` are ``job=host:port/path`` texts (:class:`ScrapeTarget`); Prometheus also scrapes itself (job
    ``prometheus``). Rules are evaluated every ``scrape_interval_s``. ``rules_yaml`` is the text of
    ``rules.yml`` ("": no rules). ``alertmanager`` is ``host:port`` or None (alerts are then only shown).
    The TSDB keeps ``retention_time_h`` hours, at most ``retention_size_mb`` MB.

    Raises ValueError (naming the field and what is allowed) when a value is not valid.
    """

    listen_port: int
    state_dir: Path
    scrape_interval_s: float = 15.0
    targets: tuple[str, ...] = ()
    alertmanager: str | None = None
    rules_yaml: str = ""
    retention_time_h: int = 24
    retention_size_mb: int = 1024
    listen_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir).absolute())
        if any(ch in str(self.state_dir) for ch in "\n\r\0"):
            raise ValueError("state_dir: must not contain line breaks or NUL characters")
        check_int("listen_port", self.listen_port, 1, 65535)
        try:
            ipaddress.IPv4Address(self.listen_host)
        except ValueError:
            raise ValueError(f"listen_host: {self.listen_host!r} is not an IPv4 address (127.0.0.1)") from None
        _check_number("scrape_interval_s", self.scrape_interval_s, 1, 300, "seconds")
        if round(self.scrape_interval_s * 1000) != self.scrape_interval_s * 1000:
            raise ValueError(f"scrape_interval_s: must be whole milliseconds, not {self.scrape_interval_s!r}")
        object.__setattr__(self, "scrape_interval_s", float(self.scrape_interval_s))
        object.__setattr__(self, "targets", _check_targets(self.targets))
        if self.alertmanager is not None:
            _check_address("alertmanager", self.alertmanager)
        if not isinstance(self.rules_yaml, str):
            raise ValueError(f"rules_yaml: must be the text of a rules file, not {type(self.rules_yaml).__name__}")
        check_int("retention_time_h", self.retention_time_h, 1, 8760)
        check_int("retention_size_mb", self.retention_size_mb, 16, 1_000_000)

    @property
    def url(self) -> str:
        """Where clients reach Prometheus (the loopback address when it listens on every interface)."""
        host = "127.0.0.1" if self.listen_host == "0.0.0.0" else self.listen_host
        return f"http://{host}:{self.listen_port}"

    @property
    def scrape_targets(self) -> tuple[ScrapeTarget, ...]:
        return tuple(ScrapeTarget.parse(text) for text in self.targets)

    def restart_fields(self, other: PrometheusConfig) -> list[str]:
        """The fields that differ from ``other`` and need a restart (not taken by a reload)."""
        return [
            f.name for f in fields(self) if f.name not in RELOADABLE and getattr(self, f.name) != getattr(other, f.name)
        ]


def duration(seconds: float) -> str:
    """A Prometheus duration for ``seconds``: whole seconds ("15s") or milliseconds ("1500ms")."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


_DURATION_RE = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus duration ("1m30s", "1500ms"); ValueError for anything else."""
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a Prometheus duration")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


def _jobs(cfg: PrometheusConfig) -> dict[str, tuple[str, list[str]]]:
    """Job name -> (metrics path, addresses), Prometheus's own job first."""
    jobs: dict[str, tuple[str, list[str]]] = {SELF_JOB: ("/metrics", [f"{cfg.url.removeprefix('http://')}"])}
    for target in cfg.scrape_targets:
        jobs.setdefault(target.job, (target.path, []))[1].append(target.address)
    return jobs


def render(cfg: PrometheusConfig) -> str:
    """The prometheus.yml text for ``cfg`` (pure: reads and writes nothing).

    One scrape job per job name (its targets share it; ``instance`` stays the address), Prometheus's own job,
    rules from ``rules.yml`` beside it, evaluated every scrape interval, and the Alertmanager when given.
    """
    interval = cfg.scrape_interval_s
    data: dict[str, Any] = {
        "global": {
            "scrape_interval": duration(interval),
            "evaluation_interval": duration(interval),
            # A scrape must end before the next starts.
            "scrape_timeout": duration(min(interval, 10.0)),
        },
        "rule_files": [RULES_FILE],
    }
    if cfg.alertmanager is not None:
        data["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [cfg.alertmanager]}]}]}
    data["scrape_configs"] = [
        {"job_name": job, "metrics_path": path, "static_configs": [{"targets": addresses}]}
        for job, (path, addresses) in _jobs(cfg).items()
    ]
    header = "# Written by ragperf (ragperf.systems.monitoring.prometheus): a private Prometheus. Do not edit.\n"
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


# -- promtool ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromtoolResult:
    """What promtool said: ``ok`` when it exited 0, and its output (stdout and stderr)."""

    ok: bool
    output: str


def _promtool(args: Sequence[str], cwd: Path, timeout: float = 120.0) -> PromtoolResult:
    try:
        done = subprocess.run(
            [promtool_binary(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return PromtoolResult(False, f"promtool {' '.join(args)} did not finish within {timeout:g} s")
    except FileNotFoundError:
        return PromtoolResult(False, f"promtool is not installed ({promtool_binary()})")
    return PromtoolResult(done.returncode == 0, (done.stdout + done.stderr).strip())


def _check_config_files(files: Mapping[str, str]) -> PromtoolResult:
    """``promtool check config`` of the files by name, written to a temporary directory (rules included)."""
    with tempfile.TemporaryDirectory(prefix="ragperf-promtool-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        return _promtool(["check", "config", CONFIG_FILE], Path(tmp))


def check_config(source: Path | str, rules_text: str | None = None) -> PromtoolResult:
    """``promtool check config`` of a state directory's (or a file's) prometheus.yml, or of a prometheus.yml
    text (with ``rules_text`` as the rules.yml it names). The check includes the rule files it references."""
    if isinstance(source, Path):
        path = source / CONFIG_FILE if source.is_dir() else source
        return _promtool(["check", "config", path.name], path.parent.absolute())
    files = {CONFIG_FILE: source} | ({} if rules_text is None else {RULES_FILE: rules_text})
    return _check_config_files(files)


def check_rules(text: str) -> PromtoolResult:
    """``promtool check rules`` of a rules file's text."""
    with tempfile.TemporaryDirectory(prefix="ragperf-promtool-") as tmp:
        (Path(tmp) / RULES_FILE).write_text(text, encoding="utf-8")
        return _promtool(["check", "rules", RULES_FILE], Path(tmp))


def test_rules(rules_text: str, tests_text: str, timeout: float = 300.0) -> PromtoolResult:
    """``promtool test rules`` of a unit test file's text against a rules file's text (as ``rules.yml``)."""
    with tempfile.TemporaryDirectory(prefix="ragperf-promtool-") as tmp:
        (Path(tmp) / RULES_FILE).write_text(rules_text, encoding="utf-8")
        (Path(tmp) / "tests.yml").write_text(tests_text, encoding="utf-8")
        return _promtool(["test", "rules", "tests.yml"], Path(tmp), timeout=timeout)


test_rules.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, whoever imports it


# -- the server ----------------------------------------------------------------------------------------


class PrometheusStatus(procs.ServerStatus, total=False):
    """:meth:`PrometheusServer.status`: the server's fields, its URL and log."""

    url: str | None
    log: str


class PrometheusServer(procs.Server):
    """One private Prometheus whose files all live in ``state_dir``; stopped by its recorded PID.

    A start with the configuration it already runs with does nothing; one that changes only
    :data:`RELOADABLE` fields checks and writes the new files and reloads it (same PID, data kept); any other
    change restarts it (the TSDB in ``data/`` stays). It counts once ``GET /-/ready`` answers 200.
    """

    NAME = "prometheus"
    WHAT = "Prometheus"
    RECORD = RECORD
    LOG = LOG
    CONFIG = PrometheusConfig
    ERROR = PrometheusError
    TIMEOUT = 60.0  # a restart replays the write-ahead log first
    STOP_TIMEOUT = 30.0

    @property
    def data_dir(self) -> Path:
        return self.state_dir / DATA_DIR

    def files(self, cfg: PrometheusConfig) -> dict[str, str | None]:
        return {CONFIG_FILE: render(cfg), RULES_FILE: cfg.rules_yaml or EMPTY_RULES}

    def check_files(self, files: Mapping[str, str]) -> None:
        """Raise PrometheusError with promtool's words unless ``promtool check config`` accepts the files."""
        result = _check_config_files(files)
        if not result.ok:
            raise PrometheusError(f"promtool check config refused the configuration:\n{result.output}")

    def argv(self, cfg: PrometheusConfig) -> list[str]:
        return [
            prometheus_binary(),
            f"--config.file={self.state_dir / CONFIG_FILE}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--storage.tsdb.retention.time={cfg.retention_time_h}h",
            f"--storage.tsdb.retention.size={cfg.retention_size_mb}MB",
            f"--web.listen-address={cfg.listen_host}:{cfg.listen_port}",
            "--web.enable-lifecycle",
        ]

    def awaited(self, cfg: PrometheusConfig) -> str:
        return f"answer {cfg.url}/-/ready"

    def ready(self, cfg: PrometheusConfig) -> str | None:
        return procs.http_ok(f"{cfg.url}/-/ready")

    def on_running(self, proc: procs.Proc, cfg: PrometheusConfig) -> procs.Proc | None:
        """Keep it when ``cfg`` is what runs; reload it when only :data:`RELOADABLE` fields differ; else restart."""
        current = self.config
        if current == cfg:
            log.info("prometheus already runs from %s with this configuration (pid %d)", self.state_dir, proc.pid)
            return proc
        if current is None or current.restart_fields(cfg):
            why = "its record is unreadable" if current is None else ", ".join(current.restart_fields(cfg))
            log.info("prometheus: %s changed, restarting it", why)
            self.stop()
            return None
        self.reload(cfg)
        return proc

    def reload(self, cfg: PrometheusConfig) -> None:
        """Check and write ``cfg``'s files, reload the running Prometheus and confirm it took them.

        Raises:
            PrometheusError: promtool refused the files (nothing was written), or the reload failed or did not
                take effect (the files it ran with are written back).
        """
        proc, old = self.proc, self.config
        if proc is None or old is None:
            raise PrometheusError(f"no Prometheus runs from {self.state_dir}: nothing to reload")
        self._check_state_dir(cfg)
        new_files = {k: v for k, v in self.files(cfg).items() if v is not None}
        self.check_files(new_files)
        self._write(new_files)
        try:
            _post_reload(cfg.url)
            procs.wait_until(
                lambda: loaded_mismatch(cfg),
                timeout=10.0,
                what="prometheus did not take the new configuration",
                proc=proc,
                interval=0.2,
                error=PrometheusError,
            )
        except BaseException:
            self._write({k: v for k, v in self.files(old).items() if v is not None})
            with contextlib.suppress(PrometheusError):
                _post_reload(old.url)
            raise
        self._save_record(proc, cfg)
        log.info("prometheus in %s reloaded (pid %d)", self.state_dir, proc.pid)

    def _write(self, files: Mapping[str, str]) -> None:
        for name, text in files.items():
            procs.write_atomic(self.state_dir / name, text)

    def status(self) -> PrometheusStatus:
        """What runs (JSON values): PID, port, URL, configuration and log."""
        base = super().status()
        return PrometheusStatus(**base, url=self.url if base["running"] else None, log=str(self.log_path))

    def clear_state(self) -> None:
        """Remove what ragperf and Prometheus made in the state directory (:data:`OWN_FILES`, ``data/``), only that."""
        for name in OWN_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / name).unlink()
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _post_reload(url: str) -> None:
    """POST /-/reload; Prometheus answers once the reload is done (500 with its error when it failed)."""
    try:
        with _client(60.0) as client:
            response = client.post(f"{url}/-/reload")
    except httpx.HTTPError as exc:
        raise PrometheusError(f"Prometheus at {url} did not answer the reload ({type(exc).__name__}: {exc})") from None
    if response.status_code != 200:
        raise PrometheusError(f"Prometheus at {url} refused the reload: HTTP {response.status_code}: {response.text}")


def _fingerprint(data: Mapping[str, Any]) -> dict[str, Any]:
    """What of a prometheus.yml (as loaded by YAML) a reload must have changed: intervals, jobs, Alertmanagers."""
    glob = data.get("global") or {}
    jobs = {
        job["job_name"]: (
            job.get("metrics_path", "/metrics"),
            sorted(t for sc in job.get("static_configs") or [] for t in sc.get("targets") or []),
        )
        for job in data.get("scrape_configs") or []
    }
    managers = sorted(
        t
        for am in (data.get("alerting") or {}).get("alertmanagers") or []
        for sc in am.get("static_configs") or []
        for t in sc.get("targets") or []
    )
    return {
        "scrape_interval": parse_duration(str(glob.get("scrape_interval", "1m"))),
        "evaluation_interval": parse_duration(str(glob.get("evaluation_interval", "1m"))),
        "jobs": jobs,
        "alertmanagers": managers,
    }


def _rule_names(rules_yaml: str) -> list[tuple[str, str]]:
    """(group, rule name) of every rule in a rules file's text, in order."""
    data = yaml.safe_load(rules_yaml) or {}
    return [
        (group["name"], rule.get("record") or rule.get("alert"))
        for group in data.get("groups") or []
        for rule in group.get("rules") or []
    ]


def loaded_mismatch(cfg: PrometheusConfig) -> str | None:
    """None when the Prometheus at ``cfg.url`` runs ``cfg``'s intervals, jobs, Alertmanager and rules; else what
    differs (a probe for :func:`ragperf.core.procs.wait_until`)."""
    try:
        loaded = yaml.safe_load(_api(cfg.url, "/api/v1/status/config")["yaml"])
        groups = _api(cfg.url, "/api/v1/rules")["groups"]
    except PrometheusError as exc:
        return str(exc)
    wanted, got = _fingerprint(yaml.safe_load(render(cfg))), _fingerprint(loaded)
    if wanted != got:
        return "its configuration is " + ", ".join(
            f"{k} {got[k]} (not {wanted[k]})" for k in wanted if wanted[k] != got[k]
        )
    names = [(g["name"], r["name"]) for g in groups for r in g.get("rules") or []]
    if names != _rule_names(cfg.rules_yaml):
        return f"it runs {len(names)} rules, not the {len(_rule_names(cfg.rules_yaml))} of rules.yml"
    return None


# -- reads ---------------------------------------------------------------------------------------------


def _client(timeout: float) -> httpx.Client:
    """An HTTP client that never takes a proxy from the environment (our Prometheus is local)."""
    return httpx.Client(timeout=timeout, trust_env=False)


def _api(
    url: str, path: str, params: Mapping[str, Any] | None = None, *, post: bool = False, timeout: float = 30.0
) -> Any:
    """The ``data`` of a Prometheus API answer.

    Raises:
        PrometheusQueryError: Prometheus answered with ``status: error`` (its errorType and error).
        PrometheusError: it did not answer, or not with JSON.
    """
    target = f"{url.rstrip('/')}{path}"
    try:
        with _client(timeout) as client:
            response = client.post(target, data=params) if post else client.get(target, params=params)
    except httpx.HTTPError as exc:
        raise PrometheusError(f"Prometheus did not answer {target} ({type(exc).__name__}: {exc})") from None
    try:
        body = response.json()
    except ValueError:
        raise PrometheusError(f"{target} answered HTTP {response.status_code}: {response.text[:300]}") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body if isinstance(body, dict) else {}
        expr = (params or {}).get("query")
        raise PrometheusQueryError(str(error.get("errorType", "unknown")), str(error.get("error", body)), expr)
    return body.get("data")


def _labels_frame(rows: list[dict[str, Any]], first: Sequence[str]) -> pd.DataFrame:
    """A frame of ``rows`` with the ``first`` columns first, then the labels sorted by name."""
    rest = sorted({k for row in rows for k in row} - set(first))
    return pd.DataFrame(rows, columns=[*first, *rest])


def _vector_frame(result: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{**item["metric"], "value": float(item["value"][1])} for item in result]
    frame = _labels_frame(rows, ["value"])
    return frame[[c for c in frame.columns if c != "value"] + ["value"]].astype({"value": float})


def _matrix_frame(result: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{"time": ts, "value": float(value), **item["metric"]} for item in result for ts, value in item["values"]]
    frame = _labels_frame(rows, ["time", "value"]).astype({"value": float})
    frame["time"] = pd.to_datetime(frame["time"].astype(float), unit="s", utc=True)
    return frame


def query(url: str, expr: str, at: float | None = None, *, timeout: float = 30.0) -> pd.DataFrame:
    """An instant query at ``at`` (Unix seconds; None: now).

    Returns one row per series: one column per label (``__name__`` included when the result keeps it) and
    ``value`` (float; NaN and ±Inf as floats). A scalar or string result is one row (``value``); a range
    vector (``expr[5m]``) a long frame like :func:`query_range`'s.

    Raises:
        PrometheusQueryError: Prometheus refused ``expr`` (its errorType and error text).
    """
    params: dict[str, Any] = {"query": expr} | ({} if at is None else {"time": f"{at:.3f}"})
    data = _api(url, "/api/v1/query", params, post=True, timeout=timeout)
    kind, result = data["resultType"], data["result"]
    if kind == "vector":
        return _vector_frame(result)
    if kind == "matrix":
        return _matrix_frame(result)
    value = float(result[1]) if kind == "scalar" else result[1]
    return pd.DataFrame({"value": [value]})


def range_step(start: float, end: float, step_s: float | None = None, scrape_interval_s: float | None = None) -> float:
    """The step of a range query from ``start`` to ``end``: ``step_s`` (default: the scrape interval, else 1 s),
    raised so that no series has more than 11,000 points (Prometheus's limit), in whole milliseconds."""
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start})")
    wanted = step_s if step_s is not None else (scrape_interval_s or 1.0)
    if wanted <= 0:
        raise ValueError(f"step_s: must be more than 0, not {step_s!r}")
    floor = (end - start) / (MAX_POINTS - 1)
    step = max(wanted, floor, scrape_interval_s or 0.0)
    return math.ceil(step * 1000 - 1e-6) / 1000


def query_range(
    url: str,
    expr: str,
    start: float,
    end: float,
    step_s: float | None = None,
    *,
    scrape_interval_s: float | None = None,
    timeout: float = 60.0,
) -> pd.DataFrame:
    """A range query from ``start`` to ``end`` (Unix seconds), as a long frame: ``time`` (UTC), ``value``
    (float; Prometheus sends strings, "NaN", "+Inf") and one column per label.

    The step is ``step_s``, at least the scrape interval when given, raised so that no series exceeds
    11,000 points (:func:`range_step`). An empty result is an empty frame with the columns ``time`` and ``value``.

    Raises:
        PrometheusQueryError: Prometheus refused ``expr`` (its errorType and error text).
    """
    step = range_step(start, end, step_s, scrape_interval_s)
    params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    data = _api(url, "/api/v1/query_range", params, post=True, timeout=timeout)
    return _matrix_frame(data["result"])


def _time(text: str | None) -> pd.Timestamp:
    """A UTC time from Prometheus's RFC 3339 text; NaT for none or Go's zero time (never happened)."""
    if not text or text.startswith("0001-01-01"):
        return pd.NaT
    return pd.Timestamp(text).tz_convert("UTC")


def targets(url: str) -> pd.DataFrame:
    """The active scrape targets: job, instance, health (up, down, unknown), last_error, last_scrape (UTC),
    scrape_duration_s and scrape_url, one row per target."""
    data = _api(url, "/api/v1/targets", {"state": "active"})
    rows = [
        {
            "job": t["labels"].get("job", t.get("scrapePool")),
            "instance": t["labels"].get("instance"),
            "health": t.get("health"),
            "last_error": t.get("lastError", ""),
            "last_scrape": _time(t.get("lastScrape")),
            "scrape_duration_s": float(t.get("lastScrapeDuration", math.nan)),
            "scrape_url": t.get("scrapeUrl"),
        }
        for t in data.get("activeTargets") or []
    ]
    columns = ["job", "instance", "health", "last_error", "last_scrape", "scrape_duration_s", "scrape_url"]
    return pd.DataFrame(rows, columns=columns)


def alerts(url: str) -> pd.DataFrame:
    """The alerts now pending or firing: alertname, state (pending or firing), active_at (UTC), value (float),
    then one column per other label."""
    data = _api(url, "/api/v1/alerts")
    rows = [
        {
            "alertname": a["labels"].get("alertname"),
            "state": a.get("state"),
            "active_at": _time(a.get("activeAt")),
            "value": float(a.get("value", "NaN")),
            **{k: v for k, v in a["labels"].items() if k != "alertname"},
        }
        for a in data.get("alerts") or []
    ]
    return _labels_frame(rows, ["alertname", "state", "active_at", "value"]).astype({"value": float})


def rules(url: str) -> pd.DataFrame:
    """Every loaded rule, flattened: group, name, type (alerting or recording), state (alerting only: inactive,
    pending, firing), health, last_error, query."""
    data = _api(url, "/api/v1/rules")
    rows = [
        {
            "group": g["name"],
            "name": r["name"],
            "type": r.get("type"),
            "state": r.get("state"),
            "health": r.get("health"),
            "last_error": r.get("lastError", ""),
            "query": r.get("query"),
        }
        for g in data.get("groups") or []
        for r in g.get("rules") or []
    ]
    return pd.DataFrame(rows, columns=["group", "name", "type", "state", "health", "last_error", "query"])


def wait_for_targets(url: str, jobs: Iterable[str], timeout: float = 60.0) -> pd.DataFrame:
    """Poll until every target of each job in ``jobs`` is health "up" (and each job has one); return the targets.

    Raises:
        PrometheusError: not within ``timeout``; the message names the jobs and targets that are not up and
            their last errors.
    """
    wanted = list(dict.fromkeys(jobs))
    seen: dict[str, pd.DataFrame] = {}

    def missing() -> str | None:
        try:
            frame = targets(url)
        except PrometheusError as exc:
            return str(exc)
        seen["last"] = frame
        problems = []
        for job in wanted:
            rows = frame[frame["job"] == job]
            if rows.empty:
                problems.append(f"job {job}: no target")
            for row in rows[rows["health"] != "up"].itertuples():
                error = f": {row.last_error}" if row.last_error else ""
                problems.append(f"{job} {row.instance} is {row.health}{error}")
        return "; ".join(problems) or None

    procs.wait_until(
        missing,
        timeout=timeout,
        what=f"targets of {', '.join(wanted)} were not up",
        interval=0.25,
        error=PrometheusError,
    )
    return seen["last"]


def wait_for_sample(url: str, expr: str, timeout: float = 60.0) -> pd.DataFrame:
    """Poll until the instant query ``expr`` returns at least one series; return it.

    Raises:
        PrometheusQueryError: Prometheus refused ``expr``.
        PrometheusError: no series within ``timeout``.
    """
    found: dict[str, pd.DataFrame] = {}

    def missing() -> str | None:
        frame = query(url, expr)
        if frame.empty:
            return "no series yet"
        found["frame"] = frame
        return None

    procs.wait_until(missing, timeout=timeout, what=f"{expr!r} returned nothing", interval=0.25, error=PrometheusError)
    return found["frame"]


# -- the change model ----------------------------------------------------------------------------------


def plan(current: PrometheusConfig | None, desired: PrometheusConfig) -> list[Change]:
    """The change that takes Prometheus from ``current`` (None: not running) to ``desired``; none when equal."""
    if current == desired:
        return []
    if current is None:
        jobs = ", ".join(_jobs(desired))
        reason = (
            f"start a private Prometheus on {desired.url} scraping {jobs} every {desired.scrape_interval_s:g} s, "
            f"keeping {desired.retention_time_h} h (at most {desired.retention_size_mb} MB)"
            + (f", sending alerts to {desired.alertmanager}" if desired.alertmanager else "")
        )
        details: dict[str, Any] = {"action": "start", "url": desired.url}
    else:
        diff = config_diff(current, desired)
        action = "restart" if current.restart_fields(desired) else "reload"
        shown = ", ".join(
            ("rules changed" if k == "rules_yaml" else f"{k} {old} -> {new}") for k, (old, new) in diff.items()
        )
        reason = f"{action} Prometheus: {shown}" + (
            " (the same process takes the new files; its data stays)" if action == "reload" else " (its data stays)"
        )
        details = {"action": action, "url": desired.url, "changed": sorted(diff)}
    return [Change.of_config(KIND, CHANGE_NAME, current, desired, reason, details)]


class PrometheusApplier(procs.ServerApplier):
    """Makes and undoes ``prometheus`` changes: starts, reloads or restarts Prometheus with ``after``; undo brings
    back ``before``, or, when that is None, stops it and removes the files it made (prometheus.yml, rules.yml, its
    record and log, data/; nothing else). See :class:`ragperf.core.procs.ServerApplier`."""

    kind = KIND
    SERVER = PrometheusServer
    TIMEOUT = 60.0
