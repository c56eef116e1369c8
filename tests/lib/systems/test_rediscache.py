"""Our own Redis as a cache: the configuration, start and stop by PID, and the applier (real redis-server)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import redis

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError
from ragperf.systems import rediscache
from ragperf.systems.rediscache import POLICIES, RedisApplier, RedisConfig, RedisServer, plan, render

pytestmark = pytest.mark.skipif(
    not Path(rediscache.redis_server_binary()).exists(), reason="redis-server is not installed"
)


@pytest.fixture
def base():
    """A throwaway directory under /var/tmp (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="ragperf-test-redis-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _cfg(base: Path, **kw) -> RedisConfig:
    return RedisConfig(port=kw.pop("port", None) or procs.free_port(), state_dir=base / "redis", **kw)


def _stop_all(*servers: RedisServer) -> None:
    for server in servers:
        server.stop(timeout=5)


def test_render_is_a_cache_without_persistence():
    cfg = RedisConfig(port=6390, state_dir=Path("/var/tmp/x y"), maxmemory_mb=64, policy="allkeys-lfu")
    lines = render(cfg).splitlines()
    for line in (
        "port 6390",
        "bind 127.0.0.1",
        "protected-mode yes",
        "daemonize no",
        "maxmemory 64mb",
        "maxmemory-policy allkeys-lfu",
        'save ""',
        "appendonly no",
        'dir "/var/tmp/x y"',
        'pidfile "/var/tmp/x y/redis.pid"',
    ):
        assert line in lines
    assert not any(line.startswith("save 3") for line in lines)
    assert not any(line.startswith("bind") and line != "bind 127.0.0.1" for line in lines)


def test_render_defaults_and_persistence():
    cfg = RedisConfig(port=6390, state_dir=Path("/var/tmp/r"), persist=True)
    text = render(cfg)
    assert "maxmemory 256mb\n" in text and "maxmemory-policy allkeys-lru\n" in text
    assert "save 300 10\n" in text and "dbfilename dump.rdb\n" in text
    assert 'save ""' not in text
    assert render(cfg) == text  # pure


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"policy": "noeviction"}, ["policy", *POLICIES]),
        ({"maxmemory_mb": 0}, ["maxmemory_mb", "greater than 0"]),
        ({"maxmemory_mb": -5}, ["maxmemory_mb"]),
        ({"port": 0}, ["port", "65535"]),
        ({"state_dir": Path("relative/dir")}, ["state_dir", "absolute"]),
        ({"persist": "yes"}, ["persist"]),
    ],
)
def test_bad_config_names_the_field_and_what_is_allowed(changes, words):
    kwargs = {"port": 6390, "state_dir": Path("/var/tmp/r"), **changes}
    with pytest.raises(ValueError) as err:
        RedisConfig(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_config_round_trips_through_a_dict():
    cfg = RedisConfig(port=6390, state_dir=Path("/var/tmp/r"), maxmemory_mb=32, policy="volatile-ttl", persist=True)
    assert RedisConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["state_dir"] == "/var/tmp/r"
    assert cfg.url == "redis://127.0.0.1:6390/0"
    with pytest.raises(ValueError, match="unknown"):
        RedisConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_plan_is_pure_and_minimal():
    desired = RedisConfig(port=6390, state_dir=Path("/var/tmp/r"))
    [change] = plan(None, desired)
    assert (change.kind, change.name, change.before, change.after) == ("redis", "cache", None, desired.to_dict())
    assert plan(desired, desired) == []
    bigger = RedisConfig(port=6390, state_dir=Path("/var/tmp/r"), maxmemory_mb=512)
    [change] = plan(desired, bigger)
    assert change.before == desired.to_dict() and change.after == bigger.to_dict()


def test_start_info_and_stop_by_recorded_pid(base):
    cfg = _cfg(base, maxmemory_mb=64, policy="allkeys-lfu")
    server = RedisServer(cfg.state_dir)
    try:
        proc = server.start(cfg)
        assert server.running and procs.is_alive(proc)
        assert server.url == f"redis://127.0.0.1:{cfg.port}/0"
        assert (cfg.state_dir / "redis.conf").read_text() == render(cfg)
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()
            client.set("k", "v")
            assert client.config_get("bind")["bind"] == "127.0.0.1"
            assert client.config_get("save")["save"] == ""
        info = server.info()
        assert info["maxmemory"] == 64 * 1024 * 1024
        assert info["maxmemory_policy"] == "allkeys-lfu"
        assert info["keys"] == 1
        assert {"used_memory", "keyspace_hits", "keyspace_misses", "evicted_keys"} <= set(info)
        assert server.start(cfg).pid == proc.pid  # same configuration: left running

        # Another process stops it from the record in the state directory alone.
        code = f"from ragperf.systems.rediscache import RedisServer; print(RedisServer({str(cfg.state_dir)!r}).stop())"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
        assert out.stdout.strip() == "True"
        assert not procs.is_alive(proc) and not server.running
        assert server.stop() is False
    finally:
        _stop_all(server)


def test_a_taken_port_is_reported(base):
    first = _cfg(base)
    server = RedisServer(first.state_dir)
    other = RedisServer(base / "other")
    try:
        server.start(first)
        with pytest.raises(procs.ProcessError, match="taken"):
            other.start(RedisConfig(port=first.port, state_dir=base / "other"))
        assert not other.running
    finally:
        _stop_all(server, other)


def test_applier_apply_is_idempotent_and_undo_leaves_nothing(base):
    cfg = _cfg(base, maxmemory_mb=16)
    [change] = plan(None, cfg)
    applier = RedisApplier()
    server = RedisServer(cfg.state_dir)
    try:
        applier.apply([change])
        proc = server.proc
        assert proc is not None and server.running
        applier.apply([change])  # already running with this configuration
        assert server.proc == proc and procs.is_alive(proc)

        applier.undo([change])
        assert not procs.is_alive(proc)
        assert not cfg.state_dir.exists() or not any(cfg.state_dir.iterdir())
        assert procs.port_is_free(cfg.port)
        applier.undo([change])  # idempotent
    finally:
        _stop_all(server)


def test_applier_changes_settings_and_undo_restores_them(base):
    old = _cfg(base, maxmemory_mb=16)
    new = RedisConfig(port=old.port, state_dir=old.state_dir, maxmemory_mb=32, policy="volatile-lru")
    server = RedisServer(old.state_dir)
    applier = RedisApplier()
    try:
        server.start(old)
        [change] = plan(old, new)
        applier.apply([change])
        assert server.info()["maxmemory"] == 32 * 1024 * 1024
        assert server.info()["maxmemory_policy"] == "volatile-lru"
        applier.undo([change])
        assert server.config == old and server.info()["maxmemory"] == 16 * 1024 * 1024
    finally:
        _stop_all(server)


def test_applier_refuses_other_kinds():
    with pytest.raises(ChangeError, match="redis"):
        RedisApplier().apply([Change(kind="nginx", name="x", before=None, after=None, reason="")])
