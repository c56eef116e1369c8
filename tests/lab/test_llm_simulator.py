"""Tests of the ragperf LLM simulator (in-process aiohttp test server, and one real subprocess)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import math
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from ragperf_lab.embedding import embed_texts
from ragperf_lab.llm_simulator import (
    PROCESSING_HEADER,
    SIMULATOR_NAME,
    START_HEADER,
    LatencyModel,
    SimulatorConfig,
    _Background,  # the scheduler of the answers' CPU work
    compose_answer,
    create_app,
    lognormal_params,
)

CONTEXT = """Ngữ cảnh trích từ Luật Đấu thầu số 22/2023/QH15:
[1] Điều 23. Chỉ định thầu
1. Chỉ định thầu được áp dụng đối với gói thầu cần thực hiện để khắc phục ngay hậu quả thiên tai, hỏa hoạn.
2. Gói thầu cung cấp dịch vụ tư vấn, phi tư vấn cần triển khai ngay để phòng, chống dịch bệnh.
[2] Điều 24. Mua sắm trực tiếp
1. Mua sắm trực tiếp được áp dụng đối với gói thầu mua sắm hàng hóa tương tự thuộc cùng một dự án.
2. Thời gian thực hiện mua sắm trực tiếp không quá 12 tháng kể từ ngày ký hợp đồng trước đó."""
QUESTION = "Khi nào được áp dụng mua sắm trực tiếp?"


def chat_body(question: str = QUESTION, context: str = CONTEXT, **extra: Any) -> dict[str, Any]:
    messages = [
        {"role": "system", "content": "Bạn là trợ lý pháp lý. Trả lời dựa trên ngữ cảnh.\n" + context},
        {"role": "user", "content": question},
    ]
    return {"model": "ragperf-sim-chat", "messages": messages, **extra}


@contextlib.asynccontextmanager
async def sim_client(**overrides: Any) -> AsyncIterator[TestClient]:
    settings: dict[str, Any] = {"latency": "constant", "latency_median": 0.0, "embed_executor": "thread"}
    settings.update(overrides)
    async with TestClient(TestServer(create_app(SimulatorConfig(**settings)))) as client:
        yield client


async def embed(client: TestClient, inputs: Any, **extra: Any) -> dict[str, Any]:
    response = await client.post("/v1/embeddings", json={"model": "m", "input": inputs, **extra})
    assert response.status == 200, await response.text()
    return await response.json()


def vectors(payload: dict[str, Any]) -> np.ndarray:
    rows = []
    for item in payload["data"]:
        value = item["embedding"]
        if isinstance(value, str):
            rows.append(np.frombuffer(base64.b64decode(value), dtype="<f4"))
        else:
            rows.append(np.asarray(value, dtype=np.float32))
    return np.vstack(rows)


# ------------------------------------------------------------------------------------------
# Embeddings

TEXTS = [
    "Hồ sơ mời thầu gói thầu xây lắp phải được thẩm định trước khi phê duyệt.",
    "Bảo đảm dự thầu có giá trị từ 1% đến 3% giá gói thầu.",
    "Nhà thầu nước ngoài phải liên danh với nhà thầu trong nước.",
]


def test_embeddings_float_and_base64_decode_to_the_same_vector() -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with sim_client() as client:
            floats = await embed(client, TEXTS)
            b64 = await embed(client, TEXTS, encoding_format="base64")
            return floats, b64

    floats, b64 = asyncio.run(scenario())
    assert all(isinstance(item["embedding"], list) for item in floats["data"])
    assert all(isinstance(item["embedding"], str) for item in b64["data"])
    np.testing.assert_array_equal(vectors(floats), vectors(b64))
    np.testing.assert_array_equal(vectors(floats), embed_texts(TEXTS, 768))


def test_embeddings_response_shape_order_norm_and_determinism() -> None:
    async def scenario() -> tuple[dict[str, Any], dict[str, Any], list[np.ndarray]]:
        async with sim_client() as client:
            first = await embed(client, TEXTS)
            second = await embed(client, TEXTS)
            singles = [vectors(await embed(client, text))[0] for text in TEXTS]
            return first, second, singles

    first, second, singles = asyncio.run(scenario())
    assert first["object"] == "list" and first["model"] == "m"
    assert [item["index"] for item in first["data"]] == [0, 1, 2]
    assert {item["object"] for item in first["data"]} == {"embedding"}
    assert first["usage"]["prompt_tokens"] == first["usage"]["total_tokens"] > 20
    batch = vectors(first)
    assert batch.shape == (3, 768)
    np.testing.assert_array_equal(batch, vectors(second))
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    for row, single in zip(batch, singles, strict=True):  # list order is kept
        np.testing.assert_array_equal(row, single)


def test_embeddings_dimensions_default_and_override() -> None:
    async def scenario() -> tuple[np.ndarray, np.ndarray]:
        async with sim_client(dim=128) as client:
            default = vectors(await embed(client, TEXTS[0]))
            override = vectors(await embed(client, TEXTS[0], dimensions=64, encoding_format="base64"))
            return default, override

    default, override = asyncio.run(scenario())
    assert default.shape == (1, 128)
    assert override.shape == (1, 64)
    assert math.isclose(float(np.linalg.norm(override)), 1.0, abs_tol=1e-5)


def test_similar_texts_are_closer_than_unrelated_ones() -> None:
    texts = [
        "Hồ sơ mời thầu của gói thầu xây lắp",
        "Thẩm định hồ sơ mời thầu gói thầu xây lắp công trình",
        "Thời tiết hôm nay nắng ấm, trời trong xanh",
    ]

    async def scenario() -> np.ndarray:
        async with sim_client() as client:
            return vectors(await embed(client, texts))

    a, b, c = asyncio.run(scenario())
    assert float(a @ b) > float(a @ c) + 0.2


@pytest.mark.parametrize("executor", ["thread", "process"])
def test_big_batches_run_in_the_executor_with_the_same_result(executor: str) -> None:
    batch = [f"{text} (bản {i})" for i, text in enumerate(TEXTS * 12)]

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with sim_client(embed_executor=executor, embed_workers=1, embed_inline_chars=0) as client:
            payload = await embed(client, batch, encoding_format="base64")
            stats = await (await client.get("/stats")).json()
            return payload, stats

    payload, stats = asyncio.run(scenario())
    np.testing.assert_array_equal(vectors(payload), embed_texts(batch, 768))
    assert stats["requests"]["/v1/embeddings"] == 1


# ------------------------------------------------------------------------------------------
# Chat completions


def test_chat_completion_is_shaped_like_openai() -> None:
    async def scenario() -> tuple[int, dict[str, Any], str]:
        async with sim_client() as client:
            response = await client.post("/v1/chat/completions", json=chat_body(temperature=0.2, max_tokens=500))
            return response.status, await response.json(), response.headers.get("Server", "")

    status, payload, server = asyncio.run(scenario())
    assert status == 200
    assert server.startswith("ragperf-llm-simulator")  # and the timing headers, checked below
    assert payload["id"].startswith("chatcmpl-")
    assert payload["object"] == "chat.completion"
    assert isinstance(payload["created"], int) and abs(payload["created"] - time.time()) < 60
    assert payload["model"] == "ragperf-sim-chat"
    (choice,) = payload["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    usage = payload["usage"]
    assert usage["prompt_tokens"] > 50 and usage["completion_tokens"] > 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_answer_is_built_from_the_context_and_deterministic() -> None:
    async def scenario() -> list[str]:
        async with sim_client() as client:
            answers = []
            for _ in range(2):
                response = await client.post("/v1/chat/completions", json=chat_body())
                answers.append((await response.json())["choices"][0]["message"]["content"])
            return answers

    first, second = asyncio.run(scenario())
    assert first == second
    assert first.startswith("Căn cứ Điều 24 của văn bản số 22/2023/QH15")
    assert "Mua sắm trực tiếp được áp dụng đối với gói thầu mua sắm hàng hóa tương tự" in first
    assert "thiên tai" not in first  # an unrelated line of the context is not quoted
    assert SIMULATOR_NAME in first


def test_compose_answer_follows_the_question() -> None:
    answer = compose_answer(chat_body("Chỉ định thầu áp dụng khi khắc phục hậu quả thiên tai?")["messages"])
    assert answer.startswith("Căn cứ Điều 23")
    assert "khắc phục ngay hậu quả thiên tai, hỏa hoạn" in answer
    # The context may also come in the user message, before a "Câu hỏi:" marker.
    inline = [{"role": "user", "content": f"{CONTEXT}\n\nCâu hỏi: {QUESTION}"}]
    assert compose_answer(inline) == compose_answer(chat_body()["messages"])
    unrelated = compose_answer([{"role": "user", "content": "Giá vàng hôm nay thế nào?"}])
    assert unrelated.startswith("Không tìm thấy thông tin phù hợp")


def test_compose_answer_ranks_lines_by_shared_syllables() -> None:
    scattered = "Bên mời thầu yêu cầu nhà đầu tư nộp tiền đảm bảo đúng hạn."  # 5 shared, no bigram
    phrase = "Giá trị bảo đảm được xác định trong hồ sơ."  # 2 shared, 1 shared bigram
    messages = [
        {"role": "system", "content": f"Điều 1. Thử\n{phrase}\n{scattered}"},
        {"role": "user", "content": "Nhà thầu nộp bảo đảm khi nào?"},
    ]
    answer = compose_answer(messages)
    assert answer.startswith(f"Căn cứ Điều 1: {scattered} {phrase}")


def test_max_tokens_truncates_with_finish_reason_length() -> None:
    async def scenario() -> dict[str, Any]:
        async with sim_client() as client:
            response = await client.post("/v1/chat/completions", json=chat_body(max_tokens=5))
            return await response.json()

    payload = asyncio.run(scenario())
    assert payload["choices"][0]["finish_reason"] == "length"
    assert payload["usage"]["completion_tokens"] == 5


# ------------------------------------------------------------------------------------------
# Latency and concurrency


def test_constant_latency_is_honoured_and_reported() -> None:
    async def scenario() -> tuple[int, float, float, float, float]:
        async with sim_client(latency_median=0.2) as client:
            started = time.monotonic()
            response = await client.post("/v1/chat/completions", json=chat_body())
            await response.read()
            elapsed = time.monotonic() - started
            server_start = float(response.headers[START_HEADER])
            processing_ms = float(response.headers[PROCESSING_HEADER])
            return response.status, elapsed, started, server_start, processing_ms

    status, elapsed, started, server_start, processing_ms = asyncio.run(scenario())
    assert status == 200
    assert 0.2 <= elapsed < 1.0
    assert 200 <= processing_ms <= elapsed * 1000 + 1
    assert started <= server_start <= started + elapsed  # the same monotonic clock


def test_background_jobs_run_earliest_deadline_first() -> None:
    async def scenario() -> tuple[list[str], list[Any]]:
        background = _Background()
        ran: list[str] = []
        now = asyncio.get_running_loop().time()

        def job(name: str) -> str:
            ran.append(name)
            if name == "boom":
                raise RuntimeError("boom")
            return name

        futures = [
            background.submit(functools.partial(job, "late"), now + 0.2),
            background.submit(functools.partial(job, "boom"), now + 0.1),
            background.submit(functools.partial(job, "skipped"), now + 0.0),
            background.submit(functools.partial(job, "early"), now + 0.05),
        ]
        futures[2].cancel()  # the client went away
        results = await asyncio.gather(*futures, return_exceptions=True)
        return ran, results

    ran, results = asyncio.run(scenario())
    assert ran == ["early", "boom", "late"]
    assert results[0] == "late" and results[3] == "early"
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[2], asyncio.CancelledError)


def test_lognormal_sampling_has_the_configured_median_and_p95() -> None:
    mu, sigma = lognormal_params(0.6, 1.0)
    assert math.isclose(mu, math.log(0.6))
    assert math.isclose(sigma, math.log(1.0 / 0.6) / 1.645, rel_tol=1e-3)
    model = LatencyModel("lognormal", 0.6, 1.0, seed=7)
    samples = sorted(model.sample() for _ in range(40_000))
    assert statistics.median(samples) == pytest.approx(0.6, rel=0.02)
    assert samples[int(0.95 * len(samples))] == pytest.approx(1.0, rel=0.03)
    assert min(samples) > 0
    # Seeded: the same seed gives the same draws, another seed other draws.
    draws = [LatencyModel("lognormal", 0.6, 1.0, seed=3).sample() for _ in range(2)]
    assert draws[0] == draws[1]
    assert LatencyModel("lognormal", 0.6, 1.0, seed=4).sample() != draws[0]


def test_uniform_and_constant_sampling() -> None:
    uniform = LatencyModel("uniform", 0.6, 1.0, seed=1)
    samples = sorted(uniform.sample() for _ in range(40_000))
    assert statistics.median(samples) == pytest.approx(0.6, rel=0.02)
    assert samples[int(0.95 * len(samples))] == pytest.approx(1.0, rel=0.02)
    assert samples[0] >= 0
    constant = LatencyModel("constant", 0.25, 0.25)
    assert {constant.sample() for _ in range(10)} == {0.25}


@pytest.mark.parametrize(
    "settings",
    [
        {"dim": 0},
        {"dim": 5000},
        {"latency": "gamma"},
        {"latency": "lognormal", "latency_median": 1.0, "latency_p95": 0.5},
        {"latency": "uniform", "latency_median": 0.1, "latency_p95": 1.0},
        {"concurrency_limit": -1},
        {"embed_executor": "gpu"},
    ],
)
def test_invalid_config_is_rejected(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SimulatorConfig(**settings)


def test_api_key_is_not_in_the_config_repr() -> None:
    assert "hunter2" not in repr(SimulatorConfig(api_key="hunter2"))


def test_requests_over_the_concurrency_limit_get_429() -> None:
    async def scenario() -> tuple[list[tuple[int, dict[str, Any], str | None]], int, dict[str, Any]]:
        async with sim_client(latency_median=0.5, concurrency_limit=2) as client:

            async def one() -> tuple[int, dict[str, Any], str | None]:
                response = await client.post("/v1/chat/completions", json=chat_body())
                return response.status, await response.json(), response.headers.get("Retry-After")

            results = await asyncio.gather(*(one() for _ in range(6)))
            after = await client.post("/v1/chat/completions", json=chat_body())
            stats = await (await client.get("/stats")).json()
            return results, after.status, stats

    results, after, stats = asyncio.run(scenario())
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200, 429, 429, 429, 429]
    for status, body, retry_after in results:
        if status == 429:
            assert body["error"]["type"] == "rate_limit_error"
            assert body["error"]["code"] == "rate_limit_exceeded"
            assert "2 concurrent" in body["error"]["message"]
            assert retry_after is not None and int(retry_after) >= 1
        else:
            assert body["choices"][0]["message"]["content"]
    assert after == 200  # the slots are free again once the requests are done
    assert stats["rate_limited"] == 4
    assert stats["max_chat_in_flight"] == 2
    assert stats["chat_in_flight"] == 0
    assert stats["requests"]["/v1/chat/completions"] == 7
    assert stats["responses"]["429"] == 4
    assert stats["latency_sum_s"]["/v1/chat/completions"] >= 1.5


def test_unlimited_concurrency_serves_everyone_in_parallel() -> None:
    async def scenario() -> tuple[list[int], float]:
        async with sim_client(latency_median=0.3, concurrency_limit=0) as client:
            started = time.perf_counter()
            responses = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=chat_body()) for _ in range(40))
            )
            return [r.status for r in responses], time.perf_counter() - started

    statuses, elapsed = asyncio.run(scenario())
    assert statuses == [200] * 40
    assert elapsed < 1.5  # parallel, not 40 * 0.3 s


# ------------------------------------------------------------------------------------------
# Authentication, errors, service endpoints


def test_api_key_is_required_when_set() -> None:
    async def scenario() -> dict[str, Any]:
        async with sim_client(api_key="s3cret-key") as client:
            out: dict[str, Any] = {}
            missing = await client.post("/v1/chat/completions", json=chat_body())
            out["missing"] = (missing.status, await missing.json())
            wrong = await client.post(
                "/v1/embeddings", json={"model": "m", "input": "x"}, headers={"Authorization": "Bearer nope"}
            )
            out["wrong"] = wrong.status
            good = await client.post(
                "/v1/chat/completions", json=chat_body(), headers={"Authorization": "Bearer s3cret-key"}
            )
            out["good"] = good.status
            out["models"] = (await client.get("/v1/models")).status
            out["health"] = (await client.get("/health")).status
            return out

    out = asyncio.run(scenario())
    status, body = out["missing"]
    assert status == 401
    assert body["error"]["code"] == "invalid_api_key"
    assert "s3cret-key" not in json.dumps(body)
    assert out["wrong"] == 401
    assert out["good"] == 200
    assert out["models"] == 401
    assert out["health"] == 200  # the readiness probe stays open


EMBEDDING_ERRORS = [
    ({"model": "m"}, "'input'"),
    ({"model": "m", "input": 123}, "'input'"),
    ({"model": "m", "input": []}, "'input'"),
    ({"model": "m", "input": ["ok", 7]}, "'input[1]'"),
    ({"model": "m", "input": ["ok", ""]}, "'input[1]'"),
    ({"input": "x"}, "'model'"),
    ({"model": "m", "input": "x", "encoding_format": "hex"}, "float, base64"),
    ({"model": "m", "input": "x", "dimensions": 0}, "'dimensions'"),
    ({"model": "m", "input": "x", "dimensions": 4097}, "'dimensions'"),
    ({"model": "m", "input": "x", "dimensions": "12"}, "'dimensions'"),
    ({"model": "m", "input": "x", "dimensions": True}, "'dimensions'"),
]
CHAT_ERRORS = [
    ({"model": "m"}, "'messages'"),
    ({"model": "m", "messages": []}, "'messages'"),
    ({"model": "m", "messages": "hello"}, "'messages'"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}, 3]}, "'messages[1]'"),
    ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "'messages[0].role'"),
    ({"model": "m", "messages": [{"role": ["user"], "content": "x"}]}, "'messages[0].role'"),
    ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "'messages[0].content'"),
    ({"model": "m", "messages": [{"role": "system", "content": "x"}]}, "user message"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "'max_tokens'"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, "'temperature'"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}, "'stream'"),
]


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [("/v1/embeddings", body, needle) for body, needle in EMBEDDING_ERRORS]
    + [("/v1/chat/completions", body, needle) for body, needle in CHAT_ERRORS],
)
def test_bad_requests_get_400_naming_the_problem(path: str, body: dict[str, Any], needle: str) -> None:
    async def scenario() -> tuple[int, dict[str, Any]]:
        async with sim_client() as client:
            response = await client.post(path, json=body)
            return response.status, await response.json()

    status, payload = asyncio.run(scenario())
    assert status == 400
    assert payload["error"]["type"] == "invalid_request_error"
    assert needle in payload["error"]["message"]


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_unparsable_bodies_get_400(raw: bytes) -> None:
    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        async with sim_client() as client:
            out = []
            for path in ("/v1/embeddings", "/v1/chat/completions"):
                response = await client.post(path, data=raw, headers={"Content-Type": "application/json"})
                out.append((response.status, await response.json()))
            return out

    for status, payload in asyncio.run(scenario()):
        assert status == 400
        assert "JSON" in payload["error"]["message"]


def test_health_models_stats_and_unknown_paths() -> None:
    async def scenario() -> dict[str, Any]:
        async with sim_client(dim=256) as client:
            out = {}
            for path in ("/health", "/v1/models", "/nope"):
                response = await client.get(path)
                out[path] = (response.status, await response.json())
            out["stats"] = await (await client.get("/stats")).json()
            return out

    out = asyncio.run(scenario())
    status, health = out["/health"]
    assert status == 200
    assert health["status"] == "ok" and health["simulator"] is True and health["embedding_dim"] == 256
    status, models = out["/v1/models"]
    assert status == 200 and models["object"] == "list"
    assert all("ragperf-sim" in model["id"] for model in models["data"])
    status, missing = out["/nope"]
    assert status == 404 and missing["error"]["type"] == "not_found_error"
    stats = out["stats"]
    assert stats["requests"]["/health"] == 1 and stats["requests"]["other"] == 1
    assert stats["responses"]["404"] == 1
    assert stats["in_flight"] == 1  # the /stats request itself
    assert {"rate_limited", "max_in_flight", "latency_sum_s", "chat_in_flight"} <= stats.keys()


# ------------------------------------------------------------------------------------------
# The command line, as a real process


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return ""


def test_command_line_serves_checks_the_key_and_stops_on_sigterm() -> None:
    key = "cli-test-key-0123456789"
    env = {**os.environ, "RAGPERF_LLM_API_KEY": key, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "ragperf_lab.llm_simulator", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--latency", "constant", "--latency-median", "0.05", "--embed-workers", "1"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _first_line(proc, timeout=20)
        assert line.startswith("ragperf LLM simulator listening on http://127.0.0.1:"), line
        base = line.split()[-1]
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/health").json()["auth"] is True
            assert http.post("/v1/chat/completions", json=chat_body()).status_code == 401
            auth = {"Authorization": f"Bearer {key}"}
            answer = http.post("/v1/chat/completions", json=chat_body(), headers=auth)
            assert answer.status_code == 200
            big = http.post("/v1/embeddings", json={"model": "m", "input": TEXTS * 30}, headers=auth)
            assert big.status_code == 200 and len(big.json()["data"]) == 90
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
        assert proc.returncode == 0, stderr
        assert key not in stderr
        assert "Traceback" not in stderr
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[str]) -> None:
    """Stop a simulator this test started: SIGTERM by its PID, SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_embedding_workers_exit_when_the_server_is_killed() -> None:
    argv = [sys.executable, "-m", "ragperf_lab.llm_simulator", "--port", "0", "--embed-workers", "2"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    workers: list[int] = []
    try:
        assert "listening on" in _first_line(proc, timeout=20)
        workers = [pid for pid in _children(proc.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(workers) == 2
        proc.kill()  # no chance to shut the pool down
        proc.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
    finally:
        stop(proc)
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
