"""Agents and approvals end to end over real HTTP: MCP agent -> pending -> human (CLI) -> the tool runs once.

Also: deny, expiry, agents cannot approve, persona gating of MCP tools, personas applied to chat,
and the crash tests (SIGKILL between enqueue and approve, between approve and execute, and while
executing): no approval lost, none executed twice.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.integration.mcp_helpers import mcp_client

AGENTS = {
    "default_agent": "guest",
    "personas": [
        {"id": "ops", "tools": ["admin:*"], "system_prompt": "You are the ops agent of a hal0 box.", "params": {"max_tokens": 7},
         "limits": {"max_tokens": 20, "max_temperature": 1.0}},
        {"id": "guest", "tools": ["admin:status"]},
    ],
}


def agents_with(tmp_path: Path, **approvals: Any) -> dict[str, Any]:
    return {**AGENTS, "approvals": {"path": str(tmp_path / "approvals.db"), **approvals}}


def call_admin(server: Server, agent: str, name: str, arguments: dict[str, Any]) -> Any:
    async def run() -> Any:
        async with mcp_client(f"{server.url}/mcp/admin", agent=agent) as client:
            return await client.call_tool(name, arguments)

    return asyncio.run(run())


def list_admin(server: Server, agent: str) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async with mcp_client(f"{server.url}/mcp/admin", agent=agent) as client:
            return {tool.name: tool for tool in (await client.list_tools()).tools}

    return asyncio.run(run())


def cli(server: Server, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hal0.cli", "approvals", *argv, "--url", server.url],
                          capture_output=True, text=True, check=False, timeout=60)


def outcome(server: Server, approval_id: str, agent: str = "ops") -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/approvals/{approval_id}", headers={"X-hal0-Agent": agent})
    assert response.status_code == 200, response.text
    return response.json()


def executions(record: dict[str, Any]) -> int:
    return sum(1 for entry in record["audit"] if entry["action"] == "execute")


def test_gated_call_pending_then_approved_by_the_cli_runs_once(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server(agents=agents_with(tmp_path))
    first = call_admin(server, "ops", "unload_model", {"model": "tiny"})
    pending = first.structured_content
    assert not first.is_error and pending["status"] == "pending" and pending["rule"] == "agents.approvals.rules[4]"
    again = call_admin(server, "ops", "unload_model", {"model": "tiny"}).structured_content
    assert again["approval_id"] == pending["approval_id"] and again["new"] is False  # identical calls collapse
    assert httpx.get(f"{server.url}/health").json()["models"][0]["state"] == "ready"  # nothing ran yet

    listed = cli(server, "list", "--state", "pending")
    assert listed.returncode == 0 and pending["approval_id"] in listed.stdout and "unload_model" in listed.stdout
    approved = cli(server, "approve", pending["approval_id"], "--note", "maintenance", "--by", "ann")
    assert approved.returncode == 0, approved.stderr
    assert f"{pending['approval_id']}: executed" in approved.stdout

    record = outcome(server, pending["approval_id"])
    assert record["state"] == "executed" and record["result"]["changed"] is True and record["decided_by"] == "ann"
    assert executions(record) == 1
    assert httpx.get(f"{server.url}/health").json()["models"][0]["state"] == "unloaded"
    again = cli(server, "approve", pending["approval_id"])
    assert again.returncode == 1 and "409" in again.stderr and "not pending" in again.stderr
    shown = cli(server, "show", pending["approval_id"])
    assert "approve pending -> approved (maintenance)" in shown.stdout


def test_denied_call_never_runs(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server(agents=agents_with(tmp_path))
    pending = call_admin(server, "ops", "unload_model", {"model": "tiny"}).structured_content
    denied = cli(server, "deny", pending["approval_id"], "--note", "not now")
    assert denied.returncode == 0 and "denied" in denied.stdout
    record = outcome(server, pending["approval_id"])
    assert record["state"] == "denied" and record["note"] == "not now" and executions(record) == 0
    assert httpx.get(f"{server.url}/health").json()["models"][0]["state"] == "ready"


def test_unapproved_call_expires(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server(agents=agents_with(tmp_path, pending_ttl="1s"))
    pending = call_admin(server, "ops", "unload_model", {"model": "tiny"}).structured_content
    time.sleep(1.2)
    record = outcome(server, pending["approval_id"])
    assert record["state"] == "expired" and executions(record) == 0
    late = httpx.post(f"{server.url}/api/approvals/{pending['approval_id']}/approve")
    assert late.status_code == 409


def test_agents_cannot_approve_and_cannot_see_others_approvals(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server(agents=agents_with(tmp_path))
    pending = call_admin(server, "ops", "unload_model", {"model": "tiny"}).structured_content
    refused = httpx.post(f"{server.url}/api/approvals/{pending['approval_id']}/approve", headers={"X-hal0-Agent": "ops"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "agents_cannot_decide"
    assert httpx.get(f"{server.url}/api/approvals/{pending['approval_id']}", headers={"X-hal0-Agent": "guest"}).status_code == 404
    # guest's persona has no admin:list_approvals, so the listing is refused (issue 29) rather than empty
    listing = httpx.get(f"{server.url}/api/approvals", headers={"X-hal0-Agent": "guest"})
    assert listing.status_code == 403 and listing.json()["error"]["code"] == "tool_not_in_persona"
    assert "approve" not in list_admin(server, "ops") and "deny" not in list_admin(server, "ops")
    audit = httpx.get(f"{server.url}/api/audit").json()["audit"]
    assert [entry["action"] for entry in audit] == ["request"]


def test_persona_filters_mcp_tools_and_refuses_others(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server(agents=agents_with(tmp_path))
    assert set(list_admin(server, "stranger")) == {"status"}  # unknown agents get the default persona
    ops_tools = list_admin(server, "ops")
    assert "needs a human's approval" in ops_tools["unload_model"].description
    assert "policy" not in ops_tools["status"].description
    refused = call_admin(server, "stranger", "unload_model", {"model": "tiny"})
    assert refused.is_error
    assert "not in persona 'guest''s tools (admin:status)" in refused.content[0].text


def test_persona_applies_to_chat(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server(agents=agents_with(tmp_path))
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    plain = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers={"X-hal0-Agent": "guest"}, timeout=60).json()
    ops = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers={"X-hal0-Agent": "ops"}, timeout=60).json()
    # The ops persona's system prompt comes first (more prompt tokens) and its max_tokens default applies.
    assert ops["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 8
    assert ops["usage"]["completion_tokens"] <= 7 + 3
    over = httpx.post(f"{server.url}/v1/chat/completions", json={**body, "max_tokens": 50}, headers={"X-hal0-Agent": "ops"})
    assert over.status_code == 400 and "limit of 20" in over.json()["error"]["message"]
    bad = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers={"X-hal0-Agent": "no spaces"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_agent_id"


def test_explain_names_the_rule(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hal0.cli", "approvals", "explain", "--agent", "assistant", "--tool", "memory:forget_all",
         "--config", str(Path(__file__).parents[2] / "config" / "hal0.yaml")],
        capture_output=True, text=True, check=True,
    )
    assert result.stdout.startswith("ask: forgetting a whole namespace cannot be undone")
    assert "agents.approvals.rules[6]" in result.stdout


# -- crash tests: SIGKILL at the worst moments --------------------------------------------------

@pytest.mark.parametrize("fault", ["", "kill-after-approve"])
def test_kill_9_loses_no_approval_and_runs_none_twice(start_server: Callable[..., Server], tmp_path: Path, fault: str) -> None:
    agents = agents_with(tmp_path)
    server = start_server(agents=agents, env={"HAL0_FAULT": fault})
    pending = call_admin(server, "ops", "unload_model", {"model": "tiny"}).structured_content
    if not fault:
        server.process.kill()  # between enqueue and approve
        server.process.wait()
        server = start_server(agents=agents)
        assert outcome(server, pending["approval_id"])["state"] == "pending"
        httpx.post(f"{server.url}/api/approvals/{pending['approval_id']}/approve", timeout=30)
    else:
        with pytest.raises(httpx.TransportError):  # the server SIGKILLs itself right after the approval commits
            httpx.post(f"{server.url}/api/approvals/{pending['approval_id']}/approve", timeout=30)
        assert server.process.wait(10) == -9
        server = start_server(agents=agents)  # start-up resumes the approved, never-started call
    deadline = time.monotonic() + 10
    while outcome(server, pending["approval_id"])["state"] != "executed":
        assert time.monotonic() < deadline, outcome(server, pending["approval_id"])
        time.sleep(0.1)
    record = outcome(server, pending["approval_id"])
    assert executions(record) == 1
    assert httpx.get(f"{server.url}/health").json()["models"][0]["state"] == "unloaded"


def test_kill_9_while_executing_marks_it_failed_not_rerun(start_server: Callable[..., Server], tmp_path: Path) -> None:
    agents = agents_with(tmp_path)
    server = start_server(agents=agents, env={"HAL0_FAULT": "kill-after-claim"})
    pending = call_admin(server, "ops", "unload_model", {"model": "tiny"}).structured_content
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{server.url}/api/approvals/{pending['approval_id']}/approve", timeout=30)
    server.process.wait(10)
    server = start_server(agents=agents)
    record = outcome(server, pending["approval_id"])
    assert record["state"] == "failed" and "not re-run" in record["error"]
    assert executions(record) == 1
    assert httpx.get(f"{server.url}/health").json()["models"][0]["state"] == "ready"


def test_persona_memory_limits_tighten_the_global_ones(start_server: Callable[..., Server], tmp_path: Path) -> None:
    agents = {"personas": [{"id": "tiny-mind", "tools": ["memory:*"], "memory": {"max_items": 2}}],
              "approvals": {"path": str(tmp_path / "a.db")}}
    server = start_server(agents=agents, memory={"enabled": True, "path": str(tmp_path / "memory.db")})
    small = {"X-hal0-Agent": "tiny-mind"}
    for text in ("one", "two"):
        assert httpx.post(f"{server.url}/api/memory", json={"text": text}, headers=small).status_code == 201
    full = httpx.post(f"{server.url}/api/memory", json={"text": "three"}, headers=small)
    assert full.status_code == 422 and "2 of 2 items" in full.json()["error"]["message"]
    for text in ("one", "two", "three"):  # an agent without that persona keeps the global limit
        assert httpx.post(f"{server.url}/api/memory", json={"text": text}, headers={"X-hal0-Agent": "other"}).status_code == 201


def test_cross_site_approvals_are_refused(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server(agents=agents_with(tmp_path))
    pending = call_admin(server, "ops", "unload_model", {"model": "tiny"}).structured_content
    url = f"{server.url}/api/approvals/{pending['approval_id']}/approve"
    forged = httpx.post(url, headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403 and forged.json()["error"]["code"] == "cross_origin"
    assert outcome(server, pending["approval_id"])["state"] == "pending"
    same_site = httpx.post(url, headers={"Origin": server.url})  # the dashboard's own fetch
    assert same_site.status_code == 200 and same_site.json()["state"] == "executed"
