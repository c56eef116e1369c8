"""The provider client: its key never in a repr, sent only as a bearer header, embeddings back in input order."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from ragperf.systems.llm import Provider, embed

KEY = "sk-test-0123456789"


def test_the_providers_repr_hides_the_key():
    provider = Provider("http://127.0.0.1:9000/v1", SecretStr(KEY))
    assert KEY not in repr(provider) and KEY not in str(provider)
    assert provider.headers() == {"Authorization": f"Bearer {KEY}"}


def test_without_a_key_no_authorization_header_is_sent():
    assert Provider("http://127.0.0.1:9000/v1").headers() == {}


def _vector(values: list[float]) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def test_embed_sends_one_request_and_returns_rows_in_input_order():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        data = [{"index": 1, "embedding": _vector([3.0, 4.0])}, {"index": 0, "embedding": _vector([1.0, 2.0])}]
        return httpx.Response(200, json={"data": data})

    provider = Provider("http://llm.test/v1/", SecretStr(KEY), embedding_model="tiny")
    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        vectors = embed(client, provider, ["first", "second"])
    assert vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors, [[1.0, 2.0], [3.0, 4.0]])
    (request,) = seen
    assert str(request.url) == "http://llm.test/v1/embeddings"  # no doubled slash
    assert json.loads(request.content) == {"model": "tiny", "input": ["first", "second"], "encoding_format": "base64"}
    assert request.headers["Authorization"] == f"Bearer {KEY}"


def test_a_failed_embedding_request_says_the_status_and_not_the_key():
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, text="rate limited")

    client = httpx.Client(transport=httpx.MockTransport(answer))
    with client, pytest.raises(RuntimeError, match="embedding request failed: HTTP 429 rate limited") as err:
        embed(client, Provider("http://llm.test/v1", SecretStr(KEY)), ["x"])
    assert KEY not in str(err.value)
