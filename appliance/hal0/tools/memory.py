"""Memory tools: one namespace per agent, always the caller's own (`call.agent`).

No tool takes a namespace argument; that absence is the isolation guarantee seen from outside.
Store calls are short but blocking (SQLite), so they run in a worker thread, off the event loop.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from anyio import to_thread
from pydantic import Field

from hal0.agents.personas import persona_for
from hal0.memory import InvalidInputError, MemoryStore, Page
from hal0.memory.model import MAX_PAGE, MAX_TAGS, Limits, page_size
from hal0.memory.query import MAX_QUERY_CHARS, decode_cursor, has_words
from hal0.tools.spec import ToolContext, ToolSpec

# Each schema says what the tool takes (issue 29): a constrained model generates from it, so a value the schema
# allows and the store refuses (`{"text": ""}`) is an error the model cannot avoid. Only lengths and counts are
# used, which every validator and constraint engine reads alike; two rules are in words: text that is only
# whitespace, and the tag characters. They would need `pattern`, whose `\s` and `$` differ between regex
# dialects (JSON Schema's ECMA-262, Python's, Rust's) and whose anchoring differs between engines. Schemas are
# kept short: they are part of every prompt that offers these tools. memory.max_item_bytes, a live setting, is
# in the README.
Text = Annotated[str, Field(description="What to remember (not blank).", min_length=1)]
NewText = Annotated[str | None, Field(description="New text, not blank (omit to keep).", min_length=1)]
ItemId = Annotated[str, Field(description="Item id, as returned by remember, recall or list.", max_length=64)]
TagName = Annotated[str, Field(min_length=1, max_length=64)]
Tags = Annotated[list[TagName] | None, Field(description="Labels of A-Z a-z 0-9 _.:/@- to filter by, e.g. ['project-x'].",
                                            max_length=MAX_TAGS)]
Metadata = Annotated[dict[str, Any] | None, Field(description="Optional JSON object stored with the item.")]
Tag = Annotated[str | None, Field(description="Only items carrying this tag.", min_length=1)]
Limit = Annotated[int | None, Field(description=f"Page size, 1 to {MAX_PAGE} (default 20).", ge=1, le=MAX_PAGE)]
Cursor = Annotated[str | None, Field(description="next_cursor of the previous page, unchanged.")]
Query = Annotated[str, Field(description="Words to search for (BM25 ranked).", max_length=MAX_QUERY_CHARS)]


async def _store(call: ToolContext) -> MemoryStore:
    # Opening may create the database (first use after enabling), which is file I/O.
    return await to_thread.run_sync(call.services.memory.store)


def _limits(call: ToolContext) -> Limits:
    """The global memory limits, tightened by the caller's persona (agents.personas[].memory)."""
    limits = call.services.memory.limits()
    persona = persona_for(call.services.config.agents, call.agent)
    if persona is None:
        return limits
    own = persona.memory
    return Limits(
        max_items=min(limits.max_items, own.max_items or limits.max_items),
        max_item_bytes=min(limits.max_item_bytes, own.max_item_bytes or limits.max_item_bytes),
    )


async def remember(call: ToolContext, text: Text, tags: Tags = None, metadata: Metadata = None) -> dict[str, Any]:
    store = await _store(call)
    limits = _limits(call)
    item = await to_thread.run_sync(partial(store.add, call.agent, text, limits, tags=tags, metadata=metadata))
    return item.to_json()


async def recall(call: ToolContext, query: Query, tag: Tag = None, limit: Limit = None, cursor: Cursor = None) -> dict[str, Any]:
    if len(query) <= MAX_QUERY_CHARS and not has_words(query):
        # Nothing to match (punctuation alone, or nothing): no item, as for any query that matches none.
        page_size(limit)
        decode_cursor(cursor, "search")
        return Page([], None).to_json()
    store = await _store(call)
    page = await to_thread.run_sync(partial(store.search, call.agent, query, tag=tag, limit=limit, cursor=cursor))
    return page.to_json()


async def list_items(call: ToolContext, tag: Tag = None, limit: Limit = None, cursor: Cursor = None) -> dict[str, Any]:
    store = await _store(call)
    page = await to_thread.run_sync(partial(store.list, call.agent, tag=tag, limit=limit, cursor=cursor))
    return page.to_json()


async def get(call: ToolContext, id: ItemId) -> dict[str, Any]:
    store = await _store(call)
    return (await to_thread.run_sync(store.get, call.agent, id)).to_json()


async def update(call: ToolContext, id: ItemId, text: NewText = None,
                 tags: Tags = None, metadata: Metadata = None,
                 clear_metadata: Annotated[bool, Field(description="Remove the item's metadata (send no metadata with it).")] = False,
                 ) -> dict[str, Any]:
    # Absent and null arguments look the same here (MCP passes every parameter), so clearing is
    # its own flag rather than `metadata: null` silently meaning "leave as is".
    if clear_metadata and metadata is not None:
        raise InvalidInputError("send either metadata or clear_metadata, not both", "metadata")
    store = await _store(call)
    limits = _limits(call)
    item = await to_thread.run_sync(partial(
        store.update, call.agent, id, limits, text=text, tags=tags, metadata=metadata,
        replace_metadata=metadata is not None or clear_metadata,
    ))
    return item.to_json()


async def forget(call: ToolContext, id: ItemId) -> dict[str, Any]:
    store = await _store(call)
    await to_thread.run_sync(store.delete, call.agent, id)
    return {"deleted": id}


async def forget_all(call: ToolContext) -> dict[str, Any]:
    store = await _store(call)
    return {"deleted": await to_thread.run_sync(store.forget_all, call.agent), "agent": call.agent}


TOOLS = (
    ToolSpec("memory", "remember", "Remember", "Store a memory item (text, optional tags and metadata).",
             remember, read_only=False, destructive=False, idempotent=False),
    ToolSpec("memory", "recall", "Recall", "Full-text search of your memory, best match first (BM25).",
             recall, read_only=True, destructive=False, idempotent=True),
    ToolSpec("memory", "list", "List memory", "Your memory items, newest first, optionally by tag.",
             list_items, read_only=True, destructive=False, idempotent=True),
    ToolSpec("memory", "get", "Get item", "One memory item by id.",
             get, read_only=True, destructive=False, idempotent=True),
    ToolSpec("memory", "update", "Update item", "Change an item's text, tags or metadata.",
             update, read_only=False, destructive=True, idempotent=True),
    ToolSpec("memory", "forget", "Forget item", "Delete one memory item by id.",
             forget, read_only=False, destructive=True, idempotent=True),
    ToolSpec("memory", "forget_all", "Forget everything", "Delete every item in your memory namespace.",
             forget_all, read_only=False, destructive=True, idempotent=True, privileged=True),
)
