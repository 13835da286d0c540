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


# ---- issue 29 §4: the memory resource template and GET /api/approvals go through the door too ----

DOOR_AGENTS = {
    "default_agent": "guest",
    "personas": [
        {"id": "writer", "tools": ["memory:remember"]},  # may store, may not list
        {"id": "denied", "tools": ["memory:*"]},  # listing denied by a rule
        {"id": "metered", "tools": ["memory:*"], "limits": {"requests_per_minute": 4}},
        {"id": "guest", "tools": ["memory:*"]},  # no admin:list_approvals
        {"id": "ops", "tools": ["admin:list_approvals", "memory:*"]},
    ],
    "approvals": {"rules": [
        {"match": {"agent": "denied", "tool": "memory:list"}, "decision": "deny", "reason": "no listing for denied"},
        {"match": {"tool": "memory:remember"}, "decision": "allow", "reason": "own memory"},
    ]},
}


@pytest.fixture
def doors(start_server: Callable[..., Server], tmp_path: Path) -> Server:
    agents = {**DOOR_AGENTS, "approvals": {**DOOR_AGENTS["approvals"], "path": str(tmp_path / "approvals.db")}}
    return start_server(agents=agents, memory=memory_on(tmp_path))


def _namespace(server: Server, agent: str, reads: int = 1) -> tuple[set[str], list[str]]:
    """resources/templates/list as `agent`, then `reads` reads of its own hal0://memory/{agent}."""
    async def run() -> tuple[set[str], list[str]]:
        async with mcp_client(f"{server.url}/mcp/memory", agent=agent) as client:
            templates = {item.uri_template for item in (await client.list_resource_templates()).resource_templates}
            outcomes = []
            for _ in range(reads):
                try:
                    outcomes.append((await client.read_resource(f"hal0://memory/{agent}")).contents[0].text)
                except MCPError as error:
                    outcomes.append(f"refused: {error}")
            return templates, outcomes

    return asyncio.run(run())


def test_the_memory_resource_template_answers_like_memory_list(doors: Server) -> None:
    for agent in ("writer", "denied", "metered", "guest"):
        stored = httpx.post(f"{doors.url}/api/memory", json={"text": f"secret of {agent}"}, headers={"X-hal0-Agent": agent})
        assert stored.status_code == 201, stored.text
    for agent, status, why in (("writer", 403, "not in persona 'writer'"), ("denied", 403, "no listing for denied")):
        rest = httpx.get(f"{doors.url}/api/memory", headers={"X-hal0-Agent": agent})
        assert rest.status_code == status and why in rest.json()["error"]["message"], rest.text
        templates, reads = _namespace(doors, agent)
        assert templates == set(), agent  # not listed where memory:list may not run
        assert reads[0].startswith("refused:") and "memory:list" in reads[0] and why in reads[0], reads
        assert f"secret of {agent}" not in reads[0]

    # the quota counts resource reads as calls of memory:list: remember + 1 list over REST, then 5 reads, 4 a minute
    assert httpx.get(f"{doors.url}/api/memory", headers={"X-hal0-Agent": "metered"}).status_code == 200
    templates, reads = _namespace(doors, "metered", reads=5)
    assert templates == {"hal0://memory/{agent}"}
    served = [text for text in reads if not text.startswith("refused:")]
    assert len(served) == 2 and "secret of metered" in served[0], reads
    assert all("requests_per_minute" in text for text in reads[2:]), reads
    assert httpx.get(f"{doors.url}/api/memory", headers={"X-hal0-Agent": "metered"}).status_code == 429

    # allowed: the caller's own namespace, as memory:list answers it
    templates, reads = _namespace(doors, "guest")
    assert templates == {"hal0://memory/{agent}"}
    assert json.loads(reads[0]) == httpx.get(f"{doors.url}/api/memory", headers={"X-hal0-Agent": "guest"}).json()


def test_get_api_approvals_asks_the_door_for_admin_list_approvals(doors: Server) -> None:
    queued = httpx.delete(f"{doors.url}/api/memory", headers={"X-hal0-Agent": "guest"})  # forget_all: asks a human
    assert queued.status_code == 202, queued.text
    approval = queued.json()["approval_id"]
    refused = httpx.get(f"{doors.url}/api/approvals", headers={"X-hal0-Agent": "guest"})
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "tool_not_in_persona" and "admin:list_approvals" in refused.json()["error"]["message"]
    # its own approval's status_url stays readable: that is how an agent learns the outcome it asked for
    assert httpx.get(f"{doors.url}/api/approvals/{approval}", headers={"X-hal0-Agent": "guest"}).json()["state"] == "pending"
    # a persona with the tool lists its own; a human lists all
    assert httpx.get(f"{doors.url}/api/approvals", headers={"X-hal0-Agent": "ops"}).json() == {"approvals": [], "pending": 0}
    assert [item["id"] for item in httpx.get(f"{doors.url}/api/approvals").json()["approvals"]] == [approval]
