"""Secrets never reach an output: redact what is written, scan what was written, mask what is logged.

Three lines of defence. ``redact`` replaces secret values in anything about to be recorded
(parameters, command lines, manifests), including passwords inside DSNs and URLs.
``scan_for_secrets`` looks for the secrets this process knows of (``known_secrets``) in every
file of a directory, in the forms they take there: raw, JSON- or HTML-escaped, URL-encoded,
inside base64 (images embedded in notebooks and reports), compressed PNG text chunks, gzip,
zip and parquet. ``install_log_filter`` masks them in log records.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import gzip
import html
import io
import json
import logging
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote

from pydantic import BaseModel, SecretBytes, SecretStr

log = logging.getLogger(__name__)

MASK = "***"
MIN_SECRET_LENGTH = 6
"""Shorter environment values ("true", "1", "false") would match everywhere and protect nothing."""
MIN_EMBEDDED_LENGTH = 3
"""Passwords read from a DSN or URL are known to be secrets; shorter ones would mask parts of words."""

SECRET_KEYS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"pass(word|wd)",  # password, passwd, pgpassword, db_password
        r"secret",
        r"(^|_)token(_|$)",  # token, access_token; not max_tokens or tokenizer
        r"api_?key",
        r"_key$",  # secret_key, private_key, access_key
        r"authorization",
        r"cookie",
        r"credentials?$",
    )
)
"""Key names (lower snake case) whose values are secret as a whole."""

NOT_SECRET_KEYS = re.compile(r"(cache|sort|primary|foreign|partition|group|dedup|index|lookup|shard|routing)_key$")
"""Names ending in ``_key`` that name a key of data, not a credential."""

SECRET_ENV = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY")
"""Environment variable names whose values are secrets (PGPASSWORD, RAGPERF_LLM_API_KEY, ...)."""

_PARAM = r"[\w-]*?(?:password|passwd|secret|token|api[_-]?key)"
_QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""
_URL_USERINFO = re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.\-]*:/+[^:/?#@\s]*:)(?P<value>[^/?#\s]*)(?=@)")
"""``scheme://user:password@``, also with one slash: a URL made a ``Path`` (``workload.log_file``) loses one."""
_QUERY_PARAM = re.compile(rf"(?i)(?P<pre>[?&;]{_PARAM}=)(?P<value>[^&#\s]*)")
_KEY_VALUE = re.compile(rf"(?i)(?P<pre>(?<![\w?&;.\-]){_PARAM}\s*=\s*)(?P<value>{_QUOTED}|\S+)")
_QUOTED_KEY_VALUE = re.compile(rf"(?i)(?P<pre>[\"']{_PARAM}[\"']\s*:\s*)(?P<value>{_QUOTED})")
_BEARER = re.compile(r"(?P<pre>\bBearer\s+)(?P<value>[A-Za-z0-9\-._~+/]+=*)")
_TEXT_PATTERNS = (_URL_USERINFO, _QUERY_PARAM, _KEY_VALUE, _QUOTED_KEY_VALUE, _BEARER)


class SecretLeakError(RuntimeError):
    """A known secret was about to be written to, or was found in, an output."""


def is_secret_key(name: object) -> bool:
    """Whether a mapping key names a secret value (``password``, ``api_key``, ``Authorization``...)."""
    key = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(name)).lower().replace("-", "_").replace(" ", "_")
    return not NOT_SECRET_KEYS.search(key) and any(p.search(key) for p in SECRET_KEYS)


def scrub_text(text: str) -> str:
    """``text`` with passwords in DSNs, URLs, ``key=value`` pairs and bearer tokens replaced by ``***``.

    Scrubbing twice is scrubbing once: a value already masked keeps the quote or bracket that follows it.
    """
    for pattern in _TEXT_PATTERNS:
        text = pattern.sub(lambda m: m["pre"] + _masked_like(m["value"]), text)
    return text


_ALREADY_MASKED = re.compile(rf"(['\"]?){re.escape(MASK)}\1[)\]}}'\",.;:]*")


def _masked_like(value: str) -> str:
    if _ALREADY_MASKED.fullmatch(value):
        return value
    quote_char = value[:1] if value[:1] in "'\"" and len(value) > 1 else ""
    return f"{quote_char}{MASK}{quote_char}"


def embedded_passwords(text: str) -> list[str]:
    """The passwords written inside ``text`` (DSN, URL userinfo, ``password=...``), raw and URL-decoded."""
    found = []
    for pattern in _TEXT_PATTERNS:
        for match in pattern.finditer(text):
            value = match["value"]
            if value[:1] in "'\"" and len(value) > 1:
                value = re.sub(r"\\(.)", r"\1", value[1:-1])  # libpq's \' and \\ escapes
            found += [value, unquote(value)]
    return [v for v in dict.fromkeys(found) if v and not _ALREADY_MASKED.fullmatch(v)]


def secrets_in(obj: Any) -> list[str]:
    """The secrets written inside ``obj`` (parameters as read, a command line), longest first.

    Values under secret keys, ``SecretStr`` values, and the passwords embedded in every string
    (``embedded_passwords``). Values shorter than ``MIN_EMBEDDED_LENGTH`` are left out.
    """
    found: list[str] = []
    _collect(obj, False, found)
    unique = {s for s in found if len(s) >= MIN_EMBEDDED_LENGTH and s != MASK}
    return sorted(unique, key=lambda s: (-len(s), s))


def _collect(obj: Any, secret: bool, found: list[str]) -> None:
    if isinstance(obj, SecretStr):
        found.append(obj.get_secret_value())
    elif isinstance(obj, BaseModel):
        _collect(obj.model_dump(), secret, found)
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            _collect(value, secret or is_secret_key(key), found)
    elif isinstance(obj, list | tuple | set | frozenset):
        for value in obj:
            _collect(value, secret, found)
    elif isinstance(obj, str | Path):
        text = str(obj)
        found += [text, *embedded_passwords(text)] if secret else embedded_passwords(text)
    elif secret and obj is not None and not isinstance(obj, bool):
        found.append(str(obj))


def scrub_message(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` fit to show a user: ``secrets``, the environment's secrets and embedded passwords masked.

    For error messages and everything else printed: whatever form a message quotes a value in, the
    secrets known here are masked in it (``known_secrets``), then passwords in DSNs and URLs (``scrub_text``).
    """
    return SecretFilter([*known_secrets(), *secrets]).mask(text)


def redact(obj: Any) -> Any:
    """A deep copy of ``obj`` with secret values replaced by ``***``.

    Values under secret keys are masked whole; every string is scrubbed of embedded passwords;
    ``SecretStr``/``SecretBytes`` become ``***``. Pydantic models and dataclasses become dicts.
    """
    if isinstance(obj, SecretStr | SecretBytes):
        return MASK
    if isinstance(obj, BaseModel):
        return redact(obj.model_dump())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return redact(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {key: _mask_whole(value) if is_secret_key(key) else redact(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        items = [redact(value) for value in obj]
        return type(obj)(items) if type(obj) in (list, tuple, set, frozenset) else items
    if isinstance(obj, str):
        return scrub_text(obj)
    return copy.deepcopy(obj)


def _mask_whole(value: Any) -> Any:
    """Keep what says "there is no secret" (None, "", a flag); mask anything else."""
    return value if value is None or value == "" or isinstance(value, bool) else MASK


def known_secrets(extra_files: Iterable[Path] = ()) -> list[str]:
    """The secret values this process knows of, longest first, to scan outputs for.

    Values of environment variables with secret-looking names, passwords embedded in any
    environment value (a DATABASE_URL), and every string value of the given JSON files
    (the lab's secrets.json); a file that is not JSON is read as .pgpass lines.
    Values shorter than ``MIN_SECRET_LENGTH`` are ignored.
    """
    found: list[str] = []
    for name, value in os.environ.items():
        if SECRET_ENV.search(name.upper()):
            found.append(value)
        found += embedded_passwords(value)
    for path in extra_files:
        found += _secrets_in_file(Path(path))
    unique = {s for s in found if len(s) >= MIN_SECRET_LENGTH}
    return sorted(unique, key=lambda s: (-len(s), s))


def _secrets_in_file(path: Path) -> list[str]:
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        # .pgpass: hostname:port:database:username:password (with \: escapes)
        fields = [re.split(r"(?<!\\):", line) for line in text.splitlines() if line.strip() and line[0] != "#"]
        return [f[4].replace("\\:", ":").replace("\\\\", "\\") for f in fields if len(f) == 5]
    return list(_strings(data))


def _strings(data: Any) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, Mapping):
        for value in data.values():
            yield from _strings(value)
    elif isinstance(data, list):
        for value in data:
            yield from _strings(value)


def mask_hint(secret: str) -> str:
    """A hint at which secret was found that does not reveal it."""
    return f"{secret[:2]}{MASK} ({len(secret)} chars)"


def find_secrets(data: bytes, secrets: Iterable[str]) -> list[str]:
    """Masked hints of the ``secrets`` found in ``data``, in any form an output may hold them."""
    candidates = [s for s in dict.fromkeys(secrets) if s]
    if not candidates:
        return []
    views = list(_views(data))
    hints = []
    for secret in candidates:
        forms = _forms(secret)
        where = next((label for label, view in views if any(form in view for form in forms)), None)
        if where is not None:
            hints.append(mask_hint(secret) + (f" in {where}" if where else ""))
    return hints


def scan_for_secrets(directory: Path, secrets: list[str]) -> list[tuple[Path, str]]:
    """Every file under ``directory`` that holds one of ``secrets``, with a masked hint of which."""
    found = []
    for path in sorted(Path(directory).rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        found += [(path, hint) for hint in find_secrets(path.read_bytes(), secrets)]
    return found


def _forms(secret: str) -> set[bytes]:
    """How ``secret`` looks when written as text, JSON, HTML or in a URL."""
    texts = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        html.escape(secret),
        html.escape(secret, quote=False),
        quote(secret, safe=""),
        quote_plus(secret),
    }
    return {t.encode() for t in texts}


_BASE64_RUN = re.compile(rb"(?:[A-Za-z0-9+/]|\\n|\n|\r){64,}={0,2}")
_MAX_DECODED = 256 * 1024 * 1024


def _views(data: bytes, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """``data`` itself, then what it holds in encoded or compressed form, labelled."""
    yield "", data
    if depth >= 3:
        return
    for label, decoder in _DECODERS:
        try:
            inner = list(decoder(data))
        except Exception as exc:  # a damaged container is scanned as raw bytes only
            log.debug("could not decode %s: %s", label, exc)
            continue
        for part in inner:
            for sub_label, view in _views(part, depth + 1):
                yield (f"{label}/{sub_label}" if sub_label else label), view


def _base64_parts(data: bytes) -> Iterator[bytes]:
    for match in _BASE64_RUN.finditer(data):
        run = re.sub(rb"\\n|\n|\r", b"", match.group())
        try:
            yield base64.b64decode(run + b"=" * (-len(run) % 4))
        except (binascii.Error, ValueError):
            continue


def _png_texts(data: bytes) -> Iterator[bytes]:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"zTXt":
            yield zlib.decompress(chunk[chunk.index(b"\0") + 2 :])
        elif kind == b"iTXt":
            keyword_end = chunk.index(b"\0")
            compressed = chunk[keyword_end + 1] == 1
            rest = chunk[keyword_end + 3 :].split(b"\0", 2)[-1]  # skip language tag and translated keyword
            yield zlib.decompress(rest) if compressed else rest


def _gzip_member(data: bytes) -> Iterator[bytes]:
    if data.startswith(b"\x1f\x8b"):
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as member:
            yield member.read(_MAX_DECODED)


def _zip_members(data: bytes) -> Iterator[bytes]:
    if data.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                if info.file_size <= _MAX_DECODED:
                    yield archive.read(info)


def _parquet_values(data: bytes) -> Iterator[bytes]:
    if data.startswith(b"PAR1") and data.endswith(b"PAR1"):
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        for column in table.columns:
            yield "\n".join(str(v) for v in column.to_pylist()).encode()
        yield str(table.schema.metadata or {}).encode()


_DECODERS: tuple[tuple[str, Callable[[bytes], Iterator[bytes]]], ...] = (
    ("base64", _base64_parts),
    ("png text", _png_texts),
    ("gzip", _gzip_member),
    ("zip", _zip_members),
    ("parquet", _parquet_values),
)


class SecretFilter(logging.Filter):
    """Masks the given secrets, and passwords inside DSNs and URLs, in log records."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return scrub_text(text)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message (and traceback text) masked; never drop a record."""
        try:
            message = record.getMessage()
        except Exception:  # logging reports the formatting error itself
            return True
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


_installed: dict[str, Any] = {}


def install_log_filter(extra_files: Iterable[Path] = (), secrets: Iterable[str] | None = None) -> SecretFilter:
    """Mask known secrets in every log record; calling it again refreshes the secrets.

    A filter on the root logger alone would miss records from child loggers (logger filters
    do not apply to propagated records) and the last-resort handler, so the filter is also
    put on the root's handlers and applied by the record factory as each record is made.
    """
    uninstall_log_filter()
    secret_filter = SecretFilter(known_secrets(extra_files) if secrets is None else secrets)
    root = logging.getLogger()
    root.addFilter(secret_filter)
    for handler in root.handlers:
        handler.addFilter(secret_filter)
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        secret_filter.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed.update(filter=secret_filter, factory=factory, previous=previous)
    return secret_filter


def uninstall_log_filter() -> None:
    """Undo ``install_log_filter`` (for tests and long-lived kernels)."""
    if not _installed:
        return
    secret_filter = _installed["filter"]
    root = logging.getLogger()
    root.removeFilter(secret_filter)
    for handler in root.handlers:
        handler.removeFilter(secret_filter)
    if logging.getLogRecordFactory() is _installed["factory"]:
        logging.setLogRecordFactory(_installed["previous"])
    _installed.clear()
