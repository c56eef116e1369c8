"""The caching tier of Phase 2 as a system: nginx in front, the cache add-on, Redis; what runs, what is wanted.

The tier, each part on its own loopback port and started and stopped by PID::

    client → nginx (its own cache of POST /ask, per host) → cache add-on (answers shared through Redis,
    single flight, Redis outages bypassed) → the app

:func:`desired` derives the tier from the target and the parameters; :func:`plan` compares it with
what runs (a pure function of both); the change model applies it (``redis``, ``cacheproxy`` and
``nginx`` changes, in that order) and undoes it in reverse. :func:`stop_all` stops a tier kept in a
directory by its process records, which is how the lab stops it without knowing any phase.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from ragperf.core import procs
from ragperf.core.changes import Change
from ragperf.core.params import Params
from ragperf.core.target import Target
from ragperf.systems import cachekeys, cacheproxy, nginx, rediscache

log = logging.getLogger(__name__)

PARTS = ("redis", "proxy", "nginx")


@dataclass(frozen=True)
class Tier:
    """The three parts of the caching tier, as configured."""

    redis: rediscache.RedisConfig
    proxy: cacheproxy.ProxyConfig
    nginx: nginx.CacheConfig

    @property
    def url(self) -> str:
        """The new entrypoint: nginx."""
        return f"http://{self.nginx.listen_host}:{self.nginx.listen_port}"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.proxy.listen_host}:{self.proxy.listen_port}"

    def table(self) -> pd.DataFrame:
        """One row per part: where it listens, what it talks to, its settings, its files."""
        return pd.DataFrame(
            [
                {"part": "nginx", "listens": self.url, "talks to": ", ".join(self.nginx.upstreams),
                 "settings": f"ttl {self.nginx.ttl_s} s, {self.nginx.cache_size_mb} MB on disk, bodies up to "
                             f"{self.nginx.max_body_kb} KiB cached", "files": str(self.nginx.state_dir)},
                {"part": "cache add-on", "listens": self.proxy_url, "talks to": f"{self.proxy.upstream}, Redis",
                 "settings": f"ttl {self.proxy.ttl_s} s, key version {self.proxy.key_version}",
                 "files": str(self.proxy.state_dir)},
                {"part": "Redis", "listens": self.redis.url, "talks to": "",
                 "settings": f"maxmemory {self.redis.maxmemory_mb} MB, {self.redis.policy}, "
                             f"{'RDB snapshots' if self.redis.persist else 'no persistence'}",
                 "files": str(self.redis.state_dir)},
            ]
        )  # fmt: skip


def state_dir(target: Target, params: Params) -> Path:
    """Where the tier keeps its files: ``cache.state_dir``, else the lab's directory, else ~/.local/state."""
    if params.cache.state_dir is not None:
        return Path(params.cache.state_dir).expanduser().absolute()
    if target.kind == "lab" and target.lab_dir is not None:
        return Path(target.lab_dir).absolute() / "cache"
    return Path.home() / ".local" / "state" / "ragperf" / "cache"


@dataclass(frozen=True)
class Running:
    """What of the tier runs now (None for a part that does not)."""

    redis: rediscache.RedisConfig | None
    proxy: cacheproxy.ProxyConfig | None
    nginx: nginx.CacheConfig | None

    def any(self) -> bool:
        return any(part is not None for part in (self.redis, self.proxy, self.nginx))


def running(base: Path) -> Running:
    """The tier's parts running from ``base``, by their process records."""
    return Running(
        rediscache.RedisServer(base / "redis").config,
        cacheproxy.ProxyServer(base / "proxy").config,
        nginx.Nginx(base / "nginx").config,
    )


def _port(wanted: int, now: Any) -> int:
    """``wanted``, or for 0 the running part's port, else a free one."""
    if wanted:
        return wanted
    if now is not None:
        return int(getattr(now, "port", None) or now.listen_port)
    return procs.free_port()


def desired(target: Target, params: Params, now: Running | None = None) -> Tier:
    """The tier the parameters ask for in front of ``target`` (ports of 0: the running ones, else free ones)."""
    base = state_dir(target, params)
    now = now or running(base)
    c = params.cache
    redis = rediscache.RedisConfig(port=_port(c.redis_port, now.redis), state_dir=base / "redis",
                                   maxmemory_mb=c.redis_maxmemory_mb, policy=c.redis_policy)  # fmt: skip
    proxy = cacheproxy.ProxyConfig(
        listen_port=_port(c.proxy_port, now.proxy),
        upstream=target.base_url,
        redis_url=redis.url,
        state_dir=base / "proxy",
        ttl_s=c.ttl_s,
        timeout_s=max(60.0, params.load.timeout_s),
    )
    front = nginx.CacheConfig(
        listen_port=_port(c.listen_port, now.nginx),
        upstreams=(f"{proxy.listen_host}:{proxy.listen_port}",),
        state_dir=base / "nginx",
        ttl_s=c.ttl_s,
        cache_size_mb=c.nginx_cache_mb,
        max_body_kb=c.max_body_kb,
        proxy_timeout_s=max(60.0, params.load.timeout_s),
        # The add-on coalesces concurrent misses and wakes every waiter the moment the answer is there;
        # nginx's own lock would make them wait for its 500 ms poll (measured: hits at 500 ms).
        cache_lock=False,
    )
    return Tier(redis, proxy, front)


def plan(now: Running, tier: Tier) -> list[Change]:
    """The changes from what runs to ``tier``: Redis first, then the add-on, then nginx (undone in reverse)."""
    return [
        *rediscache.plan(now.redis, tier.redis),
        *cacheproxy.plan(now.proxy, tier.proxy),
        *nginx.plan(now.nginx, tier.nginx),
    ]


def stop_all(base: Path) -> list[str]:
    """Stop every part of a tier kept in ``base`` by its recorded PID, front first; the names of those that ran."""
    stopped = []
    if nginx.Nginx(base / "nginx").stop():
        stopped.append("nginx")
    if cacheproxy.ProxyServer(base / "proxy").stop():
        stopped.append("cache add-on")
    redis = rediscache.RedisServer(base / "redis")
    if redis.stop():
        stopped.append("Redis")
    redis.clear_state()
    return stopped


def purge(tier: Tier | Running) -> dict[str, int]:
    """Empty both caches, for when the corpus changed: nginx's by a new key version (a reload), Redis's by
    deleting the add-on's keys (SCAN, never FLUSHALL). A part that does not run is skipped."""
    done: dict[str, int] = {}
    if tier.nginx is not None:
        done["nginx_key_version"] = nginx.Nginx(tier.nginx.state_dir).purge()
    if tier.redis is not None:
        done["redis_keys_deleted"] = cachekeys.purge(tier.redis.url)
    return done


def counters(tier: Tier) -> dict[str, int]:
    """The cache add-on's counters (hits, misses, coalesced, bypassed ...) since it started."""
    response = httpx.get(f"{tier.proxy_url}/__cache/health", timeout=10)
    response.raise_for_status()
    return {k: v for k, v in response.json().items() if isinstance(v, int) and not isinstance(v, bool)}


def delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    """What the add-on counted between two :func:`counters` readings."""
    return {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in after}


def app_requests(delta: Mapping[str, int]) -> int:
    """Requests the add-on sent to the app: its misses, the requests it passed by Redis, and other paths."""
    return int(delta.get("misses", 0) + delta.get("bypassed", 0) + delta.get("passthrough", 0))
