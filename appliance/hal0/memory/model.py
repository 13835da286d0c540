"""Memory items, pages and limits: plain values, shared by the store, REST and MCP."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hal0.memory.errors import InvalidInputError

TAG_PATTERN = re.compile(r"^[A-Za-z0-9_.:/@-]{1,64}$")
MAX_TAGS = 32
MAX_PAGE = 100
DEFAULT_PAGE = 20


@dataclass(frozen=True)
class Limits:
    max_items: int
    max_item_bytes: int


@dataclass(frozen=True)
class Item:
    id: str
    text: str
    tags: tuple[str, ...]
    metadata: dict[str, Any] | None
    created: float
    updated: float
    score: float | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "text": self.text,
            "tags": list(self.tags),
            "metadata": self.metadata,
            "created": _iso(self.created),
            "updated": _iso(self.updated),
        }
        if self.score is not None:
            # FTS5's bm25() is lower-is-better; clients expect higher-is-better, so flip the sign.
            body["score"] = round(-self.score, 6)
        return body


@dataclass(frozen=True)
class Page:
    items: list[Item]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"items": [item.to_json() for item in self.items], "next_cursor": self.next_cursor}


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clean_tags(tags: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Validated tags, duplicates dropped, order kept."""
    if tags is None:
        return ()
    if isinstance(tags, str) or not isinstance(tags, list | tuple):
        raise InvalidInputError("tags must be a list of strings", "tags")
    seen: dict[str, None] = {}
    for tag in tags:
        # fullmatch: with match, the pattern's `$` would also accept a trailing newline ("evil\n").
        if not isinstance(tag, str) or not TAG_PATTERN.fullmatch(tag):
            raise InvalidInputError(f"tag {tag!r} must match {TAG_PATTERN.pattern}", "tags")
        seen.setdefault(tag, None)
    if len(seen) > MAX_TAGS:
        raise InvalidInputError(f"at most {MAX_TAGS} tags per item, got {len(seen)}", "tags")
    return tuple(seen)


def page_size(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_PAGE
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(f"limit must be between 1 and {MAX_PAGE}, got {limit}", "limit")
    return limit
