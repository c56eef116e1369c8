"""The benchmarks run end to end at tiny sizes (real processes, nothing mocked)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(120)
def test_cache_hit_overhead_measures_five_approaches(tmp_path: Path) -> None:
    bench = _load("cache_hit_overhead")
    support = bench.find_lua_support()
    if support.missing:
        pytest.skip(f"cache-hit benchmark needs nginx's Lua module and resty.redis: {support.missing}")
    out = tmp_path / "hits.json"

    report = bench.main(["--requests", "30", "--concurrency", "4", "--json", str(out)])

    data = json.loads(out.read_text())
    assert data["approaches"] == report["approaches"]
    names = {"redis_get", "cacheproxy", "nginx_lua", "nginx_proxy_cache", "nginx_cacheproxy"}
    assert set(data["approaches"]) == names
    for name, result in data["approaches"].items():
        for metric in ("p50_ms", "p95_ms", "mean_ms", "hits_per_s", "loaded_p50_ms"):
            assert result[metric] > 0, (name, metric, result)
        assert result["p50_ms"] <= result["p95_ms"], (name, result)
        assert result["latency_requests"] == 30 and result["concurrency"] == 4
        assert result["upstream_measured"] == 0, (name, result)
    # The app saw the warm-up misses only: the proxy's priming, the Lua and the proxy_cache warm-up.
    upstream = data["upstream_requests"]
    assert upstream["beyond_warmup"] == 0
    assert upstream["total"] == upstream["warmup"] == 3
    assert data["approaches"]["nginx_lua"]["first_status"] == "MISS"
    assert data["approaches"]["nginx_proxy_cache"]["first_status"] == "MISS"
    assert data["approaches"]["nginx_cacheproxy"]["first_status"] == "HIT"
    assert 2000 <= data["answer_bytes"] <= 4096
    assert "lower bound" in data["verdict"] and "Unicode" in data["verdict"]
