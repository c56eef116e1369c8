"""The alert sink: a tiny webhook receiver that writes every notification Alertmanager sends into the run directory.

Alertmanager delivers notifications somewhere; during a ragperf run that somewhere is a file of the phase's
run directory, so that the notebook (and whoever reads the run later) sees which alerts fired and resolved,
and when, without a mail server or a chat service. The program is stdlib only (``http.server``), so it has
nothing to break:

``python -m ragperf.systems.monitoring.alertsink --listen-host 127.0.0.1 --listen-port P --out DIR``

* ``POST /alerts`` takes Alertmanager's webhook payload (version "4": ``receiver``, ``status``, ``alerts``
  with their ``status``, ``labels``, ``annotations``, ``startsAt``, ``endsAt`` and ``fingerprint``,
  ``groupLabels``, ``commonLabels``, ``externalURL``, ``groupKey``) and appends ONE JSON line per
  notification to ``DIR/notifications.jsonl`` (``received_at`` in epoch seconds and ISO 8601), flushed and
  fsynced before it answers 200, so a notification that was acknowledged is on disk. A body that is not
  JSON, or not a webhook payload, answers 400 and is written nowhere; a body over 1 MiB answers 413; a
  request without a Content-Length answers 411.
* ``GET /health`` answers 200 ``{"notifications": n, "out": "<file>"}``, ``n`` being the notifications this
  process wrote since it started.
* It logs one line per notification (its status and alert names), never the bodies, and stops cleanly on
  SIGTERM (requests being handled finish first).

:class:`SinkServer` runs it as a process from a state directory (``alertsink.json``, the process record;
``alertsink.log``, its output), :func:`plan` and :class:`SinkApplier` make it a change of the change model,
and :func:`notifications` reads the file back as a table, one row per alert per notification.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError, Config, check_int, config_diff, diff_text

log = logging.getLogger("ragperf.systems.monitoring.alertsink")  # not "__main__" when run with -m

KIND = "alertsink"
CHANGE_NAME = "alertsink"
RECORD = "alertsink.json"
LOG = "alertsink.log"
NOTIFICATIONS = "notifications.jsonl"
ALERTS_PATH = "/alerts"
HEALTH_PATH = "/health"
MAX_BODY = 1024 * 1024  # bytes a notification may have; Alertmanager's are a few KiB
# A larger body is read and thrown away (up to this much) so the client sees the 413 rather than a reset
# connection; past it the connection is simply closed after the answer.
DRAIN_LIMIT = 16 * MAX_BODY
SOCKET_TIMEOUT_S = 10.0  # a client that stops sending mid-body does not hold a thread for ever
# What the sink and ragperf create in its state directory; undo removes these and nothing else (never the
# notifications, which live in the run directory).
OWN_FILES = (RECORD, LOG)
COLUMNS = [
    "received_at",
    "status",
    "alertname",
    "severity",
    "starts_at",
    "ends_at",
    "labels",
    "summary",
    "fingerprint",
    "receiver",
]
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time: Alertmanager's endsAt of an alert still firing


# -- the program -------------------------------------------------------------------------------------------


class PayloadError(ValueError):
    """A request body that is not an Alertmanager webhook payload."""


def _mapping(value: object, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{what} must be an object")
    return value


def notification_record(payload: object, received_at: float) -> dict[str, Any]:
    """The line :mod:`alertsink` writes for one webhook ``payload`` received at ``received_at`` (epoch s).

    Raises:
        PayloadError: ``payload`` is not a webhook payload (not an object, or ``alerts`` not a list of objects).
    """
    if not isinstance(payload, dict):
        raise PayloadError("the body must be a JSON object")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise PayloadError("alerts must be a list")
    kept = []
    for n, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise PayloadError(f"alerts[{n}] must be an object")
        kept.append(
            {
                "status": alert.get("status"),
                "labels": _mapping(alert.get("labels"), f"alerts[{n}].labels"),
                "annotations": _mapping(alert.get("annotations"), f"alerts[{n}].annotations"),
                "startsAt": alert.get("startsAt"),
                "endsAt": alert.get("endsAt"),
                "fingerprint": alert.get("fingerprint"),
            }
        )
    return {
        "received_at": received_at,
        "received_at_iso": datetime.fromtimestamp(received_at, UTC).isoformat(timespec="milliseconds"),
        "version": payload.get("version"),
        "status": payload.get("status"),
        "receiver": payload.get("receiver"),
        "groupKey": payload.get("groupKey"),
        "groupLabels": _mapping(payload.get("groupLabels"), "groupLabels"),
        "commonLabels": _mapping(payload.get("commonLabels"), "commonLabels"),
        "externalURL": payload.get("externalURL"),
        "truncatedAlerts": payload.get("truncatedAlerts", 0),
        "alerts": kept,
    }


class Sink(ThreadingHTTPServer):
    """The HTTP server: appends each notification to ``out`` under a lock, one whole line at a time."""

    daemon_threads = False  # server_close() waits for the requests being handled
    block_on_close = True

    def __init__(self, address: tuple[str, int], out: Path) -> None:
        super().__init__(address, _Handler)
        self.out = out
        self.lock = threading.Lock()
        self.count = 0

    def append(self, record: Mapping[str, Any]) -> int:
        """Append ``record`` as one JSON line, flushed and fsynced; return how many this process wrote."""
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self.lock:
            with self.out.open("a", encoding="utf-8") as file:
                file.write(line)
                file.flush()
                os.fsync(file.fileno())
            self.count += 1
            return self.count


class _Handler(BaseHTTPRequestHandler):
    """POST /alerts and GET /health; every other request is a 404."""

    server: Sink
    timeout = SOCKET_TIMEOUT_S
    server_version = "ragperf-alertsink"

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        if self.path == HEALTH_PATH:
            with self.server.lock:
                count = self.server.count
            self._answer(200, {"notifications": count, "out": str(self.server.out)})
        else:
            self._answer(404, {"error": f"no such path; POST {ALERTS_PATH} or GET {HEALTH_PATH}"})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != ALERTS_PATH:
            self._answer(404, {"error": f"no such path; POST {ALERTS_PATH}"})
            return
        length = self._length()
        if length is None:
            return
        body = self.rfile.read(length)
        if len(body) < length:
            log.warning("a notification's body ended after %d of %d bytes; dropped", len(body), length)
            self._answer(400, {"error": "the body ended early"})
            return
        try:
            record = notification_record(json.loads(body), datetime.now(UTC).timestamp())
        except PayloadError as exc:
            log.warning("refused a body that is not a webhook payload (%s)", exc)
            self._answer(400, {"error": f"not an Alertmanager webhook payload: {exc}"})
            return
        except ValueError:  # json.JSONDecodeError and UnicodeDecodeError
            log.warning("refused a body that is not JSON (%d bytes)", length)
            self._answer(400, {"error": "the body is not JSON"})
            return
        try:
            count = self.server.append(record)
        except OSError as exc:
            log.error("could not write %s: %s", self.server.out, exc)
            self._answer(500, {"error": "could not write the notification"})
            return
        names = sorted({str(a["labels"].get("alertname", "?")) for a in record["alerts"]})
        log.info(
            "notification %d: %s, %d alert(s): %s",
            count,
            json.dumps(record["status"]),
            len(record["alerts"]),
            json.dumps(names, ensure_ascii=True),  # quoted: a label cannot forge a log line
        )
        self._answer(200, {"written": count})

    def _length(self) -> int | None:
        """The body's length, or None after answering 411/413/400 for a missing, oversized or bad one."""
        raw = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or raw is None:
            self.close_connection = True
            self._answer(411, {"error": "a Content-Length is required"})
            return None
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self.close_connection = True
            self._answer(400, {"error": "a bad Content-Length"})
            return None
        if length > MAX_BODY:
            log.warning("refused a body of %d bytes (at most %d)", length, MAX_BODY)
            if length <= DRAIN_LIMIT:
                with contextlib.suppress(OSError):
                    left = length
                    while left > 0:
                        chunk = self.rfile.read(min(left, 65536))
                        if not chunk:
                            break
                        left -= len(chunk)
            self.close_connection = True
            self._answer(413, {"error": f"the body is larger than {MAX_BODY} bytes"})
            return None
        return length

    def _answer(self, code: int, data: Mapping[str, Any]) -> None:
        body = json.dumps(data).encode()
        with contextlib.suppress(OSError):  # a client that went away does not need its answer
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        """The access log goes to debug: the log keeps one line per notification, not per health probe."""
        log.debug("%s %s", self.address_string(), format % args)


def serve(host: str, port: int, out_dir: Path) -> None:
    """Serve on ``host:port``, writing to ``out_dir/notifications.jsonl``, until SIGTERM or SIGINT."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sink = Sink((host, port), out_dir / NOTIFICATIONS)

    def shut(signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        # shutdown() waits for serve_forever() to return, which runs in this (the main) thread.
        threading.Thread(target=sink.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut)
    signal.signal(signal.SIGINT, shut)
    log.info("alert sink listening on %s:%d, writing %s", host, port, sink.out)
    try:
        sink.serve_forever(poll_interval=0.2)
    finally:
        sink.server_close()
        log.info("alert sink stopped after %d notification(s)", sink.count)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the alert sink until it is stopped (SIGTERM or SIGINT)."""
    parser = argparse.ArgumentParser(
        prog="python -m ragperf.systems.monitoring.alertsink", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help=f"the directory of {NOTIFICATIONS}")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    serve(args.listen_host, args.listen_port, args.out.absolute())


# -- the process ragperf starts and stops ------------------------------------------------------------------


class SinkError(procs.ProcessError, ChangeError):
    """The alert sink could not be started, asked or stopped."""


def check_loopback(name: str, value: object) -> None:
    """ValueError naming ``name`` unless ``value`` is an IPv4 loopback address (127.0.0.0/8)."""
    try:
        address = ipaddress.IPv4Address(value)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not an IPv4 address; use 127.0.0.1") from None
    if not address.is_loopback:
        raise ValueError(
            f"{name}: {value!r} is not a loopback address (127.0.0.0/8): it takes unauthenticated requests, "
            "so it listens on this machine only"
        )


def check_dir(name: str, value: object) -> Path:
    """``value`` as a Path; ValueError naming ``name`` unless it is absolute and has no line break or NUL."""
    if not isinstance(value, str | Path) or not str(value):
        raise ValueError(f"{name}: must be an absolute path, not {value!r}")
    path = Path(value)
    if not path.is_absolute():
        raise ValueError(f"{name}: must be an absolute path, not {str(value)!r}")
    if any(ch in str(path) for ch in "\n\r\0"):
        raise ValueError(f"{name}: must not contain line breaks or NUL characters")
    return path


@dataclass(frozen=True)
class SinkConfig(Config):
    """How the alert sink runs: its port, its state directory (record and log), the directory its
    ``notifications.jsonl`` goes to (the phase's run directory), and its loopback address.

    Raises ValueError (naming the field and what is allowed) when a value is not valid.
    """

    listen_port: int
    state_dir: Path
    out_dir: Path
    listen_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        check_int("listen_port", self.listen_port, 1, 65535)
        object.__setattr__(self, "state_dir", check_dir("state_dir", self.state_dir))
        object.__setattr__(self, "out_dir", check_dir("out_dir", self.out_dir))
        check_loopback("listen_host", self.listen_host)

    @property
    def url(self) -> str:
        """The sink's base URL."""
        return f"http://{self.listen_host}:{self.listen_port}"

    @property
    def webhook_url(self) -> str:
        """What Alertmanager's webhook_configs url is: the sink's ``/alerts``."""
        return self.url + ALERTS_PATH

    @property
    def notifications_path(self) -> Path:
        """The file the notifications are appended to."""
        return self.out_dir / NOTIFICATIONS

    def argv(self) -> list[str]:
        """The command line that runs the sink with this configuration (this Python)."""
        return [
            sys.executable, "-m", "ragperf.systems.monitoring.alertsink",
            "--listen-host", self.listen_host,
            "--listen-port", str(self.listen_port),
            "--out", str(self.out_dir),
        ]  # fmt: skip


class SinkServer(procs.Server):
    """One alert sink process whose record and log live in ``state_dir``; stopped by its recorded PID.

    It counts as started once ``GET /health`` answers 200. A start with the configuration it runs with does
    nothing; another configuration restarts it (the notifications file is appended to, never truncated).
    """

    NAME = "alertsink"
    WHAT = "alert sink"
    RECORD = RECORD
    LOG = LOG
    CONFIG = SinkConfig
    ERROR = SinkError
    TIMEOUT = 20.0
    STOP_TIMEOUT = 15.0

    def argv(self, cfg: SinkConfig) -> list[str]:
        return cfg.argv()

    def awaited(self, cfg: SinkConfig) -> str:
        return f"answer {cfg.url}{HEALTH_PATH}"

    def ready(self, cfg: SinkConfig) -> str | None:
        return procs.http_ok(cfg.url + HEALTH_PATH)

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """The running sink's ``/health``: ``notifications`` (written since it started) and ``out``.

        Raises:
            SinkError: none runs, or it did not answer 200.
        """
        url = self.url + HEALTH_PATH
        try:
            with httpx.Client(timeout=timeout, trust_env=False) as client:
                response = client.get(url)
        except httpx.HTTPError as exc:
            raise SinkError(f"the alert sink did not answer {url} ({type(exc).__name__}: {exc})") from None
        if response.status_code != 200:
            raise SinkError(f"{url} answered HTTP {response.status_code}: {response.text[:200]}")
        return response.json()

    def clear_state(self) -> None:
        """Remove the files ragperf made in the state directory (record and log, never the notifications),
        and the directory itself when that leaves it empty."""
        for name in OWN_FILES:
            (self.state_dir / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()


# -- reading -----------------------------------------------------------------------------------------------


def _timestamps(values: pd.Series) -> pd.Series:
    """RFC 3339 texts as UTC datetimes; Go's zero time (an alert still firing) and bad ones as NaT."""
    cleaned = values.where(values.map(lambda v: isinstance(v, str) and v and v != _ZERO_TIME), None)
    return pd.to_datetime(cleaned, utc=True, format="ISO8601", errors="coerce")


def notifications(out_dir: Path) -> pd.DataFrame:
    """The notifications the sink wrote to ``out_dir``: one row per alert per notification, in the order they
    came. ``received_at``, ``starts_at`` and ``ends_at`` are UTC datetimes (``ends_at`` NaT while an alert
    fires), ``status`` the alert's (firing or resolved), ``labels`` a dict, ``summary`` the annotation.

    A line that cannot be read (the last one, cut by a crash) is skipped with a warning. No file, or no
    notification, gives an empty frame with the same columns.
    """
    path = Path(out_dir) / NOTIFICATIONS
    rows: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            alerts = record["alerts"]
            received = float(record["received_at"])
        except (ValueError, KeyError, TypeError):
            log.warning("skipping line %d of %s: not a notification", number, path)
            continue
        for alert in alerts:
            labels = alert.get("labels") or {}
            rows.append(
                {
                    "received_at": received,
                    "status": alert.get("status"),
                    "alertname": labels.get("alertname"),
                    "severity": labels.get("severity"),
                    "starts_at": alert.get("startsAt"),
                    "ends_at": alert.get("endsAt"),
                    "labels": labels,
                    "summary": (alert.get("annotations") or {}).get("summary"),
                    "fingerprint": alert.get("fingerprint"),
                    "receiver": record.get("receiver"),
                }
            )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["received_at"] = pd.to_datetime(frame["received_at"].astype("float64"), unit="s", utc=True)
    frame["starts_at"] = _timestamps(frame["starts_at"])
    frame["ends_at"] = _timestamps(frame["ends_at"])
    return frame


# -- the change model --------------------------------------------------------------------------------------


def plan(current: SinkConfig | None, desired: SinkConfig | None) -> list[Change]:
    """The change that takes the sink from ``current`` to ``desired`` (None: not running); none when equal."""
    if current == desired:
        return []
    if desired is None:
        reason = "stop the alert sink (the notifications it wrote stay in the run directory)"
        details: dict[str, Any] = {"action": "stop"}
    elif current is None:
        reason = (
            f"start the alert sink on {desired.webhook_url}, so that Alertmanager's notifications land in "
            f"{desired.notifications_path}"
        )
        details = {"action": "start", "webhook_url": desired.webhook_url}
    else:
        diff = config_diff(current, desired)
        reason = f"restart the alert sink: {diff_text(diff)}"
        details = {"action": "restart", "webhook_url": desired.webhook_url, "diff": diff}
    return [Change.of_config(KIND, CHANGE_NAME, current, desired, reason, details)]


class SinkApplier(procs.ServerApplier):
    """Makes and undoes ``alertsink`` changes: the sink runs with ``after``; undo brings back ``before``, or stops
    the sink and removes its record and log when that is None. The notifications file is never removed: it is
    the run's evidence. See :class:`ragperf.core.procs.ServerApplier`."""

    kind = KIND
    SERVER = SinkServer
    TIMEOUT = 20.0


if __name__ == "__main__":
    main()
