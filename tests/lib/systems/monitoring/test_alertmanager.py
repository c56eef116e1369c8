"""Our Alertmanager (Debian's 0.25) on a free loopback port, delivering to a real alert sink; nothing is mocked."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError
from ragperf.systems.monitoring import alertmanager, alertsink
from ragperf.systems.monitoring.alertmanager import (
    AlertmanagerApplier,
    AlertmanagerConfig,
    AlertmanagerError,
    AlertmanagerServer,
)
from ragperf.systems.monitoring.alertsink import SinkConfig, SinkServer

pytestmark = pytest.mark.skipif(
    not (Path(alertmanager.alertmanager_binary()).exists() and Path(alertmanager.amtool_binary()).exists()),
    reason="prometheus-alertmanager (with amtool) is not installed",
)

WEBHOOK = "http://127.0.0.1:9999/alerts"
DEADLINE = 60.0  # generous: the machine is shared


def config(state_dir: Path, **changes: object) -> AlertmanagerConfig:
    return AlertmanagerConfig(
        **{"listen_port": procs.free_port(), "state_dir": state_dir, "webhook_url": WEBHOOK, **changes}
    )


# -- which sockets a process holds (from /proc: no ss needed) -------------------------------------------------


def _address(hex_address: str) -> tuple[str, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = socket.inet_ntoa(raw[::-1])
    else:  # four 32-bit words, each in host (little-endian) order
        ip = str(ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))))
    return ip, int(port, 16)


def sockets(pid: int) -> dict[str, set[tuple[str, int]]]:
    """The TCP sockets ``pid`` listens on and the UDP sockets it has bound, as (address, port)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found: dict[str, set[tuple[str, int]]] = {"tcp": set(), "udp": set()}
    for table in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/{pid}/net/{table}") as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if inode not in inodes:
                    continue
                if table.startswith("tcp") and state == "0A":  # LISTEN
                    found["tcp"].add(_address(local))
                elif table.startswith("udp"):
                    found["udp"].add(_address(local))
    return found


# -- configuration, render, amtool --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("listen_port", 70000, "listen_port: must be a whole number from 1 to 65535"),
        ("state_dir", "am", "state_dir: must be an absolute path"),
        ("webhook_url", "127.0.0.1:9999/alerts", "webhook_url: '127.0.0.1:9999/alerts' is not http://host:port/path"),
        ("webhook_url", "http://127.0.0.1/alerts", "webhook_url: 'http://127.0.0.1/alerts' is not http://host:port"),
        ("webhook_url", "http://u:secret@127.0.0.1:9/a", "webhook_url: 'http://u:secret@127.0.0.1:9/a' is not"),
        ("webhook_url", "http://127.0.0.1:99999/a", "webhook_url: 'http://127.0.0.1:99999/a' is not"),
        ("group_wait_s", -1, "group_wait_s: must be a whole number from 0 to 86400"),
        ("group_interval_s", 0, "group_interval_s: must be a whole number from 1 to 86400"),
        ("repeat_interval_s", 0, "repeat_interval_s: must be a whole number from 1"),
        ("resolve_timeout_s", 1.5, "resolve_timeout_s: must be a whole number"),
        ("retention_s", 3600, "retention_s: must be at least repeat_interval_s (7200), not 3600"),
        ("listen_host", "0.0.0.0", "listen_host: '0.0.0.0' is not a loopback address"),
    ],
)
def test_bad_config_values_name_the_field(tmp_path, field, value, words):
    good = {"listen_port": 9093, "state_dir": tmp_path / "am", "webhook_url": WEBHOOK}
    extra = {"repeat_interval_s": 7200} if field == "retention_s" else {}
    with pytest.raises(ValueError) as failed:
        AlertmanagerConfig(**{**good, **extra, field: value})
    assert str(failed.value).startswith(words), failed.value


def test_the_webhook_must_not_be_alertmanager_itself(tmp_path):
    with pytest.raises(ValueError, match="webhook_url: .* is Alertmanager's own address"):
        config(tmp_path, listen_port=9093, webhook_url="http://127.0.0.1:9093/alerts")


def test_defaults_url_and_round_trip(tmp_path):
    cfg = AlertmanagerConfig(9093, str(tmp_path), WEBHOOK)
    assert (cfg.group_wait_s, cfg.group_interval_s, cfg.repeat_interval_s, cfg.resolve_timeout_s) == (10, 30, 3600, 300)
    assert cfg.url == "http://127.0.0.1:9093" and cfg.state_dir == tmp_path
    assert AlertmanagerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_render_routes_everything_to_the_webhook_with_resolved_notifications(tmp_path):
    cfg = config(tmp_path, group_wait_s=0, group_interval_s=5, repeat_interval_s=600, resolve_timeout_s=120)
    text = alertmanager.render(cfg)
    assert text.startswith("# Written by ragperf")
    data = yaml.safe_load(text)
    assert data["global"] == {"resolve_timeout": "120s"}
    assert data["route"] == {
        "receiver": "ragperf-webhook",
        "group_by": ["alertname", "sli", "severity"],
        "group_wait": "0s",
        "group_interval": "5s",
        "repeat_interval": "600s",
    }
    assert data["receivers"] == [
        {"name": "ragperf-webhook", "webhook_configs": [{"url": WEBHOOK, "send_resolved": True, "max_alerts": 0}]}
    ]
    assert alertmanager.render(cfg) == text and not any(tmp_path.iterdir())  # pure
    alertmanager.check_config(text)  # amtool accepts it


def test_amtool_refuses_a_broken_config_and_nothing_is_written_or_started(tmp_path, monkeypatch):
    with pytest.raises(AlertmanagerError, match=r"amtool check-config refused alertmanager.yml:\n.*undefined receiver"):
        alertmanager.check_config(
            alertmanager.render(config(tmp_path)).replace("receiver: ragperf-webhook", "receiver: x")
        )
    with pytest.raises(AlertmanagerError, match="yaml"):
        alertmanager.check_config("route: [\n")
    cfg = config(tmp_path / "am")
    monkeypatch.setattr(alertmanager, "render", lambda cfg: "route:\n  receiver: nowhere\n")
    server = AlertmanagerServer(cfg.state_dir)
    with pytest.raises(AlertmanagerError, match="undefined receiver"):
        server.start(cfg)
    assert not server.running and not server.conf_path.exists() and not server.log_path.exists()
    assert procs.port_is_free(cfg.listen_port)


def test_post_test_alert_checks_its_arguments_before_sending(tmp_path):
    url = "http://127.0.0.1:9"  # nothing listens: a check that got past the arguments would fail differently
    with pytest.raises(ValueError, match="labels: must hold an alertname"):
        alertmanager.post_test_alert(url, {"severity": "page"})
    with pytest.raises(ValueError, match="ends_at: give a timezone-aware datetime"):
        alertmanager.post_test_alert(url, {"alertname": "A"}, ends_at=datetime.now())
    with pytest.raises(ValueError, match="annotations: names and values must be strings"):
        alertmanager.post_test_alert(url, {"alertname": "A"}, {"summary": 1})  # type: ignore[dict-item]
    with pytest.raises(AlertmanagerError, match="Alertmanager did not answer http://127.0.0.1:9/api/v2/alerts"):
        alertmanager.post_test_alert(url, {"alertname": "A"})


def test_plan_is_pure_and_minimal(tmp_path):
    cfg = config(tmp_path / "am", listen_port=9093)
    assert alertmanager.plan(cfg, cfg) == [] and alertmanager.plan(None, None) == []
    [start] = alertmanager.plan(None, cfg)
    assert (start.kind, start.name, start.before, start.after) == ("alertmanager", "alertmanager", None, cfg.to_dict())
    assert WEBHOOK in start.reason and "group_wait 10 s" in start.reason
    [restart] = alertmanager.plan(cfg, replace(cfg, group_wait_s=1))
    assert restart.details["diff"] == {"group_wait_s": [10, 1]} and "group_wait_s 10 -> 1" in restart.reason
    [stop] = alertmanager.plan(cfg, None)
    assert stop.after is None and stop.details["action"] == "stop"
    assert Change.from_json(json.loads(json.dumps(restart.to_json()))) == restart
    assert not (tmp_path / "am").exists()


# -- end to end: Alertmanager delivers to the sink ------------------------------------------------------------


@dataclass
class Stack:
    sink: SinkConfig
    am: AlertmanagerConfig
    server: AlertmanagerServer


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("alerting")
    sink_cfg = SinkConfig(procs.free_port(), base / "sink", base / "run")
    am_cfg = AlertmanagerConfig(
        procs.free_port(), base / "am", sink_cfg.webhook_url, group_wait_s=0, group_interval_s=1
    )
    sink, server = SinkServer(sink_cfg.state_dir), AlertmanagerServer(am_cfg.state_dir)
    try:
        sink.start(sink_cfg)
        server.start(am_cfg)
        yield Stack(sink_cfg, am_cfg, server)
    finally:
        server.stop(timeout=10)
        sink.stop(timeout=10)


def wait_for(stack: Stack, alertname: str, status: str) -> pd.DataFrame:
    """The sink's rows of ``alertname`` once one of them has ``status``."""

    def seen() -> str | None:
        rows = alertsink.notifications(stack.sink.out_dir)
        rows = rows[(rows["alertname"] == alertname) & (rows["status"] == status)]
        return None if len(rows) else f"no {status} notification of {alertname} yet"

    procs.wait_until(seen, timeout=DEADLINE, what=f"the sink got no {status} {alertname}", interval=0.2)
    rows = alertsink.notifications(stack.sink.out_dir)
    return rows[rows["alertname"] == alertname]


def test_a_test_alert_fires_then_resolves_in_the_sinks_file(stack):
    labels = {"alertname": "RagperfDeliveryTest", "severity": "ticket", "sli": "availability"}
    started = datetime.now(UTC) - timedelta(seconds=5)
    alertmanager.post_test_alert(stack.am.url, labels, {"summary": "the delivery path works"}, starts_at=started)
    firing = wait_for(stack, "RagperfDeliveryTest", "firing")
    row = firing.iloc[0]
    assert (
        row["labels"] == labels and row["summary"] == "the delivery path works" and row["receiver"] == "ragperf-webhook"
    )
    assert abs(row["starts_at"] - pd.Timestamp(started)) < pd.Timedelta(milliseconds=1) and pd.isna(row["ends_at"])

    held = alertmanager.alerts(stack.am.url)
    mine = held[held["alertname"] == "RagperfDeliveryTest"]
    assert list(mine["state"]) == ["active"] and mine.iloc[0]["receivers"] == ["ragperf-webhook"]
    assert mine.iloc[0]["severity"] == "ticket" and mine.iloc[0]["fingerprint"] == row["fingerprint"]

    ended = datetime.now(UTC) - timedelta(seconds=1)
    alertmanager.post_test_alert(stack.am.url, labels, {"summary": "the delivery path works"}, ended, starts_at=started)
    resolved = wait_for(stack, "RagperfDeliveryTest", "resolved")
    last = resolved[resolved["status"] == "resolved"].iloc[-1]
    assert abs(last["ends_at"] - pd.Timestamp(ended)) < pd.Timedelta(milliseconds=1)
    lines = stack.sink.notifications_path.read_text().splitlines()
    assert all(json.loads(line)["externalURL"] == stack.am.url for line in lines)  # links point at loopback


def test_alertmanager_listens_on_its_loopback_port_only_and_has_no_gossip(stack):
    proc = stack.server.proc
    assert proc is not None and procs.is_alive(proc)
    held = sockets(proc.pid)
    assert held["tcp"] == {("127.0.0.1", stack.am.listen_port)}, held
    assert held["udp"] == set(), held  # memberlist's UDP 9094 would show here
    assert "--cluster.listen-address=" in proc.argv


def test_an_empty_alertmanager_reads_as_an_empty_frame(tmp_path):
    cfg = config(tmp_path / "empty")
    server = AlertmanagerServer(cfg.state_dir)
    try:
        server.start(cfg)
        frame = alertmanager.alerts(cfg.url)
        assert frame.empty and list(frame.columns) == alertmanager.COLUMNS
    finally:
        server.stop(timeout=10)


def test_applier_starts_and_undo_stops_it_and_removes_only_its_own_files(tmp_path):
    cfg = config(tmp_path / "am")
    server, applier = AlertmanagerServer(cfg.state_dir), AlertmanagerApplier()
    cfg.state_dir.mkdir()
    (cfg.state_dir / "notes.txt").write_text("not Alertmanager's")
    [start] = alertmanager.plan(None, cfg)
    try:
        applier.apply([start])
        first = server.proc
        assert first is not None and server.config == cfg and procs.http_ok(cfg.url + "/-/ready") is None
        applier.apply([start])  # idempotent: the same process
        assert server.proc == first
        assert {p.name for p in cfg.state_dir.iterdir()} >= {
            "alertmanager.yml",
            "alertmanager.json",
            "alertmanager.log",
            "data",
        }

        changed = replace(cfg, group_interval_s=2)
        [restart] = alertmanager.plan(cfg, changed)
        applier.apply([restart])
        assert server.config == changed and not procs.is_alive(first)
        applier.undo([restart])
        assert server.config == cfg

        running = server.proc
        applier.undo([start])
        assert running is not None and not procs.is_alive(running) and not server.running
        assert procs.port_is_free(cfg.listen_port)
        assert sorted(p.name for p in cfg.state_dir.iterdir()) == ["notes.txt"]
        applier.undo([start])  # again: nothing to do

        with pytest.raises(ChangeError, match="makes only 'alertmanager' changes, not alertsink:alertsink"):
            applier.apply([replace(start, kind="alertsink", name="alertsink")])
        assert not server.running
    finally:
        server.stop(timeout=10)
