"""Every door asks the one policy (tools.policy.evaluate) and tells the truth, over real HTTP.

admin:list_approvals lists the real queue (as GET /api/approvals does for the same agent), the MCP
resources are governed by the tool they mirror, and MCP, REST, the dashboard and `hal0 approvals
explain` give the same decision for the same call.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.conftest import Server
from tests.integration.mcp_helpers import mcp_client, memory_on

AGENTS = {
    "default_agent": "guest",
    "personas": [
        {"id": "ops", "tools": ["admin:*", "memory:*"]},
        {"id": "watcher", "tools": ["admin:status", "admin:list_approvals"]},
        {"id": "guest", "tools": ["memory:*"]},
    ],
    "approvals": {"rules": [
        {"match": {"agent": "ops", "tool": "admin:get_config"}, "decision": "deny", "reason": "ops reads config on the box"},
        {"match": {"tool": "admin:unload_model"}, "decision": "ask", "reason": "unloading stops inference"},
        {"match": {"tool": "memory:remember"}, "decision": "allow", "reason": "own memory"},
    ]},
}


@pytest.fixture
def hal0(start_server: Callable[..., Server], tmp_path: Path, tiny_model: Path) -> Server:
    agents = {**AGENTS, "approvals": {**AGENTS["approvals"], "path": str(tmp_path / "approvals.db")}}
    # Two configured models: an approval names a model that exists (an unknown one is refused before queueing).
    models = [{"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 1024, "n_threads": 1},
              {"id": "other", "path": str(tiny_model), "load": "on_demand", "n_ctx": 1024, "n_threads": 1}]
    return start_server(agents=agents, memory=memory_on(tmp_path), models=models)


def admin(server: Server, agent: str, work: Callable[[Any], Any]) -> Any:
    async def run() -> Any:
        async with mcp_client(f"{server.url}/mcp/admin", agent=agent) as client:
            return await work(client)

    return asyncio.run(run())


def test_list_approvals_reads_the_real_queue_like_rest(hal0: Server) -> None:
    async def enqueue(client: Any) -> list[str]:
        ids = []
        for model in ("tiny", "other"):  # two different calls: two pending approvals
            result = (await client.call_tool("unload_model", {"model": model})).structured_content
            assert result["status"] == "pending"
            ids.append(result["approval_id"])
        return ids

    ids = admin(hal0, "ops", enqueue)
    httpx.post(f"{hal0.url}/api/approvals/{ids[0]}/deny", json={"note": "not now"}).raise_for_status()

    async def read(client: Any) -> dict[str, Any]:
        return {
            "all": (await client.call_tool("list_approvals", {})).structured_content,
            "pending": (await client.call_tool("list_approvals", {"state": "pending"})).structured_content,
            "denied": (await client.call_tool("list_approvals", {"state": "denied"})).structured_content,
        }

    listed = admin(hal0, "ops", read)
    assert {item["id"] for item in listed["all"]["approvals"]} == set(ids)
    assert [item["id"] for item in listed["pending"]["approvals"]] == [ids[1]]
    assert [item["id"] for item in listed["denied"]["approvals"]] == [ids[0]]
    assert listed["denied"]["approvals"][0]["note"] == "not now"
    assert listed["all"]["pending"] == 1
    rest = httpx.get(f"{hal0.url}/api/approvals", headers={"X-hal0-Agent": "ops"}).json()
    assert rest == listed["all"]  # the same document for the same agent
    rest_pending = httpx.get(f"{hal0.url}/api/approvals", params={"state": "pending"}, headers={"X-hal0-Agent": "ops"}).json()
    assert rest_pending == listed["pending"]

    # Another agent sees none of ops's approvals, over MCP as over REST.
    theirs = admin(hal0, "watcher", lambda client: client.call_tool("list_approvals", {}))
    assert theirs.structured_content == {"approvals": [], "pending": 0}
    assert httpx.get(f"{hal0.url}/api/approvals", headers={"X-hal0-Agent": "watcher"}).json() == {"approvals": [], "pending": 0}
    bad = admin(hal0, "ops", lambda client: client.call_tool("list_approvals", {"state": "sleeping"}))
    assert bad.is_error and "pending" in bad.content[0].text


def test_resources_follow_the_tool_they_mirror(hal0: Server) -> None:
    async def look(client: Any) -> tuple[set[str], dict[str, str]]:
        listed = {str(resource.uri) for resource in (await client.list_resources()).resources}
        reads: dict[str, str] = {}
        for uri in ("hal0://status", "hal0://config"):
            try:
                reads[uri] = (await client.read_resource(uri)).contents[0].text
            except MCPError as error:
                reads[uri] = f"refused: {error}"
        return listed, reads

    # watcher may use admin:status but not admin:get_config: one resource, the other refused.
    listed, reads = admin(hal0, "watcher", look)
    assert listed == {"hal0://status"}
    assert json.loads(reads["hal0://status"])["agent"] == "watcher"  # read as the caller, not the default agent
    assert reads["hal0://config"].startswith("refused:")
    assert "admin:get_config" in reads["hal0://config"] and "persona 'watcher'" in reads["hal0://config"]

    # guest (the default persona: memory only) gets neither, with or without the header.
    for agent in ("guest", "stranger"):
        listed, reads = admin(hal0, agent, look)
        assert listed == set(), agent
        assert all(text.startswith("refused:") for text in reads.values()), reads

    # ops may use every admin tool, but a deny rule covers get_config: the resource follows the rule.
    listed, reads = admin(hal0, "ops", look)
    assert listed == {"hal0://status"}
    assert "denied by agents.approvals.rules[0]" in reads["hal0://config"]


def explain(server: Server, agent: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "hal0.cli", "approvals", "explain", "--agent", agent, "--tool", tool,
         "--args", json.dumps(args), "--config", str(server.config_path), "--json"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    return json.loads(result.stdout)


CALLS = [
    ("ops", "admin:status", {}),
    ("ops", "admin:get_config", {}),
    ("ops", "admin:unload_model", {"model": "tiny"}),
    ("watcher", "admin:unload_model", {"model": "tiny"}),
    ("guest", "memory:remember", {"text": "x"}),
    ("watcher", "memory:remember", {"text": "x"}),
]


@pytest.mark.parametrize(("agent", "tool", "args"), CALLS)
def test_every_door_gives_the_same_decision(hal0: Server, agent: str, tool: str, args: dict[str, Any]) -> None:
    expected = explain(hal0, agent, tool, args)
    server_name, name = tool.split(":")

    async def mcp(client: Any) -> tuple[bool, Any]:
        visible = name in {listed.name for listed in (await client.list_tools()).tools}
        return visible, await client.call_tool(name, args)

    async def run() -> tuple[bool, Any]:
        async with mcp_client(f"{hal0.url}/mcp/{server_name}", agent=agent) as client:
            return await mcp(client)

    visible, result = asyncio.run(run())
    verdict = expected["decision"]
    assert visible == (verdict != "refused")
    if verdict in ("refused", "deny"):
        assert result.is_error and expected["reason"] in result.content[0].text
    elif verdict == "ask":
        assert result.structured_content["status"] == "pending" and result.structured_content["rule"] == expected["rule"]
    else:
        assert not result.is_error and result.structured_content.get("status") != "pending"

    # The dashboard's policy view names the same verdict and rule for this agent.
    page = httpx.get(f"{hal0.url}/ui/mcp", params={"agent": agent}).text
    row = page.split(f'id="tool-{server_name}-{name}"', 1)[1].split("</tr>", 1)[0]
    shown = "hidden" if verdict == "refused" else verdict
    assert f"verdict-{shown}" in row
    if verdict != "refused":
        assert expected["rule"] in row

    # REST (memory routes run the same gated tools): the same outcome as an HTTP status.
    if tool == "memory:remember":
        response = httpx.post(f"{hal0.url}/api/memory", json=args, headers={"X-hal0-Agent": agent})
        assert response.status_code == {"allow": 201, "refused": 403, "deny": 403, "ask": 202}.get(verdict, 201), response.text
        if verdict == "refused":
            assert response.json()["error"]["code"] == "tool_not_in_persona"
