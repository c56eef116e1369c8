"""Our own Alertmanager (Debian's ``prometheus-alertmanager`` 0.25), which routes Prometheus's alerts to the alert sink.

The machine's Alertmanager service and ``/etc/prometheus`` are never touched: :class:`AlertmanagerServer` runs a
private Alertmanager whose every file lives in one state directory: ``alertmanager.yml`` (written by
:func:`render`, checked by ``amtool check-config`` before it is written), ``alertmanager.json`` (the process
record), ``alertmanager.log`` (its output) and ``data/`` (its silences and notification log).

The configuration has one route and one receiver, ``ragperf-webhook``: every alert goes to the webhook (the
alert sink of :mod:`ragperf.systems.monitoring.alertsink`, which writes it into the run directory), grouped by
``alertname``, ``sli`` and ``severity``, with resolved notifications too (``send_resolved``) and no cap on the
alerts a notification carries (``max_alerts: 0``). ``group_wait`` is how long a new group waits for more
alerts before its first notification, ``group_interval`` how long before a changed group (a new or a resolved
alert) is notified again, ``repeat_interval`` how long before an unchanged firing group is re-sent, and
``resolve_timeout`` when an alert that stopped being re-sent without an end time counts as resolved.

It listens on the loopback address only: its API takes alerts and silences without authentication. Gossip
clustering is off (``--cluster.listen-address=`` empty); without that flag Alertmanager 0.25 also listens on
``0.0.0.0:9094`` (TCP and UDP) for peers, on every interface, and two of them on one machine collide.

:func:`alerts` reads what it holds (``/api/v2/alerts``), :func:`post_test_alert` posts an alert as Prometheus
would (``POST /api/v2/alerts``), which proves the delivery path end to end; :func:`plan` and
:class:`AlertmanagerApplier` make it a change of the change model.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import yaml

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError, Config, check_int, config_diff, diff_text
from ragperf.systems.monitoring.alertsink import check_dir, check_loopback

log = logging.getLogger(__name__)

KIND = "alertmanager"
CHANGE_NAME = "alertmanager"
RECEIVER = "ragperf-webhook"
GROUP_BY = ("alertname", "sli", "severity")
CONF = "alertmanager.yml"
RECORD = "alertmanager.json"
LOG = "alertmanager.log"
DATA = "data"
# What Alertmanager and ragperf create in a state directory; undo removes these and nothing else.
OWN_FILES = (CONF, RECORD, LOG)
OWN_DIRS = (DATA,)
DAY = 86400
COLUMNS = [
    "alertname",
    "state",
    "severity",
    "starts_at",
    "ends_at",
    "updated_at",
    "labels",
    "annotations",
    "summary",
    "fingerprint",
    "receivers",
    "silenced_by",
    "inhibited_by",
]

# http(s)://host:port[/path]: no credentials (they would sit in the process record), no query, no spaces.
_WEBHOOK_RE = re.compile(
    r"^(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})(/[A-Za-z0-9._~/%-]*)?$"
)


def alertmanager_binary() -> str:
    """The Alertmanager to run: Debian's ``prometheus-alertmanager`` (on PATH, else in /usr/bin)."""
    return shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


def amtool_binary() -> str:
    """The amtool that checks a configuration (on PATH, else /usr/bin/amtool)."""
    return shutil.which("amtool") or "/usr/bin/amtool"


class AlertmanagerError(procs.ProcessError, ChangeError):
    """Our Alertmanager could not be configured, started, asked or stopped."""


def _check_webhook_url(value: object) -> None:
    match = _WEBHOOK_RE.match(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group(3)) <= 65535:
        raise ValueError(
            f"webhook_url: {value!r} is not http://host:port/path (port 1-65535; no user or password, query or "
            "spaces: the URL is written to the configuration and the process record)"
        )


@dataclass(frozen=True)
class AlertmanagerConfig(Config):
    """How our Alertmanager runs: its port, its state directory, where it delivers (``webhook_url``), its
    grouping timers in seconds, how long it keeps silences and its notification log (``retention_s``), and
    its loopback address.

    Raises ValueError (naming the field and what is allowed) when a value is not valid.
    """

    listen_port: int
    state_dir: Path
    webhook_url: str
    group_wait_s: int = 10
    group_interval_s: int = 30
    repeat_interval_s: int = 3600
    resolve_timeout_s: int = 300
    retention_s: int = 120 * 3600
    listen_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        check_int("listen_port", self.listen_port, 1, 65535)
        object.__setattr__(self, "state_dir", check_dir("state_dir", self.state_dir))
        _check_webhook_url(self.webhook_url)
        check_int("group_wait_s", self.group_wait_s, 0, DAY)
        check_int("group_interval_s", self.group_interval_s, 1, DAY)
        check_int("repeat_interval_s", self.repeat_interval_s, 1, 30 * DAY)
        check_int("resolve_timeout_s", self.resolve_timeout_s, 1, 30 * DAY)
        check_int("retention_s", self.retention_s, 3600, 365 * DAY)
        check_loopback("listen_host", self.listen_host)
        if self.retention_s < self.repeat_interval_s:
            # Alertmanager forgets it sent a notification after the retention, and would then re-send early.
            raise ValueError(
                f"retention_s: must be at least repeat_interval_s ({self.repeat_interval_s}), not {self.retention_s}"
            )
        match = _WEBHOOK_RE.match(self.webhook_url)
        host, port = match.group(2), int(match.group(3))  # type: ignore[union-attr]
        if port == self.listen_port and host in ("127.0.0.1", "localhost", self.listen_host):
            raise ValueError(f"webhook_url: {self.webhook_url} is Alertmanager's own address; give the sink's")

    @property
    def url(self) -> str:
        """Alertmanager's base URL (its API is under /api/v2)."""
        return f"http://{self.listen_host}:{self.listen_port}"


def render(cfg: AlertmanagerConfig) -> str:
    """The alertmanager.yml text for ``cfg`` (pure: reads and writes nothing)."""
    config = {
        "global": {"resolve_timeout": f"{cfg.resolve_timeout_s}s"},
        "route": {
            "receiver": RECEIVER,
            "group_by": list(GROUP_BY),
            "group_wait": f"{cfg.group_wait_s}s",
            "group_interval": f"{cfg.group_interval_s}s",
            "repeat_interval": f"{cfg.repeat_interval_s}s",
        },
        "receivers": [
            {
                "name": RECEIVER,
                "webhook_configs": [{"url": cfg.webhook_url, "send_resolved": True, "max_alerts": 0}],
            }
        ],
    }
    header = (
        "# Written by ragperf (ragperf.systems.monitoring.alertmanager): every alert goes to ragperf's\n"
        "# alert sink, which writes it into the run directory. Do not edit: ragperf rewrites it.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def check_config(text: str, timeout: float = 30.0) -> None:
    """Check an alertmanager.yml with ``amtool check-config`` (in a temporary directory).

    Raises:
        AlertmanagerError: amtool refused it (its output says why), is missing, or did not finish.
    """
    amtool = amtool_binary()
    if not Path(amtool).exists():
        raise AlertmanagerError(f"amtool is not installed ({amtool}); install prometheus-alertmanager")
    with tempfile.TemporaryDirectory(prefix="ragperf-alertmanager-check-") as tmp:
        path = Path(tmp) / CONF
        path.write_text(text, encoding="utf-8")
        try:
            done = subprocess.run(
                [amtool, "check-config", str(path)],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=tmp,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise AlertmanagerError(f"amtool check-config did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().replace(str(path), CONF)
        raise AlertmanagerError(f"amtool check-config refused {CONF}:\n{output}")


class AlertmanagerServer(procs.Server):
    """One private Alertmanager whose files all live in ``state_dir``; stopped by its recorded PID.

    A start with the configuration it already runs with does nothing; another configuration restarts it
    (the alerts it held are lost; Prometheus re-sends the firing ones at its next evaluation, and the
    silences and notification log in ``data/`` stay). It counts once ``GET /-/ready`` answers 200.
    """

    NAME = "alertmanager"
    WHAT = "Alertmanager"
    RECORD = RECORD
    LOG = LOG
    CONFIG = AlertmanagerConfig
    ERROR = AlertmanagerError
    TIMEOUT = 30.0
    STOP_TIMEOUT = 15.0

    @property
    def conf_path(self) -> Path:
        return self.state_dir / CONF

    @property
    def data_path(self) -> Path:
        return self.state_dir / DATA

    def files(self, cfg: AlertmanagerConfig) -> dict[str, str | None]:
        return {CONF: render(cfg)}

    def check_files(self, files: Mapping[str, str]) -> None:
        check_config(files[CONF])

    def argv(self, cfg: AlertmanagerConfig) -> list[str]:
        return [
            alertmanager_binary(),
            f"--config.file={self.conf_path}",
            f"--storage.path={self.data_path}",
            f"--web.listen-address={cfg.listen_host}:{cfg.listen_port}",
            f"--web.external-url={cfg.url}",  # the links in notifications point here, not at the host name
            "--cluster.listen-address=",  # no gossip cluster: nothing on 0.0.0.0:9094
            f"--data.retention={cfg.retention_s}s",
        ]

    def awaited(self, cfg: AlertmanagerConfig) -> str:
        return f"answer {cfg.url}/-/ready"

    def ready(self, cfg: AlertmanagerConfig) -> str | None:
        return procs.http_ok(f"{cfg.url}/-/ready")

    def clear_state(self) -> None:
        """Remove what Alertmanager and ragperf made in the state directory (configuration, record, log,
        data/; never anything else), and the directory itself when that leaves it empty."""
        for name in OWN_FILES:
            (self.state_dir / name).unlink(missing_ok=True)
        for name in OWN_DIRS:
            shutil.rmtree(self.state_dir / name, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()


# -- its API -----------------------------------------------------------------------------------------------


def _client(timeout: float) -> httpx.Client:
    return httpx.Client(timeout=timeout, trust_env=False)  # a local server: never through a proxy


def _rfc3339(value: datetime, name: str) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name}: give a timezone-aware datetime (e.g. datetime.now(UTC)), not a naive one")
    return value.isoformat()


def post_test_alert(
    url: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
    ends_at: datetime | None = None,
    *,
    starts_at: datetime | None = None,
    generator_url: str | None = None,
    timeout: float = 10.0,
) -> None:
    """Post one alert to the Alertmanager at ``url`` as Prometheus does (``POST /api/v2/alerts``).

    ``labels`` must hold an ``alertname``. Without ``ends_at`` the alert fires until ``resolve_timeout``;
    posting the same labels again with ``ends_at`` in the past resolves it (with send_resolved, the sink then
    gets a resolved notification). Datetimes must be timezone-aware.

    Raises:
        ValueError: no alertname, a label or annotation that is not a string, or a naive datetime.
        AlertmanagerError: Alertmanager could not be reached or refused the alert (its answer says why).
    """
    if not isinstance(labels.get("alertname"), str) or not labels["alertname"]:
        raise ValueError("labels: must hold an alertname (a non-empty string)")
    for what, mapping in (("labels", labels), ("annotations", annotations or {})):
        bad = [k for k, v in mapping.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise ValueError(f"{what}: names and values must be strings ({', '.join(map(repr, bad))} are not)")
    alert: dict[str, Any] = {"labels": dict(labels), "annotations": dict(annotations or {})}
    if starts_at is not None:
        alert["startsAt"] = _rfc3339(starts_at, "starts_at")
    if ends_at is not None:
        alert["endsAt"] = _rfc3339(ends_at, "ends_at")
    if generator_url is not None:
        alert["generatorURL"] = generator_url
    target = url.rstrip("/") + "/api/v2/alerts"
    try:
        with _client(timeout) as client:
            response = client.post(target, json=[alert])
    except httpx.HTTPError as exc:
        raise AlertmanagerError(f"Alertmanager did not answer {target} ({type(exc).__name__}: {exc})") from None
    if response.status_code != 200:
        raise AlertmanagerError(f"{target} refused the alert: HTTP {response.status_code}: {response.text[:300]}")


def _times(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")


def alerts(url: str, timeout: float = 10.0) -> pd.DataFrame:
    """The alerts the Alertmanager at ``url`` holds (``GET /api/v2/alerts``): one row each, with its
    ``alertname``, ``state`` (active, suppressed, unprocessed), ``severity``, UTC ``starts_at`` / ``ends_at`` /
    ``updated_at``, ``labels`` and ``annotations`` (dicts), ``summary``, ``fingerprint``, ``receivers`` (names)
    and the silences and alerts it is suppressed by. No alert: an empty frame with those columns.

    Raises:
        AlertmanagerError: Alertmanager could not be reached or did not answer 200 with a list.
    """
    target = url.rstrip("/") + "/api/v2/alerts"
    try:
        with _client(timeout) as client:
            response = client.get(target)
    except httpx.HTTPError as exc:
        raise AlertmanagerError(f"Alertmanager did not answer {target} ({type(exc).__name__}: {exc})") from None
    if response.status_code != 200:
        raise AlertmanagerError(f"{target} answered HTTP {response.status_code}: {response.text[:300]}")
    data = response.json()
    if not isinstance(data, list):
        raise AlertmanagerError(f"{target} answered {type(data).__name__}, not a list of alerts")
    rows = []
    for item in data:
        labels = item.get("labels") or {}
        annotations = item.get("annotations") or {}
        status = item.get("status") or {}
        rows.append(
            {
                "alertname": labels.get("alertname"),
                "state": status.get("state"),
                "severity": labels.get("severity"),
                "starts_at": item.get("startsAt"),
                "ends_at": item.get("endsAt"),
                "updated_at": item.get("updatedAt"),
                "labels": labels,
                "annotations": annotations,
                "summary": annotations.get("summary"),
                "fingerprint": item.get("fingerprint"),
                "receivers": [r.get("name") for r in item.get("receivers") or []],
                "silenced_by": list(status.get("silencedBy") or []),
                "inhibited_by": list(status.get("inhibitedBy") or []),
            }
        )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("starts_at", "ends_at", "updated_at"):
        frame[column] = _times(frame[column])
    return frame


# -- the change model --------------------------------------------------------------------------------------


def plan(current: AlertmanagerConfig | None, desired: AlertmanagerConfig | None) -> list[Change]:
    """The change that takes Alertmanager from ``current`` to ``desired`` (None: not running); none if equal."""
    if current == desired:
        return []
    if desired is None:
        reason = "stop our Alertmanager and remove its files (configuration, record, log, data/)"
        details: dict[str, Any] = {"action": "stop"}
    elif current is None:
        reason = (
            f"start a private Alertmanager on {desired.url} that sends every alert, firing and resolved, to "
            f"{desired.webhook_url} (group_wait {desired.group_wait_s} s, group_interval "
            f"{desired.group_interval_s} s, repeat_interval {desired.repeat_interval_s} s)"
        )
        details = {"action": "start", "url": desired.url}
    else:
        diff = config_diff(current, desired)
        reason = (
            f"restart Alertmanager: {diff_text(diff)} (the alerts it holds are dropped; Prometheus sends the firing "
            "ones again)"
        )
        details = {"action": "restart", "url": desired.url, "diff": diff}
    return [Change.of_config(KIND, CHANGE_NAME, current, desired, reason, details)]


class AlertmanagerApplier(procs.ServerApplier):
    """Makes and undoes ``alertmanager`` changes: Alertmanager runs with ``after``; undo brings back ``before``, or,
    when that is None, stops it and removes its own files (configuration, record, log, data/) and nothing else.
    See :class:`ragperf.core.procs.ServerApplier`."""

    kind = KIND
    SERVER = AlertmanagerServer
    TIMEOUT = 30.0
