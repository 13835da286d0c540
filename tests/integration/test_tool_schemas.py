"""Every tool's input schema says what the tool accepts (issue 29 §7), through the MCP SDK's client.

A constrained model generates its arguments from the schema (the Agents SDK with gemma sent `{"text": ""}` to
remember, which its schema allowed and the store refused). So for each tool, boundary arguments are checked
against the schema it lists (jsonschema) and sent to it: the schema accepts them exactly when the tool does,
but for the two rules the schemas say in words (they would need `pattern`, which regex dialects and constraint
engines read differently): text that is only whitespace, and the tag characters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import Server
from tests.integration.mcp_helpers import mcp_client, memory_on

AGENTS = {"approvals": {"rules": [{"match": {"tool": "memory:*"}, "decision": "allow", "reason": "the test's own memory"}]}}
WHITESPACE = [" ", "\t\n", "\u3000", "\x1c"]  # str.strip() removes all of these (\x1c too)
TEXTS = ["", *WHITESPACE, "ok", " ok ", "\ufeff", "\u200b", "x" * 4000]
BAD_CHARACTERS: list[Any] = [["bad tag"], ["evil\n"]]
TAGS: list[Any] = [None, [], ["a" * 64], ["a" * 65], [""], *BAD_CHARACTERS, ["x"] * 32, [f"t{i}" for i in range(33)],
                   ["project-x", "me@box:1/2.3_4"]]
# What the schemas say in words, not keywords (see the module docstring): allowed by the schema, refused by the tool.
IN_WORDS = {f"{tool}({key}={value!r})" for tool in ("remember", "update") for key, values in (("text", WHITESPACE), ("tags", BAD_CHARACTERS))
            for value in values}


def cases(item: str) -> dict[str, list[dict[str, Any]]]:
    """Boundary arguments per tool; `item` is the id of a stored item (an unknown id is not found, a state, not a schema matter)."""
    return {
        "remember": [{"text": text} for text in TEXTS] + [{"text": "ok", "tags": tags} for tags in TAGS]
        + [{"text": "ok", "metadata": metadata} for metadata in (None, {}, {"a": [1, {"b": None}]})],
        "recall": [{"query": query} for query in ("", "!!!", "ok", "日本", "x" * 1000, "x" * 1001)]
        + [{"query": "ok", "limit": limit} for limit in (0, 1, 100, 101)] + [{"query": "ok", "tag": tag} for tag in ("", "x")],
        "list": [{}, {"limit": 0}, {"limit": 100}, {"limit": 101}, {"tag": ""}, {"tag": "x"}],
        "get": [{"id": item}, {"id": "x" * 65}],
        # (update's one cross-field rule, metadata or clear_metadata but not both, is in its description)
        "update": [{"id": item, "text": text} for text in TEXTS] + [{"id": item, "tags": tags} for tags in TAGS]
        + [{"id": item, "metadata": {"a": 1}}, {"id": item, "clear_metadata": True}, {"id": "x" * 65, "text": "ok"}],
        "forget": [{"id": "x" * 65}, {"id": item}],
        "forget_all": [{}],
        "list_approvals": [{}, {"state": "pending"}, {"state": "sleeping"}, {"limit": 0}, {"limit": 1000}, {"limit": 1001}],
    }


@pytest.fixture
def hal0(start_server: Callable[..., Server], tmp_path: Path) -> Server:
    return start_server(memory=memory_on(tmp_path, max_item_bytes=65536), agents=AGENTS)


def test_every_tool_schema_accepts_exactly_what_the_tool_accepts(hal0: Server) -> None:
    async def run() -> list[str]:
        disagreements = []
        async with mcp_client(f"{hal0.url}/mcp/memory", agent="schemas") as memory, \
                mcp_client(f"{hal0.url}/mcp/admin", agent="schemas") as admin:
            item = (await memory.call_tool("remember", {"text": "the item the id cases use"})).structured_content["id"]
            for client in (memory, admin):
                for tool in (await client.list_tools()).tools:
                    for arguments in cases(item).get(tool.name, []):
                        allowed = jsonschema.Draft202012Validator(tool.input_schema).is_valid(arguments)
                        result = await client.call_tool(tool.name, arguments)
                        if allowed == result.is_error:
                            key = list(arguments)[-1] if arguments else ""  # each case varies its last argument
                            disagreements.append(f"{tool.name}({key}={arguments.get(key)!r})" if key else f"{tool.name}()")
            listed = {tool.name for client in (memory, admin) for tool in (await client.list_tools()).tools}
            assert {"remember", "recall", "list", "get", "update", "forget", "forget_all", "list_approvals"} <= listed
        return disagreements

    disagreements = asyncio.run(run())
    assert set(disagreements) == IN_WORDS, sorted(set(disagreements) ^ IN_WORDS)
