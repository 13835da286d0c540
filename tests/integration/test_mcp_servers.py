"""Both MCP servers through the SDK's own client over real HTTP (`hal0 serve` on loopback)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.conftest import Server
from tests.integration.mcp_helpers import mcp_client, memory_on

MODES = ["legacy", "auto"]  # the 2025 handshake era and the SDK's default negotiation


@pytest.fixture
def hal0(start_server, tmp_path: Path) -> Server:
    return start_server(memory=memory_on(tmp_path), agents={"default_agent": "dflt"})


@pytest.mark.parametrize("mode", MODES)
def test_admin_tools_listed_and_called(hal0: Server, mode: str) -> None:
    async def run() -> None:
        async with mcp_client(f"{hal0.url}/mcp/admin", mode=mode) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert set(tools) == {"status", "list_models", "get_config", "list_approvals",
                                  "load_model", "unload_model", "reload_config"}
            assert tools["status"].annotations.read_only_hint is True
            assert tools["unload_model"].annotations.destructive_hint is True
            assert tools["load_model"].input_schema["required"] == ["model"]
            status = (await client.call_tool("status", {})).structured_content
            assert status["memory"] == {"enabled": True}
            assert status["models"][0]["id"] == "tiny" and "n_gpu_layers" in status["models"][0]
            assert {"version", "uptime_s", "bind", "queue_depth"} <= set(status)
            config = (await client.call_tool("get_config", {})).structured_content
            assert config["config"]["memory"]["enabled"] is True
            gated = await client.call_tool("load_model", {"model": "tiny"})  # privileged: queued for a human
            assert not gated.is_error and gated.structured_content["status"] == "pending"
            unknown = await client.call_tool("load_model", {"model": "nope"})  # impossible: refused at once, never queued
            assert unknown.is_error and "'nope' does not exist" in unknown.content[0].text
            uris = {str(resource.uri) for resource in (await client.list_resources()).resources}
            assert uris == {"hal0://status", "hal0://config"}
            text = (await client.read_resource("hal0://status")).contents[0].text
            assert json.loads(text)["version"] == status["version"]

    asyncio.run(run())


@pytest.mark.parametrize("mode", MODES)
def test_memory_tools_listed_and_called(hal0: Server, mode: str) -> None:
    async def run() -> None:
        async with mcp_client(f"{hal0.url}/mcp/memory", agent="alice", mode=mode) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert {"remember", "recall", "list", "get", "forget", "forget_all"} <= set(tools)
            assert tools["recall"].annotations.read_only_hint is True
            assert tools["forget_all"].annotations.destructive_hint is True
            assert tools["remember"].annotations.idempotent_hint is False
            item = (await client.call_tool("remember", {"text": "Ann likes green tea", "tags": ["tea"]})).structured_content
            hits = (await client.call_tool("recall", {"query": "green tea"})).structured_content["items"]
            assert [hit["id"] for hit in hits] == [item["id"]]
            assert (await client.call_tool("get", {"id": item["id"]})).structured_content["text"] == "Ann likes green tea"
            listed = (await client.call_tool("list", {"tag": "tea"})).structured_content
            assert [entry["id"] for entry in listed["items"]] == [item["id"]]
            own = await client.read_resource("hal0://memory/alice")
            assert item["id"] in own.contents[0].text
            assert (await client.call_tool("forget", {"id": item["id"]})).structured_content == {"deleted": item["id"]}
            gone = await client.call_tool("get", {"id": item["id"]})
            assert gone.is_error and "does not exist" in gone.content[0].text

    asyncio.run(run())


def test_rest_and_mcp_share_one_namespace_per_agent(hal0: Server) -> None:
    made = httpx.post(f"{hal0.url}/api/memory", json={"text": "shared fact"}, headers={"X-hal0-Agent": "bob"}).json()
    default = httpx.post(f"{hal0.url}/api/memory", json={"text": "default fact"}).json()

    async def run() -> None:
        async with mcp_client(f"{hal0.url}/mcp/memory", agent="bob") as client:
            assert (await client.call_tool("get", {"id": made["id"]})).structured_content["text"] == "shared fact"
            assert (await client.call_tool("get", {"id": default["id"]})).is_error
        async with mcp_client(f"{hal0.url}/mcp/memory") as client:  # no header: agents.default_agent
            assert (await client.call_tool("get", {"id": default["id"]})).structured_content["text"] == "default fact"
            with pytest.raises(MCPError, match="hal0://memory/dflt"):
                await client.read_resource("hal0://memory/bob")

    asyncio.run(run())


@pytest.mark.parametrize("mode", MODES)
def test_invalid_agent_header_is_a_protocol_error(hal0: Server, mode: str) -> None:
    async def run() -> None:
        async with mcp_client(f"{hal0.url}/mcp/memory", agent="not valid!", mode=mode) as client:
            with pytest.raises(MCPError, match="1 to 64 characters") as error:
                await client.call_tool("remember", {"text": "must never be stored"})
            assert error.value.code == -32602
    asyncio.run(run())
    database = hal0.config_path.parent / "mem" / "memory.db"  # refused before the store was even opened
    assert not database.exists() or b"must never be stored" not in database.read_bytes()


def test_exact_mount_paths_without_redirect(hal0: Server) -> None:
    for path in ("/mcp/admin", "/mcp/memory"):
        response = httpx.post(f"{hal0.url}{path}", json={}, headers={"Accept": "application/json, text/event-stream"})
        assert response.status_code not in (301, 302, 307, 308, 404), (path, response.status_code)


def test_memory_server_is_404_when_memory_is_off(start_server, tmp_path: Path) -> None:
    server = start_server()
    response = httpx.post(f"{server.url}/mcp/memory", json={}, headers={"Accept": "application/json, text/event-stream"})
    assert response.status_code == 404
    assert "memory.enabled: true" in response.json()["error"]["message"]

    async def run() -> None:
        async with mcp_client(f"{server.url}/mcp/admin") as client:
            status = (await client.call_tool("status", {})).structured_content
            assert status["memory"] == {"enabled": False}
    asyncio.run(run())


@pytest.mark.parametrize("mode", MODES)
def test_servers_advertise_what_they_have_and_refuse_what_they_do_not(hal0: Server, mode: str) -> None:
    """Issue 29 §7, against the conformance suite: no `prompts` capability without prompts, prompts/get of an
    unknown name is -32602 (it was code 0), and a cursor hal0 never issued is -32602 (it returned the whole list)."""
    async def run(path: str) -> None:
        async with mcp_client(f"{hal0.url}{path}", mode=mode) as client:
            capabilities = client.server_capabilities
            assert capabilities.prompts is None and capabilities.tools is not None and capabilities.resources is not None
            with pytest.raises(MCPError) as unknown:
                await client.get_prompt("no-such-prompt")
            assert unknown.value.error.code == -32602 and "no-such-prompt" in unknown.value.error.message
            for listing in (client.list_tools, client.list_resources, client.list_resource_templates, client.list_prompts):
                with pytest.raises(MCPError) as bad:
                    await listing(cursor="not-a-cursor", cache_mode="bypass")
                assert bad.value.error.code == -32602 and "cursor" in bad.value.error.message, listing
            assert (await client.list_tools()).tools  # without a cursor: the whole list
            assert (await client.list_prompts(cache_mode="bypass")).prompts == []

    for path in ("/mcp/admin", "/mcp/memory"):
        asyncio.run(run(path))
