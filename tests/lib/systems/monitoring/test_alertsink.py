"""The alert sink as a real process on a free loopback port: what it writes, what it refuses, how it stops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError
from ragperf.systems.monitoring import alertsink
from ragperf.systems.monitoring.alertsink import SinkApplier, SinkConfig, SinkServer


def payload(status: str = "firing", alertname: str = "ErrorBudgetBurn", **extra: object) -> dict:
    """An Alertmanager webhook payload (version 4) of one alert, as Alertmanager 0.25 sends it."""
    alert = {
        "status": status,
        "labels": {"alertname": alertname, "severity": "page", "sli": "latency"},
        "annotations": {"summary": f"{alertname} is {status}", "description": "fast burn"},
        "startsAt": "2026-01-02T03:04:05.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-01-02T03:09:05Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": "5f9b284ad4a235cd",
    }
    return {
        "version": "4",
        "receiver": "ragperf-webhook",
        "status": status,
        "alerts": [alert],
        "groupLabels": {"alertname": alertname},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://127.0.0.1:9093",
        "groupKey": "{}:{alertname=" + json.dumps(alertname) + "}",
        "truncatedAlerts": 0,
        **extra,
    }


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def config(tmp_path: Path) -> SinkConfig:
    return SinkConfig(procs.free_port(), tmp_path / "state", tmp_path / "run")


@pytest.fixture
def sink(config: SinkConfig):
    server = SinkServer(config.state_dir)
    server.start(config)
    try:
        yield server
    finally:
        server.stop(timeout=10)


# -- configuration, pure functions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("listen_port", 0, "listen_port: must be a whole number from 1 to 65535"),
        ("listen_port", True, "listen_port: must be a whole number"),
        ("state_dir", "relative/dir", "state_dir: must be an absolute path"),
        ("out_dir", "run", "out_dir: must be an absolute path"),
        ("out_dir", "/tmp/a\nb", "out_dir: must not contain line breaks"),
        ("listen_host", "0.0.0.0", "listen_host: '0.0.0.0' is not a loopback address"),
        ("listen_host", "localhost", "listen_host: 'localhost' is not an IPv4 address"),
    ],
)
def test_bad_config_values_name_the_field(tmp_path, field, value, words):
    good = {"listen_port": 9000, "state_dir": tmp_path / "s", "out_dir": tmp_path / "o"}
    with pytest.raises(ValueError) as failed:
        SinkConfig(**{**good, field: value})
    assert str(failed.value).startswith(words), failed.value


def test_config_urls_and_round_trip(tmp_path):
    cfg = SinkConfig(9123, tmp_path / "s", str(tmp_path / "o"))
    assert cfg.url == "http://127.0.0.1:9123" and cfg.webhook_url == "http://127.0.0.1:9123/alerts"
    assert cfg.out_dir == tmp_path / "o" and cfg.notifications_path == tmp_path / "o" / "notifications.jsonl"
    assert SinkConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown SinkConfig field"):
        SinkConfig.from_dict({**cfg.to_dict(), "password": "x"})


def test_the_record_keeps_what_the_brief_names_and_refuses_non_payloads():
    record = alertsink.notification_record(payload(), 1_700_000_000.25)
    assert record["received_at"] == 1_700_000_000.25 and record["received_at_iso"].startswith("2023-11-14T22:13:20.250")
    assert (record["status"], record["receiver"], record["version"]) == ("firing", "ragperf-webhook", "4")
    assert record["groupKey"] == '{}:{alertname="ErrorBudgetBurn"}'
    [alert] = record["alerts"]
    assert set(alert) == {"status", "labels", "annotations", "startsAt", "endsAt", "fingerprint"}
    for bad in ([], {"alerts": {}}, {"alerts": ["x"]}, {"alerts": [{"labels": []}]}):
        with pytest.raises(alertsink.PayloadError):
            alertsink.notification_record(bad, 0.0)


def test_notifications_of_nothing_is_an_empty_frame_with_the_columns(tmp_path):
    frame = alertsink.notifications(tmp_path / "nowhere")
    assert list(frame.columns) == alertsink.COLUMNS and frame.empty
    for column in ("received_at", "starts_at", "ends_at"):
        assert isinstance(frame[column].dtype, pd.DatetimeTZDtype), column


def test_notifications_reads_one_row_per_alert_and_skips_a_cut_line(tmp_path):
    two = payload()
    two["alerts"].append({**two["alerts"][0], "labels": {"alertname": "Other"}, "annotations": {}})
    with (tmp_path / alertsink.NOTIFICATIONS).open("w") as out:
        out.write(json.dumps(alertsink.notification_record(two, 1_700_000_000.0)) + "\n")
        out.write(json.dumps(alertsink.notification_record(payload("resolved"), 1_700_000_060.0)) + "\n")
        out.write('{"received_at": 1700000070, "alerts": [')  # a crash in the middle of a line
    frame = alertsink.notifications(tmp_path)
    assert list(frame["alertname"]) == ["ErrorBudgetBurn", "Other", "ErrorBudgetBurn"]
    assert list(frame["status"]) == ["firing", "firing", "resolved"]
    assert list(frame["severity"].fillna("-")) == ["page", "-", "page"]
    assert frame.loc[0, "received_at"] == pd.Timestamp(1_700_000_000, unit="s", tz="UTC")
    assert frame.loc[0, "starts_at"] == pd.Timestamp("2026-01-02T03:04:05.123456789Z")
    assert pd.isna(frame.loc[0, "ends_at"])  # Go's zero time: still firing
    assert frame.loc[2, "ends_at"] == pd.Timestamp("2026-01-02T03:09:05Z")
    assert frame.loc[0, "labels"] == {"alertname": "ErrorBudgetBurn", "severity": "page", "sli": "latency"}
    assert frame.loc[0, "summary"] == "ErrorBudgetBurn is firing" and pd.isna(frame.loc[1, "summary"])


def test_plan_is_pure_and_minimal(tmp_path):
    cfg = SinkConfig(9000, tmp_path / "s", tmp_path / "o")
    assert alertsink.plan(cfg, cfg) == [] and alertsink.plan(None, None) == []
    [start] = alertsink.plan(None, cfg)
    assert (start.kind, start.before, start.after) == ("alertsink", None, cfg.to_dict())
    assert cfg.webhook_url in start.reason and str(cfg.notifications_path) in start.reason
    moved = SinkConfig(9001, tmp_path / "s", tmp_path / "o2")
    [restart] = alertsink.plan(cfg, moved)
    assert restart.details["diff"] == {
        "listen_port": [9000, 9001],
        "out_dir": [str(tmp_path / "o"), str(tmp_path / "o2")],
    }
    [stop] = alertsink.plan(cfg, None)
    assert (stop.before, stop.after, stop.details["action"]) == (cfg.to_dict(), None, "stop")
    assert Change.from_json(json.loads(json.dumps(restart.to_json()))) == restart
    assert not (tmp_path / "s").exists()


# -- the process --------------------------------------------------------------------------------------------


def test_a_notification_is_one_line_on_disk_and_a_row(sink, config):
    with httpx.Client(base_url=config.url, timeout=10, trust_env=False) as client:
        assert client.get("/health").json() == {"notifications": 0, "out": str(config.notifications_path)}
        answer = client.post("/alerts", json=payload())
        assert answer.status_code == 200, answer.text
        [line] = lines(config.notifications_path)  # on disk before the 200
        assert line["status"] == "firing" and line["alerts"][0]["labels"]["alertname"] == "ErrorBudgetBurn"
        assert client.post("/alerts", json=payload("resolved")).status_code == 200
        assert client.get("/health").json()["notifications"] == 2
    frame = alertsink.notifications(config.out_dir)
    assert list(frame["status"]) == ["firing", "resolved"] and set(frame["alertname"]) == {"ErrorBudgetBurn"}
    log = sink.log_path.read_text()
    assert 'notification 1: "firing", 1 alert(s): ["ErrorBudgetBurn"]' in log
    assert "fast burn" not in log  # the bodies are not logged


def test_bad_oversized_and_misplaced_bodies_are_refused_and_written_nowhere(sink, config):
    with httpx.Client(base_url=config.url, timeout=30, trust_env=False) as client:
        assert client.post("/alerts", json=payload()).status_code == 200
        before = config.notifications_path.read_bytes()
        bad = client.post("/alerts", content=b'{"alerts": [', headers={"Content-Type": "application/json"})
        assert (bad.status_code, bad.json()["error"]) == (400, "the body is not JSON")
        assert client.post("/alerts", content=b"\xff\xfe").status_code == 400  # not UTF-8
        not_payload = client.post("/alerts", json={"status": "firing"})
        assert not_payload.status_code == 400 and "alerts must be a list" in not_payload.text
        big = payload(padding="x" * alertsink.MAX_BODY)
        assert client.post("/alerts", json=big).status_code == 413
        assert client.post("/elsewhere", json=payload()).status_code == 404
        assert client.get("/alerts").status_code == 404
        assert client.get("/health").json()["notifications"] == 1  # still serving, after all that
    assert config.notifications_path.read_bytes() == before


def test_it_is_stopped_by_its_record_from_another_process_and_sigterm_ends_it_cleanly(sink, config):
    proc = sink.proc
    fresh = SinkServer(config.state_dir)
    assert fresh.running and fresh.config == config and fresh.url == config.url
    assert fresh.start(config) == proc  # already running so: left alone
    assert fresh.health()["notifications"] == 0
    code = (
        "import sys; from ragperf.systems.monitoring.alertsink import SinkServer; print(SinkServer(sys.argv[1]).stop())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(config.state_dir)], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr
    assert not procs.is_alive(proc) and procs.port_is_free(config.listen_port)
    assert "alert sink stopped after 0 notification(s)" in sink.log_path.read_text()  # SIGTERM, not SIGKILL
    assert not sink.running and sink.stop() is False
    with pytest.raises(alertsink.SinkError, match="no alert sink runs"):
        sink.health()


def test_applier_starts_and_undo_stops_it_and_removes_only_its_own_files(config):
    server, applier = SinkServer(config.state_dir), SinkApplier()
    [start] = alertsink.plan(None, config)
    config.state_dir.mkdir(parents=True)
    (config.state_dir / "someone-elses.txt").write_text("keep me")
    try:
        applier.apply([start])
        first = server.proc
        assert first is not None and server.config == config
        applier.apply([start])  # idempotent
        assert server.proc == first
        with httpx.Client(timeout=10, trust_env=False) as client:
            assert client.post(config.webhook_url, json=payload()).status_code == 200
        assert server.log_path.exists() and server.record_path.exists()

        applier.undo([start])
        assert not procs.is_alive(first) and not server.running and procs.port_is_free(config.listen_port)
        assert sorted(p.name for p in config.state_dir.iterdir()) == ["someone-elses.txt"]
        assert len(lines(config.notifications_path)) == 1  # the run's evidence stays
        applier.undo([start])  # again: nothing to do

        with pytest.raises(ChangeError, match="makes only 'alertsink' changes"):
            applier.apply([Change("alertmanager", "alertmanager", None, config.to_dict(), "x")])
    finally:
        server.stop(timeout=10)
