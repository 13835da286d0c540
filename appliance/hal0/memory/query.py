"""Turning user text into an FTS5 query, and opaque pagination cursors.

User text never reaches FTS5's query language directly: a stray quote, `NEAR` or `col:` would be a
syntax error or, worse, a different query. Each word is quoted as a literal term and the terms are
OR-ed, so a natural-language recall ("what colour does Ann like") matches items sharing any word,
ranked by BM25.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from hal0.memory.errors import InvalidInputError

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 32
MAX_QUERY_CHARS = 1000


def has_words(text: str) -> bool:
    """Whether `text` has anything to search for (a letter or digit); punctuation alone matches no item."""
    return _WORD.search(text) is not None


def query_words(text: str) -> list[str]:
    """The words of a recall, each an FTS5 phrase of its own, in order, without repeats."""
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidInputError(f"q is longer than {MAX_QUERY_CHARS} characters", "q")
    words = list(dict.fromkeys(word.lower() for word in _WORD.findall(text)))[:MAX_TERMS]
    if not words:
        raise InvalidInputError("q has no searchable words (letters or digits)", "q")
    return words


def fts_query(words: list[str]) -> str:
    return " OR ".join(f'"{word}"' for word in words)


def encode_cursor(kind: str, value: int) -> str:
    raw = json.dumps({"k": kind, "v": value}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# A cursor is client input: a forged position must stay inside SQLite's signed 64-bit integers, with
# room for the page size added to a search offset.
MAX_POSITION = 2**62


def decode_cursor(cursor: str | None, kind: str) -> int | None:
    """The position a cursor from the same kind of listing points at; None starts at the top."""
    if not cursor:
        return None
    try:
        if len(cursor) > 256:  # ours are under 40 characters
            raise ValueError
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        value = data["v"]
        if data["k"] != kind or not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < MAX_POSITION:
            raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        raise InvalidInputError("cursor is not valid for this listing; pass next_cursor unchanged", "cursor") from None
    return value
