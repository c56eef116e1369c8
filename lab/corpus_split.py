"""Recursive character splitting, behaving like LangChain's ``RecursiveCharacterTextSplitter``.

Defaults match the users' ingestion: separators ``["\\n\\n", "\\n", " ", ""]``, ``chunk_size=1000``,
``chunk_overlap=200``, length measured with ``len``, each separator kept at the start of the piece
that follows it, and chunks stripped of surrounding whitespace.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SEPARATORS: tuple[str, ...] = ("\n\n", "\n", " ", "")
CHUNK_SIZE = 1000
CHUNK_OVERLAP = 200


def _pieces(text: str, separator: str) -> list[str]:
    """Cut ``text`` before every ``separator`` (the separator stays with the piece after it)."""
    if not separator:
        return list(text)
    parts = re.split(f"({re.escape(separator)})", text)
    pieces = [parts[0]] + [parts[i] + parts[i + 1] for i in range(1, len(parts), 2)]
    return [p for p in pieces if p]


def _merge(pieces: Sequence[str], chunk_size: int, chunk_overlap: int) -> list[str]:
    """Greedily join pieces into chunks of at most ``chunk_size``, carrying up to ``chunk_overlap`` over."""
    chunks: list[str] = []
    window: list[str] = []
    total = 0
    for piece in pieces:
        size = len(piece)
        if window and total + size > chunk_size:
            joined = "".join(window).strip()
            if joined:
                chunks.append(joined)
            # Drop pieces from the front until what is left fits the overlap and leaves room for `piece`.
            while window and (total > chunk_overlap or total + size > chunk_size):
                total -= len(window.pop(0))
        window.append(piece)
        total += size
    joined = "".join(window).strip()
    if joined:
        chunks.append(joined)
    return chunks


def split_text(
    text: str,
    chunk_size: int = CHUNK_SIZE,
    chunk_overlap: int = CHUNK_OVERLAP,
    separators: Sequence[str] = SEPARATORS,
) -> list[str]:
    """Split ``text`` into chunks of at most ``chunk_size`` characters with up to ``chunk_overlap`` overlap.

    Args:
        text: The text to split.
        chunk_size: Maximum chunk length in characters.
        chunk_overlap: Maximum number of characters shared by consecutive chunks.
        separators: Separators tried in order; the first one found in ``text`` is used, and pieces
            still too long are split again with the separators after it.

    Returns:
        The chunks, in text order.
    """
    if chunk_overlap > chunk_size:
        raise ValueError(f"chunk_overlap ({chunk_overlap}) must not exceed chunk_size ({chunk_size})")
    separator, rest = separators[-1], ()
    for i, candidate in enumerate(separators):
        if candidate == "":
            separator, rest = "", ()
            break
        if candidate in text:
            separator, rest = candidate, tuple(separators[i + 1 :])
            break
    chunks: list[str] = []
    pending: list[str] = []
    for piece in _pieces(text, separator):
        if len(piece) < chunk_size:
            pending.append(piece)
            continue
        if pending:
            chunks.extend(_merge(pending, chunk_size, chunk_overlap))
            pending = []
        if rest:
            chunks.extend(split_text(piece, chunk_size, chunk_overlap, rest))
        else:
            chunks.append(piece)
    if pending:
        chunks.extend(_merge(pending, chunk_size, chunk_overlap))
    return chunks
