"""Our own Redis, configured as a cache for the cache add-on (Phase 2), started and stopped by ragperf.

The machine's Redis service and ``/etc/redis`` are never touched: :class:`RedisServer` runs a private
``redis-server`` whose every file lives in one state directory: ``redis.conf`` (written by
:func:`render`), ``redis.json`` (the process record, so another Python process can stop it by its PID),
``redis.log`` (the server's output), ``redis.pid``, and ``dump.rdb`` when snapshots are on.

The configuration makes it a cache, not a database:

* ``bind 127.0.0.1`` and ``protected-mode yes``: reachable from this machine only.
* ``maxmemory`` with an eviction policy (``allkeys-lru`` by default): when full, Redis drops the least
  recently used answers instead of refusing writes. The ``volatile-*`` policies evict only keys with a
  TTL; the cache add-on sets a TTL on every answer, so they work too.
* No persistence by default (``save ""``, ``appendonly no``): a lost cache costs only misses, and
  snapshots fork the server, which doubles its memory for a moment. ``persist=True`` writes an RDB
  snapshot every 300 s when at least 10 keys changed, so a restart starts warm.
* ``stop-writes-on-bgsave-error no``: a failed snapshot must never stop the cache from taking answers.

:class:`RedisApplier` makes and undoes ``redis`` changes of the change model; :func:`plan` plans them.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from ragperf.core import procs
from ragperf.core.changes import Change, ChangeError, Config, own

log = logging.getLogger(__name__)

KIND = "redis"
NAME = "cache"
POLICIES = ("allkeys-lru", "allkeys-lfu", "volatile-lru", "volatile-ttl")
HOST = "127.0.0.1"
CONF = "redis.conf"
RECORD = "redis.json"
LOG = "redis.log"
PIDFILE = "redis.pid"
DUMP = "dump.rdb"
# What Redis and this module may create in a state directory; undo removes these and nothing else.
OWN_FILES = (CONF, RECORD, LOG, PIDFILE, DUMP)
OWN_GLOBS = ("temp-*.rdb", "appendonlydir")


def redis_server_binary() -> str:
    """The redis-server to run: the one on PATH, else Debian's ``/usr/bin/redis-server``."""
    return shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass(frozen=True)
class RedisConfig(Config):
    """How our Redis runs: its port, its state directory, its memory limit and eviction policy.

    Raises ValueError (naming the field and what is allowed) when a value is not valid.
    """

    port: int
    state_dir: Path
    maxmemory_mb: int = 256
    policy: str = "allkeys-lru"
    persist: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_dir", Path(self.state_dir))
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"port must be an integer from 1 to 65535, not {self.port!r}")
        if not self.state_dir.is_absolute():
            raise ValueError(f"state_dir must be an absolute path, not {str(self.state_dir)!r}")
        if any(ch in str(self.state_dir) for ch in "\n\r\0"):
            raise ValueError("state_dir must not contain line breaks or NUL characters")
        if isinstance(self.maxmemory_mb, bool) or not isinstance(self.maxmemory_mb, int) or self.maxmemory_mb <= 0:
            raise ValueError(f"maxmemory_mb must be a whole number of MB greater than 0, not {self.maxmemory_mb!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}; not {self.policy!r}")
        if not isinstance(self.persist, bool):
            raise ValueError(f"persist must be true or false, not {self.persist!r}")

    @property
    def url(self) -> str:
        """The URL clients use: database 0 on the loopback address."""
        return f"redis://{HOST}:{self.port}/0"


def _quote(value: str) -> str:
    """A value for redis.conf in double quotes (Redis unescapes backslashes and quotes inside them)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(cfg: RedisConfig) -> str:
    """The redis.conf text for ``cfg`` (pure: reads and writes nothing)."""
    state = cfg.state_dir
    lines = [
        "# Written by ragperf (ragperf.systems.rediscache): a private Redis used as a cache. Do not edit.",
        f"port {cfg.port}",
        f"bind {HOST}",
        "protected-mode yes",
        "daemonize no",
        "supervised no",
        f"dir {_quote(str(state))}",
        f"pidfile {_quote(str(state / PIDFILE))}",
        "# The log goes to standard output, which ragperf appends to redis.log in the state directory.",
        'logfile ""',
        "loglevel notice",
        "databases 1",
        f"maxmemory {cfg.maxmemory_mb}mb",
        f"maxmemory-policy {cfg.policy}",
        "stop-writes-on-bgsave-error no",
        "appendonly no",
    ]
    if cfg.persist:
        lines += ["save 300 10", f"dbfilename {DUMP}"]
    else:
        lines += ['save ""']
    return "\n".join(lines) + "\n"


class RedisError(procs.ProcessError, ChangeError):
    """Our Redis could not be started, asked or stopped."""


class RedisServer(procs.Server):
    """One private redis-server whose files all live in ``state_dir``; stopped by its recorded PID.

    A start with the configuration it already runs with does nothing; another configuration restarts
    it (losing its keys unless ``persist``).
    """

    NAME = "redis"
    WHAT = "Redis"
    RECORD = RECORD
    LOG = LOG
    CONFIG = RedisConfig
    ERROR = RedisError
    PORT_FIELD = "port"

    @property
    def conf_path(self) -> Path:
        return self.state_dir / CONF

    def files(self, cfg: RedisConfig) -> dict[str, str | None]:
        # Redis loads a snapshot left in its directory whatever `save` says: a cache without
        # persistence must start empty.
        return {CONF: render(cfg)} | ({} if cfg.persist else {DUMP: None})

    def argv(self, cfg: RedisConfig) -> list[str]:
        return [redis_server_binary(), str(self.conf_path)]

    def address(self, cfg: RedisConfig) -> tuple[str, int]:
        return HOST, cfg.port

    def awaited(self, cfg: RedisConfig) -> str:
        return f"answer PING on port {cfg.port}"

    def ready(self, cfg: RedisConfig) -> str | None:
        try:
            with redis.Redis(host=HOST, port=cfg.port, socket_timeout=0.5, socket_connect_timeout=0.5) as client:
                return None if client.ping() else "no PONG"
        except redis.RedisError as exc:
            return str(exc)

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """A synchronous client of the recorded server."""
        return redis.Redis.from_url(self.url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def info(self) -> dict[str, Any]:
        """A few INFO fields: memory, the limit and policy, keyspace hits and misses, evictions, keys."""
        with self.client() as client:
            raw = client.info()
            keys = client.dbsize()
        fields = ("used_memory", "maxmemory", "maxmemory_policy", "keyspace_hits", "keyspace_misses", "evicted_keys")
        result: dict[str, Any] = {name: raw.get(name) for name in fields}
        result["keys"] = keys
        return result

    def clear_state(self) -> None:
        """Remove the files Redis and ragperf made in the state directory (never anything else)."""
        for name in OWN_FILES:
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / name).unlink()
        for pattern in OWN_GLOBS:
            for path in self.state_dir.glob(pattern):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError, OSError):
            self.state_dir.rmdir()  # only if now empty


def plan(current: RedisConfig | None, desired: RedisConfig) -> list[Change]:
    """The change that takes Redis from ``current`` (None: not running) to ``desired``; none if equal."""
    if current == desired:
        return []
    if current is None:
        reason = (
            f"start a private Redis on port {desired.port} as the shared answer cache "
            f"({desired.maxmemory_mb} MB, {desired.policy}, {'RDB snapshots' if desired.persist else 'no persistence'})"
        )
    else:
        reason = "change the cache's Redis settings (a restart: the cache starts empty unless persisted)"
    return [Change.of_config(KIND, NAME, current, desired, reason, {"url": desired.url})]


class RedisApplier:
    """Makes ``redis`` changes: starts our Redis with ``after``; undo restores ``before`` (None: stopped)."""

    kind = KIND

    def apply(self, changes: Sequence[Change]) -> None:
        """Start (or restart) Redis with each change's ``after``; nothing happens if it already runs so."""
        for change in own(self, changes):
            if change.after is None:
                self._remove(change.before)
                continue
            cfg = RedisConfig.from_dict(change.after)
            if change.before is not None:
                old = RedisConfig.from_dict(change.before)
                if old.state_dir != cfg.state_dir:
                    RedisServer(old.state_dir).stop()
            RedisServer(cfg.state_dir).start(cfg)

    def undo(self, changes: Sequence[Change]) -> None:
        """Bring back each change's ``before``: stop Redis and clear its files when it was not running."""
        for change in own(self, changes):
            if change.before is None:
                self._remove(change.after)
                continue
            old = RedisConfig.from_dict(change.before)
            if change.after is not None:
                new = RedisConfig.from_dict(change.after)
                if new.state_dir != old.state_dir:
                    self._remove(change.after)
            RedisServer(old.state_dir).start(old)

    @staticmethod
    def _remove(config: Mapping[str, Any] | None) -> None:
        if config is None:
            return
        server = RedisServer(Path(config["state_dir"]))
        server.stop()
        server.clear_state()
