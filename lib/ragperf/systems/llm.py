"""A small client of an OpenAI-compatible provider: the lab's simulator or a real URL."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np
from pydantic import SecretStr


@dataclass(frozen=True)
class Provider:
    """Where embeddings and chat completions come from. The key never appears in repr()."""

    base_url: str
    api_key: SecretStr = SecretStr("")
    embedding_model: str = "text-embedding-3-small"

    def headers(self) -> dict[str, str]:
        key = self.api_key.get_secret_value()
        return {"Authorization": f"Bearer {key}"} if key else {}


def embed(client: httpx.Client, provider: Provider, texts: Sequence[str]) -> np.ndarray:
    """Embed ``texts`` with one request; rows come back in input order as float32."""
    response = client.post(
        f"{provider.base_url.rstrip('/')}/embeddings",
        json={"model": provider.embedding_model, "input": list(texts), "encoding_format": "base64"},
        headers=provider.headers(),
    )
    if response.status_code != 200:
        raise RuntimeError(f"embedding request failed: HTTP {response.status_code} {response.text[:300]}")
    data = sorted(response.json()["data"], key=lambda item: item["index"])
    return np.vstack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4") for item in data])
