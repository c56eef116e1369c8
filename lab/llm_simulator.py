"""ragperf LLM simulator: a stand-in LLM provider speaking the OpenAI HTTP API.

Nothing can run a real language model here, so this separate aiohttp process plays the provider
the RAG service calls. It is the only simulated part of the project and says so everywhere: the
``Server`` header, the model names, ``/health`` and a note at the end of every answer.

Endpoints:

* ``POST /v1/embeddings``: deterministic embeddings from :func:`ragperf_lab.embedding.embed_texts`,
  as JSON floats or base64 little-endian float32; big batches run in a process pool so the event
  loop stays responsive.
* ``POST /v1/chat/completions``: a non-streaming answer composed from the context in the
  messages (the cited article and the context sentences sharing most syllables with the question),
  delivered after a simulated provider latency (lognormal, constant or uniform, seeded).
  At most ``concurrency_limit`` requests are served at once; one more gets HTTP 429 at once.
* ``GET /health``, ``GET /v1/models``, ``GET /stats``.

If ``RAGPERF_LLM_API_KEY`` is set when the command line starts it, every endpoint but ``/health``
requires ``Authorization: Bearer <key>``. Run ``python -m ragperf_lab.llm_simulator --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import heapq
import hmac
import itertools
import json
import logging
import math
import multiprocessing
import os
import random
import re
import signal
import sys
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from aiohttp import web

from ragperf_lab.embedding import embed_texts

__all__ = [
    "API_KEY_ENV",
    "PROCESSING_HEADER",
    "START_HEADER",
    "CHAT_MODEL",
    "EMBEDDING_MODEL",
    "LATENCY_KINDS",
    "SIMULATOR_NAME",
    "LatencyModel",
    "SimulatorConfig",
    "SimulatorStats",
    "compose_answer",
    "count_tokens",
    "create_app",
    "lognormal_params",
    "main",
    "serve",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

SIMULATOR_NAME = "ragperf LLM simulator"
VERSION = "0.1.0"
SERVER_HEADER = f"ragperf-llm-simulator/{VERSION}"
CHAT_MODEL = "ragperf-sim-chat"
EMBEDDING_MODEL = "ragperf-sim-embedding"
OWNER = "ragperf-simulator"
API_KEY_ENV = "RAGPERF_LLM_API_KEY"
# Every response tells how long the simulator spent on it, like OpenAI's header, and when it
# started on it (CLOCK_MONOTONIC seconds, comparable across processes of the same host).
PROCESSING_HEADER = "openai-processing-ms"
START_HEADER = "x-ragperf-sim-start"

DEFAULT_DIM = 768
MAX_DIM = 4096
MAX_EMBEDDING_INPUTS = 2048
LATENCY_KINDS = ("lognormal", "constant", "uniform")
EMBED_EXECUTORS = ("process", "thread")
ENCODING_FORMATS = ("float", "base64")
CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
Z95 = 1.6448536269514722  # the standard normal's 95th percentile
SIMULATED_NOTE = f"(Câu trả lời do {SIMULATOR_NAME} tổng hợp từ ngữ cảnh được cung cấp, không phải mô hình thật.)"
NO_CONTEXT_ANSWER = "Không tìm thấy thông tin phù hợp trong ngữ cảnh được cung cấp để trả lời câu hỏi này."

_ENDPOINTS = frozenset({"/v1/embeddings", "/v1/chat/completions", "/v1/models", "/health", "/stats"})
_OPEN_PATHS = frozenset({"/health"})


# --------------------------------------------------------------------------------------------
# Configuration and latency


@dataclass(frozen=True)
class SimulatorConfig:
    """Settings of one simulator process; invalid values raise ValueError.

    The latency distributions are all described by their median and 95th percentile (seconds);
    ``constant`` uses the median only. ``concurrency_limit`` 0 means unlimited. The API key is
    never shown in the repr.
    """

    host: str = "127.0.0.1"
    port: int = 0
    dim: int = DEFAULT_DIM
    latency: str = "lognormal"
    latency_median: float = 0.6
    latency_p95: float = 1.0
    concurrency_limit: int = 64
    seed: int = 0
    api_key: str | None = field(default=None, repr=False)
    retry_after_s: int = 1
    embed_executor: str = "process"
    embed_workers: int = 0  # 0 = one per CPU
    embed_inline_chars: int = 2000  # requests up to this many characters are embedded on the loop
    max_body_bytes: int = 64 * 1024 * 1024
    access_log: bool = False
    shutdown_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.dim <= MAX_DIM:
            raise ValueError(f"dim must be in 1..{MAX_DIM}, got {self.dim}")
        if self.concurrency_limit < 0:
            raise ValueError("concurrency_limit must be >= 0 (0 = unlimited)")
        if self.embed_executor not in EMBED_EXECUTORS:
            raise ValueError(f"embed_executor must be one of {', '.join(EMBED_EXECUTORS)}")
        if self.embed_workers < 0 or self.retry_after_s < 0 or self.max_body_bytes <= 0:
            raise ValueError("embed_workers and retry_after_s must be >= 0, max_body_bytes > 0")
        LatencyModel(self.latency, self.latency_median, self.latency_p95)  # validates


def lognormal_params(median: float, p95: float) -> tuple[float, float]:
    """The (mu, sigma) of a lognormal with the given median and 95th percentile.

    ``mu = ln(median)`` and ``sigma = ln(p95 / median) / 1.645``.
    """
    if median <= 0 or p95 < median:
        raise ValueError(f"lognormal latency needs 0 < median <= p95, got {median}, {p95}")
    return math.log(median), math.log(p95 / median) / Z95


def uniform_bounds(median: float, p95: float) -> tuple[float, float]:
    """The (low, high) of a uniform distribution with the given median and 95th percentile."""
    width = (p95 - median) / 0.45
    low = median - width / 2
    if median < 0 or p95 < median or low < 0:
        raise ValueError(f"uniform latency needs 0 <= median <= p95 <= 1.9 * median, got {median}, {p95}")
    return low, low + width


class LatencyModel:
    """Seeded sampler of the simulated provider latency, in seconds."""

    def __init__(self, kind: str, median: float, p95: float, seed: int = 0) -> None:
        """Check the parameters and seed the generator.

        Args:
            kind: one of ``lognormal``, ``constant``, ``uniform``.
            median: median latency in seconds.
            p95: 95th percentile in seconds (ignored by ``constant``).
            seed: seed of the private random generator.
        """
        if kind not in LATENCY_KINDS:
            raise ValueError(f"latency must be one of {', '.join(LATENCY_KINDS)}, got {kind!r}")
        if not (math.isfinite(median) and math.isfinite(p95)):
            raise ValueError("latency median and p95 must be finite")
        self.kind = kind
        self.median = median
        self.p95 = p95
        self._rng = random.Random(seed)
        self._sample: Callable[[], float]
        if kind == "lognormal":
            mu, sigma = lognormal_params(median, p95)
            self._sample = lambda: self._rng.lognormvariate(mu, sigma)
        elif kind == "uniform":
            low, high = uniform_bounds(median, p95)
            self._sample = lambda: self._rng.uniform(low, high)
        else:
            if median < 0:
                raise ValueError(f"constant latency must be >= 0, got {median}")
            self._sample = lambda: median

    def sample(self) -> float:
        """One latency draw in seconds."""
        return self._sample()

    def __repr__(self) -> str:
        return f"LatencyModel({self.kind!r}, median={self.median}, p95={self.p95})"


# --------------------------------------------------------------------------------------------
# Text helpers and answer composition

_TOKEN = re.compile(r"\S+")
_SYLLABLE = re.compile(r"\w+")
_ARTICLE = re.compile(r"\bĐiều\s+(\d+[a-zđ]?)\b")
_DOCNUM = re.compile(r"\b\d{1,4}/\d{4}/[A-ZĐ0-9][A-ZĐ0-9\-]*[A-ZĐ0-9]")
_QUESTION_MARKER = re.compile(r"\b(?:câu hỏi|question|hỏi)\s*:", re.IGNORECASE)
_SENTENCE = re.compile(r".+?(?:[.!?;…]+(?=\s)|$)")
_LEADING_MARKER = re.compile(r"^(?:\[\d+\]|[-•*]|\d+\.|[a-zđ]\))\s+")
_HEADING = re.compile(r"^(?:\[\d+\]\s*)?(?:Điều|Chương|Mục|Phần|Luật|Nghị định|Thông tư|Nguồn|Văn bản)\b")
_HEADING_CHARS = 100
_LONG_LINE = 300
_MIN_PIECE = 24
_MAX_SENTENCE = 320
_SENTENCES_IN_ANSWER = 2


def count_tokens(text: str) -> int:
    """The simulator's (approximate) token count: about one per whitespace-separated word.

    Counted as separators + 1 rather than by splitting: prompts are counted on every request.
    """
    if not text or text.isspace():
        return 0
    return text.count(" ") + text.count("\n") + 1


# Frequent function syllables of Vietnamese questions and legal text carry no topic.
_STOP = frozenset(
    _SYLLABLE.findall(
        """của và các những được có là cho trong theo này với để về khi thì không một từ đến tại do
        hoặc phải đã bị sẽ như nếu trường hợp quy định điều khoản gì nào ra sao thế bao nhiêu ai
        thể hay làm sự việc ở nhau"""
    )
)


def _content_text(content: Any) -> str:
    """The text of an OpenAI message content: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
        return "\n".join(p for p in parts if isinstance(p, str))
    return ""


def _split_question(conversation: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """Split (role, text) pairs into the question and the context text."""
    context: list[str] = []
    question = ""
    last_user = max((i for i, (role, _) in enumerate(conversation) if role == "user"), default=-1)
    for i, (role, text) in enumerate(conversation):
        if i == last_user:
            markers = list(_QUESTION_MARKER.finditer(text))
            lines = [line for line in text.splitlines() if line.strip()]
            if markers:
                question = text[markers[-1].end() :].strip()
                context.append(text[: markers[-1].start()])
            elif len(lines) > 1:
                question = lines[-1].strip()
                context.append("\n".join(lines[:-1]))
            else:
                question = text.strip()
        elif role != "assistant":
            context.append(text)
    return question, "\n".join(context)


class _Piece(NamedTuple):
    """A candidate sentence of the context: its line, its column in the line and its text."""

    line: int
    column: int
    text: str


def _pieces(lines: Sequence[str]) -> list[_Piece]:
    """Candidate sentences of the context: its lines, long lines split into sentences."""
    pieces: list[_Piece] = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        if len(line) <= _LONG_LINE:
            pieces.append(_Piece(number, 0, line.strip()))
            continue
        column, buffer = 0, ""
        for sentence in _SENTENCE.finditer(line):
            if not buffer:
                column = sentence.start()
            buffer += sentence.group()
            if len(buffer.strip()) >= _MIN_PIECE:
                pieces.append(_Piece(number, column, buffer.strip()))
                buffer = ""
        if buffer.strip():
            pieces.append(_Piece(number, column, buffer.strip()))
    return pieces


def _has_syllable(text: str, syllable: str) -> bool:
    """Whether ``syllable`` occurs in ``text`` as a whole word (str.find: no regex per question)."""
    start, size, length = text.find(syllable), len(syllable), len(text)
    while start >= 0:
        end = start + size
        if (start == 0 or not text[start - 1].isalnum()) and (end == length or not text[end].isalnum()):
            return True
        start = text.find(syllable, start + 1)
    return False


def _ranked(question: str, pieces: list[_Piece], context_lower: str) -> list[_Piece]:
    """The pieces sharing syllables with the question, most shared first (ties: earlier first).

    Shared question bigrams count half a syllable more each. Pieces of fewer than four words are
    skipped, and headings (article titles, source lines) come after every sentence of content.
    """
    q_words = _SYLLABLE.findall(question.lower())
    q_content = [s for s in set(q_words) - _STOP if s in context_lower]
    if not q_content:
        return []
    q_bigrams = {f"{a} {b}" for a, b in zip(q_words, q_words[1:], strict=False) if a not in _STOP or b not in _STOP}
    question_norm = question.strip().lower()
    scored: list[tuple[bool, float, int, _Piece]] = []
    for order, piece in enumerate(pieces):
        lowered = piece.text.lower()
        shared = sum(1 for s in q_content if s in lowered and _has_syllable(lowered, s))
        if shared == 0 or lowered.count(" ") < 3 or lowered == question_norm:
            continue
        score = shared + 0.5 * sum(1 for bigram in q_bigrams if bigram in lowered)
        heading = len(piece.text) < _HEADING_CHARS and _HEADING.match(piece.text) is not None
        scored.append((heading, -score, order, piece))
    scored.sort(key=lambda item: item[:3])
    return [item[3] for item in scored]


def _governing(
    lines: Sequence[str], piece: _Piece, needle: str, pattern: re.Pattern[str], own_line_reach: int | None
) -> str | None:
    """The reference governing ``piece``: the nearest match at or above its line, else the first below.

    On the piece's own line a match counts only if it starts before ``column + own_line_reach``
    (None: anywhere), so that a cross-reference inside the sentence does not pass for its heading.
    """
    line = lines[piece.line]
    if needle in line:
        match = pattern.search(line)
        if match and (own_line_reach is None or match.start() <= piece.column + own_line_reach):
            return match.group(match.lastindex or 0)
    for number in range(piece.line - 1, -1, -1):
        if needle in lines[number]:
            found = pattern.findall(lines[number])
            if found:
                return found[-1]
    for text in lines[piece.line + 1 :]:
        if needle in text and (match := pattern.search(text)):
            return match.group(match.lastindex or 0)
    return None


def _citation(lines: Sequence[str], piece: _Piece) -> str | None:
    """How the answer cites the context of ``piece``: article and document number, when known."""
    article = _governing(lines, piece, "Điều", _ARTICLE, own_line_reach=12)
    doc = _governing(lines, piece, "/", _DOCNUM, own_line_reach=None)
    if article and doc:
        return f"Điều {article} của văn bản số {doc}"
    if article:
        return f"Điều {article}"
    if doc:
        return f"văn bản số {doc}"
    return None


def _clean_sentence(piece: str) -> str:
    text = _LEADING_MARKER.sub("", piece).strip()
    if len(text) > _MAX_SENTENCE:
        cut = text.rfind(" ", 0, _MAX_SENTENCE)
        text = text[: cut if cut > 0 else _MAX_SENTENCE].rstrip(",;: ") + "…"
    return text


@functools.lru_cache(maxsize=2048)
def _compose(conversation: tuple[tuple[str, str], ...]) -> str:
    question, context = _split_question(conversation)
    lines = context.split("\n")
    best = _ranked(question, _pieces(lines), context.lower())[:_SENTENCES_IN_ANSWER]
    if not best:
        return f"{NO_CONTEXT_ANSWER}\n\n{SIMULATED_NOTE}"
    cite = _citation(lines, best[0]) or "các quy định trong ngữ cảnh được cung cấp"
    body = " ".join(_clean_sentence(piece.text) for piece in best)
    return f"Căn cứ {cite}: {body}\n\n{SIMULATED_NOTE}"


def compose_answer(messages: Sequence[Mapping[str, Any]]) -> str:
    """The simulated assistant's answer: deterministic, in Vietnamese, built from the context.

    The question is the last user message (or its part after "Câu hỏi:", or its last line when
    the context comes first); the context is every other non-assistant message. The answer cites
    the article/document governing the most relevant context sentence and quotes the couple of
    sentences sharing most syllables with the question. Answers are cached by conversation.

    Args:
        messages: OpenAI chat messages ({"role", "content"}).

    Returns:
        The answer text, ending with a note that it comes from the simulator.
    """
    conversation = tuple(
        (str(m.get("role")), unicodedata.normalize("NFC", _content_text(m.get("content")))) for m in messages
    )
    return _compose(conversation)


def _completion(messages: Sequence[Mapping[str, Any]], max_tokens: int | None) -> tuple[str, str, int, int]:
    """The CPU work of a chat completion: (content, finish_reason, prompt_tokens, completion_tokens)."""
    content = compose_answer(messages)
    finish_reason = "stop"
    if max_tokens is not None:
        content, cut = _truncate_tokens(content, max_tokens)
        finish_reason = "length" if cut else "stop"
    prompt_tokens = sum(count_tokens(_content_text(m.get("content"))) for m in messages)
    return content, finish_reason, prompt_tokens, count_tokens(content)


def _truncate_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """``text`` cut after ``max_tokens`` tokens, and whether it was cut."""
    if count_tokens(text) <= max_tokens:
        return text, False
    for i, match in enumerate(_TOKEN.finditer(text), start=1):  # the words of count_tokens
        if i == max_tokens:
            rest = text[match.end() :]
            return text[: match.end()], bool(rest.strip())
    return text, False


# --------------------------------------------------------------------------------------------
# Embedding work (runs on the loop for small requests, in the executor for big ones)


@functools.lru_cache(maxsize=64)
def _float_array_format(dim: int) -> str:
    # %.9g round-trips every float32 exactly and formats ~3x faster than json.dumps of floats.
    return "[" + ",".join(["%.9g"] * dim) + "]"


def _embed_payload(texts: list[str], dim: int, encoding_format: str) -> tuple[bytes, int]:
    """The JSON ``data`` array of an embeddings response, and the prompt token count."""
    vectors = embed_texts(texts, dim)
    if encoding_format == "base64":
        encoded = [
            '"' + base64.b64encode(row.astype("<f4", copy=False).tobytes()).decode("ascii") + '"' for row in vectors
        ]
    else:
        array = _float_array_format(vectors.shape[1])
        encoded = [array % tuple(row) for row in vectors.tolist()]
    items = [f'{{"object":"embedding","index":{i},"embedding":{embedding}}}' for i, embedding in enumerate(encoded)]
    tokens = sum(count_tokens(t) for t in texts)
    return ("[" + ",".join(items) + "]").encode("ascii"), tokens


def _exit_with_parent(parent: int, period_s: float = 1.0) -> None:
    """Exit when the server process is gone (e.g. SIGKILLed), instead of lingering orphaned."""
    while os.getppid() == parent:
        time.sleep(period_s)
    os._exit(0)


def _worker_init(parent: int) -> None:
    """Embedding workers leave Ctrl-C to the server, yield the CPU to its loop, die with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        os.nice(5)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="ragperf-parent-watch", daemon=True).start()


# --------------------------------------------------------------------------------------------
# Request validation


class BadRequest(Exception):
    """A client error answered with HTTP 400 and an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise BadRequest("The request body is empty; expected a JSON object.")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


def _parse_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string.", "model")
    return model


def _parse_input(body: Mapping[str, Any]) -> list[str]:
    if "input" not in body or body["input"] is None:
        raise BadRequest("'input' is required: a string or a list of strings.", "input")
    value = body["input"]
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list):
        raise BadRequest("'input' must be a string or a list of strings.", "input")
    if not texts:
        raise BadRequest("'input' must not be an empty list.", "input")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise BadRequest(f"'input' holds {len(texts)} items; at most {MAX_EMBEDDING_INPUTS}.", "input")
    for i, text in enumerate(texts):
        name = "input" if isinstance(value, str) else f"input[{i}]"
        if not isinstance(text, str):
            raise BadRequest(f"'{name}' must be a string, got {type(text).__name__}.", "input")
        if not text.strip():
            raise BadRequest(f"'{name}' must not be empty.", "input")
    return texts


def _parse_embeddings(body: Mapping[str, Any], default_dim: int) -> tuple[str, list[str], str, int]:
    model = _parse_model(body)
    texts = _parse_input(body)
    encoding_format = body.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if encoding_format not in ENCODING_FORMATS:
        raise BadRequest(
            f"'encoding_format' must be one of {', '.join(ENCODING_FORMATS)}, got {encoding_format!r}.",
            "encoding_format",
        )
    dim = body.get("dimensions")
    if dim is None:
        dim = default_dim
    elif not _is_int(dim) or not 1 <= dim <= MAX_DIM:
        raise BadRequest(f"'dimensions' must be an integer in 1..{MAX_DIM}, got {dim!r}.", "dimensions")
    return model, texts, encoding_format, dim


def _parse_messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty list.", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequest(f"'messages[{i}]' must be an object.", "messages")
        role = message.get("role")
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise BadRequest(f"'messages[{i}].role' must be one of {', '.join(sorted(CHAT_ROLES))}.", "messages")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise BadRequest(f"'messages[{i}].content' must be a string or a list of parts.", "messages")
    if not any(m["role"] == "user" for m in messages):
        raise BadRequest("'messages' must contain at least one user message.", "messages")
    return messages


def _parse_chat(body: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]], int | None]:
    model = _parse_model(body)
    messages = _parse_messages(body)
    if body.get("stream"):
        raise BadRequest(f"'stream' is not supported by the {SIMULATOR_NAME}.", "stream")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
        raise BadRequest(f"'max_tokens' must be a positive integer, got {max_tokens!r}.", "max_tokens")
    temperature = body.get("temperature")
    if temperature is not None and (
        not isinstance(temperature, int | float) or isinstance(temperature, bool) or not 0 <= temperature <= 2
    ):
        raise BadRequest(f"'temperature' must be a number in 0..2, got {temperature!r}.", "temperature")
    return model, messages, max_tokens


# --------------------------------------------------------------------------------------------
# Server state and handlers


@dataclass
class SimulatorStats:
    """Counters of one simulator process, served by ``GET /stats``."""

    started: float = field(default_factory=time.monotonic)
    requests: Counter[str] = field(default_factory=Counter)
    responses: Counter[int] = field(default_factory=Counter)
    latency_sum_s: Counter[str] = field(default_factory=Counter)
    simulated_latency_sum_s: float = 0.0
    rate_limited: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    chat_in_flight: int = 0
    max_chat_in_flight: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        return {
            "simulator": True,
            "name": SIMULATOR_NAME,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "requests": dict(self.requests),
            "responses": {str(status): n for status, n in sorted(self.responses.items())},
            "rate_limited": self.rate_limited,
            "unauthorized": self.responses.get(401, 0),
            "bad_requests": self.responses.get(400, 0),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "chat_in_flight": self.chat_in_flight,
            "max_chat_in_flight": self.max_chat_in_flight,
            "latency_sum_s": {k: round(v, 6) for k, v in self.latency_sum_s.items()},
            "simulated_latency_sum_s": round(self.simulated_latency_sum_s, 6),
        }


class _Background:
    """CPU jobs (composing answers) run on the event loop when it has nothing more urgent to do.

    A job runs at the earliest in the loop iteration after it was queued, earliest deadline
    first, and is postponed while the loop is busy (its last iteration took over ``busy_s``)
    unless its deadline is less than ``slack_s`` away. Accepting requests and sending due
    responses thus come first: under a burst of N chat requests every request is accepted (and
    its latency clock started) before answers are composed, and the answers are composed while
    the requests wait out their simulated latency.
    """

    def __init__(self, busy_s: float = 0.0005, slack_s: float = 0.05) -> None:
        self.busy_s = busy_s
        self.slack_s = slack_s
        self._jobs: list[tuple[float, int, asyncio.Future[Any], Callable[[], Any]]] = []
        self._order = itertools.count()
        self._task: asyncio.Task[None] | None = None

    def submit(self, job: Callable[[], T], deadline: float) -> asyncio.Future[T]:
        """Queue ``job``, due by ``deadline`` (loop time); the future resolves to its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        heapq.heappush(self._jobs, (deadline, next(self._order), future, job))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._jobs:
                before = loop.time()
                await asyncio.sleep(0)  # one loop iteration: its I/O and callbacks go first
                now = loop.time()
                deadline, _, future, job = self._jobs[0]
                if now - before > self.busy_s and deadline - now > self.slack_s:
                    continue  # the loop is busy and this job can wait
                heapq.heappop(self._jobs)
                if future.done():  # cancelled: the client went away
                    continue
                try:
                    future.set_result(job())
                except Exception as exc:
                    future.set_exception(exc)
        finally:
            self._task = None

    def close(self) -> None:
        """Cancel the pending jobs."""
        if self._task is not None:
            self._task.cancel()
        for _, _, future, _ in self._jobs:
            future.cancel()
        self._jobs.clear()


@dataclass
class _State:
    config: SimulatorConfig
    latency: LatencyModel
    stats: SimulatorStats = field(default_factory=SimulatorStats)
    executor: concurrent.futures.Executor | None = None
    ids: itertools.count[int] = field(default_factory=itertools.count)
    background: _Background = field(default_factory=_Background)


_STATE = web.AppKey("ragperf_llm_simulator_state", _State)


def _error(
    status: int,
    message: str,
    error_type: str,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body = {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    return _json(body, status=status, headers=headers)


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def _authorized(request: web.Request, key: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def _http_error(exc: web.HTTPException) -> web.Response:
    kinds = {404: "not_found_error", 405: "invalid_request_error", 413: "invalid_request_error"}
    message = f"{exc.reason}: this {SIMULATOR_NAME} serves {', '.join(sorted(_ENDPOINTS))}"
    if exc.status == 413:
        message = f"{exc.reason}: the request body is too large."
    return _error(exc.status, message, kinds.get(exc.status, "invalid_request_error"))


async def _dispatch(request: web.Request, handler: Callable[..., Any], state: _State) -> web.StreamResponse:
    key = state.config.api_key
    if key and request.path not in _OPEN_PATHS and not _authorized(request, key):
        return _error(
            401,
            "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
            "invalid_request_error",
            code="invalid_api_key",
        )
    try:
        return await handler(request)
    except BadRequest as exc:
        return _error(400, exc.message, "invalid_request_error", param=exc.param)
    except web.HTTPException as exc:
        return _http_error(exc)
    except Exception:
        log.exception("internal error while serving %s %s", request.method, request.path)
        return _error(500, f"Internal error of the {SIMULATOR_NAME}.", "server_error")


@web.middleware
async def _middleware(request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
    state = request.app[_STATE]
    stats = state.stats
    endpoint = request.path if request.path in _ENDPOINTS else "other"
    stats.requests[endpoint] += 1
    stats.in_flight += 1
    stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
    started = time.monotonic()
    status = 499  # the client went away
    try:
        response = await _dispatch(request, handler, state)
        status = response.status
        headers = response.headers
        headers["Server"] = SERVER_HEADER
        headers[PROCESSING_HEADER] = str(round((time.monotonic() - started) * 1000))
        headers[START_HEADER] = f"{started:.6f}"
        return response
    finally:
        stats.in_flight -= 1
        stats.responses[status] += 1
        stats.latency_sum_s[endpoint] += time.monotonic() - started


async def _handle_health(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    config = state.config
    return _json(
        {
            "status": "ok",
            "simulator": True,
            "name": SIMULATOR_NAME,
            "version": VERSION,
            "chat_model": CHAT_MODEL,
            "embedding_model": EMBEDDING_MODEL,
            "embedding_dim": config.dim,
            "latency": {"kind": config.latency, "median_s": config.latency_median, "p95_s": config.latency_p95},
            "concurrency_limit": config.concurrency_limit,
            "auth": bool(config.api_key),
            "uptime_s": round(time.monotonic() - state.stats.started, 3),
        }
    )


async def _handle_models(request: web.Request) -> web.StreamResponse:
    data = [{"id": name, "object": "model", "created": 0, "owned_by": OWNER} for name in (CHAT_MODEL, EMBEDDING_MODEL)]
    return _json({"object": "list", "data": data})


async def _handle_stats(request: web.Request) -> web.StreamResponse:
    return _json(request.app[_STATE].stats.to_json())


async def _handle_embeddings(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    model, texts, encoding_format, dim = _parse_embeddings(_parse_body(await request.read()), state.config.dim)
    if state.executor is None or sum(map(len, texts)) <= state.config.embed_inline_chars:
        data, tokens = _embed_payload(texts, dim, encoding_format)
    else:
        loop = asyncio.get_running_loop()
        data, tokens = await loop.run_in_executor(state.executor, _embed_payload, texts, dim, encoding_format)
    head = b'{"object":"list","data":'
    tail = json.dumps(
        {"model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    return web.Response(body=head + data + b"," + tail[1:], content_type="application/json")


def _rate_limited(state: _State) -> web.Response:
    state.stats.rate_limited += 1
    limit = state.config.concurrency_limit
    return _error(
        429,
        f"Rate limit reached: the {SIMULATOR_NAME} serves at most {limit} concurrent chat "
        f"completions. Please retry after {state.config.retry_after_s} s.",
        "rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(state.config.retry_after_s)},
    )


async def _handle_chat(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    stats = state.stats
    limit = state.config.concurrency_limit
    if limit and stats.chat_in_flight >= limit:
        return _rate_limited(state)
    stats.chat_in_flight += 1
    stats.max_chat_in_flight = max(stats.max_chat_in_flight, stats.chat_in_flight)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        model, messages, max_tokens = _parse_chat(_parse_body(await request.read()))
        delay = state.latency.sample()
        # Composed in the background, while this request waits out its simulated latency.
        job = functools.partial(_completion, messages, max_tokens)
        done = await state.background.submit(job, deadline=started + delay)
        content, finish_reason, prompt_tokens, completion_tokens = done
        payload = {
            "id": f"chatcmpl-ragperfsim-{next(state.ids):010d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "ragperf-llm-simulator",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        response = _json(payload)
        stats.simulated_latency_sum_s += delay
        remaining = delay - (loop.time() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)  # the simulated provider latency
        return response
    finally:
        stats.chat_in_flight -= 1


async def _start_executor(app: web.Application) -> None:
    state = app[_STATE]
    config = state.config
    workers = config.embed_workers or os.cpu_count() or 1
    if config.embed_executor == "thread":
        state.executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="ragperf-embed")
        return
    context = multiprocessing.get_context("spawn")  # forking a process running an event loop is unsafe
    state.executor = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_init, initargs=(os.getpid(),)
    )
    loop = asyncio.get_running_loop()
    warm = [
        loop.run_in_executor(state.executor, _embed_payload, ["khởi động"], config.dim, "float") for _ in range(workers)
    ]
    await asyncio.gather(*warm)  # start the workers now, not on the first big request
    log.info("embedding process pool ready: %d workers", workers)


async def _cleanup(app: web.Application) -> None:
    state = app[_STATE]
    state.background.close()
    if state.executor is not None:
        state.executor.shutdown(wait=True, cancel_futures=True)
        state.executor = None


def create_app(config: SimulatorConfig) -> web.Application:
    """The simulator's aiohttp application (the embedding pool starts with the app).

    Args:
        config: the simulator settings.

    Returns:
        An application to run with ``web.AppRunner`` or aiohttp's ``TestServer``.
    """
    app = web.Application(middlewares=[_middleware], client_max_size=config.max_body_bytes)
    app[_STATE] = _State(
        config=config, latency=LatencyModel(config.latency, config.latency_median, config.latency_p95, config.seed)
    )
    app.router.add_post("/v1/embeddings", _handle_embeddings)
    app.router.add_post("/v1/chat/completions", _handle_chat)
    app.router.add_get("/v1/models", _handle_models)
    app.router.add_get("/health", _handle_health)
    app.router.add_get("/stats", _handle_stats)
    app.on_startup.append(_start_executor)
    app.on_cleanup.append(_cleanup)
    return app


# --------------------------------------------------------------------------------------------
# Command line


async def serve(config: SimulatorConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set or SIGTERM/SIGINT arrives, then shut down cleanly.

    Prints one line "ragperf LLM simulator listening on http://host:port" once ready.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(create_app(config), access_log=log if config.access_log else None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, backlog=4096, shutdown_timeout=config.shutdown_timeout_s)
        await site.start()
        port = runner.addresses[0][1]
        log.info(
            "config: dim=%d latency=%s median=%.3fs p95=%.3fs limit=%d seed=%d auth=%s embed=%s",
            config.dim,
            config.latency,
            config.latency_median,
            config.latency_p95,
            config.concurrency_limit,
            config.seed,
            "on" if config.api_key else "off",
            config.embed_executor,
        )
        print(f"{SIMULATOR_NAME} listening on http://{config.host}:{port}", flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _parser() -> argparse.ArgumentParser:
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m ragperf_lab.llm_simulator",
        description=f"{SIMULATOR_NAME}: an OpenAI-compatible stand-in provider (simulated, no real model). "
        f"The API key, if any, is read from ${API_KEY_ENV}.",
    )
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port, help="0 = any free port (printed)")
    parser.add_argument("--dim", type=int, default=defaults.dim, help="default embedding dimension")
    parser.add_argument("--latency", choices=LATENCY_KINDS, default=defaults.latency)
    parser.add_argument("--latency-median", type=float, default=defaults.latency_median, metavar="S")
    parser.add_argument("--latency-p95", type=float, default=defaults.latency_p95, metavar="S")
    parser.add_argument(
        "--concurrency-limit",
        type=int,
        default=defaults.concurrency_limit,
        help="concurrent chat completions before HTTP 429 (0 = unlimited)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--retry-after", type=int, default=defaults.retry_after_s, metavar="S")
    parser.add_argument("--embed-executor", choices=EMBED_EXECUTORS, default=defaults.embed_executor)
    parser.add_argument("--embed-workers", type=int, default=defaults.embed_workers, help="0 = one per CPU")
    parser.add_argument("--access-log", action="store_true", help="log every request (costs CPU)")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator from the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = SimulatorConfig(
            host=args.host,
            port=args.port,
            dim=args.dim,
            latency=args.latency,
            latency_median=args.latency_median,
            latency_p95=args.latency_p95,
            concurrency_limit=args.concurrency_limit,
            seed=args.seed,
            api_key=os.environ.get(API_KEY_ENV) or None,
            retry_after_s=args.retry_after,
            embed_executor=args.embed_executor,
            embed_workers=args.embed_workers,
            access_log=args.access_log,
        )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        asyncio.run(serve(config))
    except OSError as exc:  # e.g. the port is taken
        log.error("cannot serve on %s:%s: %s", config.host, config.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    # Run from the importable module, so the embedding workers can unpickle its functions by name.
    from ragperf_lab.llm_simulator import main as _main

    sys.exit(_main())
