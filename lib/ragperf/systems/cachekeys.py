"""The cache add-on's keys: which answers it stores, under which Redis key, and purging them.

A ``POST /ask`` body that is a JSON object with a string ``question`` and a ``mode`` of ``fast`` or
``quality`` (``fast`` when absent, as in the app) is keyed by the sha256 of the normalised question
(NFC, casefolded, whitespace runs collapsed to one space, stripped), the mode, the key version and any
other fields of the body: ``ragperf:ask:<version>:<hex>``. Only ``200`` answers whose body is a JSON
object with a string ``answer`` are stored (:func:`cacheable`). :func:`purge` deletes them with SCAN.
The proxy that uses these keys is :mod:`ragperf.systems.cacheapp`.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

import redis

KEY_PREFIX = "ragperf:ask:"
MODES = ("fast", "quality")
DEFAULT_MODE = "fast"
VERSION_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def normalise_question(question: str) -> str:
    """The question as the cache key sees it: NFC, casefolded, whitespace runs as one space, stripped."""
    text = unicodedata.normalize("NFC", question).casefold()
    # Casefolding can decompose a character (İ → i + combining dot): compose again, so both Unicode
    # forms of a question still meet.
    return " ".join(unicodedata.normalize("NFC", text).split())


def check_key_version(version: str) -> str:
    """``version`` if it is 1-64 letters, digits, dots, dashes or underscores; ValueError otherwise."""
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise ValueError(f"key version must be 1-64 letters, digits, '.', '-' or '_', not {version!r}")
    return version


def cache_key(question: str, mode: str = DEFAULT_MODE, version: str = "v1", extra: dict[str, Any] | None = None) -> str:
    """The Redis key of a question: ``ragperf:ask:<version>:<sha256 of the normalised request>``.

    ``extra`` holds the body's fields other than question and mode; they are part of the key as they are.
    """
    material = json.dumps(
        {"q": normalise_question(question), "m": mode, "x": extra or {}},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    # surrogatepass: JSON may carry a lone surrogate ("\\ud800"); it still needs a key of its own.
    digest = hashlib.sha256(f"{check_key_version(version)}\n{material}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"{KEY_PREFIX}{version}:{digest}"


def ask_key(body: bytes, version: str) -> str | None:
    """The cache key of a ``POST /ask`` body, or None when the body is not a well-formed question."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting; the app judges it
        return None
    if not isinstance(data, dict) or not isinstance(data.get("question"), str):
        return None
    mode = data.get("mode", DEFAULT_MODE)
    if mode not in MODES:
        return None
    extra = {k: v for k, v in data.items() if k not in ("question", "mode")}
    try:
        return cache_key(data["question"], mode, version, extra)
    except RecursionError:
        return None


def cacheable(status: int, body: bytes) -> bool:
    """True for an answer worth keeping: status 200 and a JSON object with a string ``answer``."""
    if status != 200:
        return False
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and isinstance(data.get("answer"), str)


def key_pattern(key_version: str | None) -> str:
    """The SCAN pattern of every cached answer (``ragperf:ask:*``), or of one key version's."""
    if key_version is None:
        return KEY_PREFIX + "*"
    return f"{KEY_PREFIX}{check_key_version(key_version)}:*"


def purge(redis_url: str, key_version: str | None = None) -> int:
    """Delete the cached answers (``ragperf:ask:*``, or one key version's) with SCAN; return how many.

    Never KEYS or FLUSHALL: SCAN walks the keyspace in small steps, so Redis keeps serving meanwhile.
    """
    pattern = key_pattern(key_version)
    deleted = 0
    with redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2) as client:
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += client.unlink(*batch)
                batch = []
        if batch:
            deleted += client.unlink(*batch)
    return deleted
