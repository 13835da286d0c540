"""The approval queue cannot be flooded, over real HTTP and MCP against `hal0 serve` (issue 20): 200 load_model
calls naming models that do not exist queued 200 pending approvals in 0.3 s. Now arguments are checked before
anything is queued, and one agent may have agents.approvals.max_pending_per_agent distinct calls waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Server
from tests.integration.mcp_helpers import mcp_client, memory_on

AGENT = "X-hal0-Agent"
OPS = {"personas": [{"id": "ops", "tools": ["admin:*"]}]}


def _pending(server: Server) -> int:
    return httpx.get(f"{server.url}/api/approvals").json()["pending"]


def test_unknown_models_fail_at_once_and_queue_nothing(start_server: Callable[..., Server]) -> None:
    server = start_server(agents=OPS)

    async def run() -> list[Any]:
        async with mcp_client(f"{server.url}/mcp/admin", agent="ops") as client:
            results = [await client.call_tool(tool, {"model": f"no-such-model-{i}"})
                       for i in range(20) for tool in ("load_model", "unload_model")]
            results.append(await client.call_tool("unload_model", {"model": "tiny"}))  # a real one still asks a human
            return results

    *refused, real = asyncio.run(run())
    assert all(result.is_error for result in refused)
    assert all("no-such-model" in result.content[0].text for result in refused)
    assert not real.is_error and real.structured_content["status"] == "pending"
    assert _pending(server) == 1


def _remember(server: Server, agent: str, text: str) -> httpx.Response:
    return httpx.post(f"{server.url}/api/memory", json={"text": text}, headers={AGENT: agent})


def test_pending_approvals_are_capped_per_agent(start_server: Callable[..., Server], tmp_path: Path) -> None:
    rules = [{"match": {"tool": "memory:remember"}, "decision": "ask", "reason": "every write is reviewed here"}]
    server = start_server(memory=memory_on(tmp_path), agents={"approvals": {"max_pending_per_agent": 3, "rules": rules}})
    queued = [_remember(server, "a", f"fact {i}") for i in range(3)]
    assert all(response.json().get("status") == "pending" for response in queued), [r.text for r in queued]
    fourth = _remember(server, "a", "fact 3")
    assert fourth.status_code == 429, fourth.text
    error = fourth.json()["error"]
    assert error["code"] == "too_many_pending" and "agents.approvals.max_pending_per_agent" in error["message"]
    again = _remember(server, "a", "fact 0")  # an identical pending call collapses: it never counts twice
    assert again.json()["status"] == "pending" and again.json()["new"] is False
    assert _remember(server, "b", "b's fact").json()["status"] == "pending"  # another agent has its own room
    # a human clears one: room for one more
    denied = httpx.post(f"{server.url}/api/approvals/{queued[0].json()['approval_id']}/deny")
    assert denied.status_code == 200
    assert _remember(server, "a", "fact 3").json()["status"] == "pending"
    assert _pending(server) == 4


def test_a_burst_cannot_overshoot_the_cap(start_server: Callable[..., Server], tmp_path: Path) -> None:
    rules = [{"match": {"tool": "memory:remember"}, "decision": "ask", "reason": "reviewed"}]
    server = start_server(memory=memory_on(tmp_path), agents={"approvals": {"max_pending_per_agent": 3, "rules": rules}})

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [client.post(f"{server.url}/api/memory", json={"text": f"burst {i}"}, headers={AGENT: "c"}) for i in range(20)]
            return [response.status_code for response in await asyncio.gather(*calls)]

    statuses = asyncio.run(burst())
    assert statuses.count(429) == 17, statuses
    assert _pending(server) == 3
