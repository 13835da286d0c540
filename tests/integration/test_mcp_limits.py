"""MCP limits over real HTTP against `hal0 serve`: hal0's server.max_body_bytes on /mcp/*, and session caps
(mcp.sessions: per agent, in total, idle expiry) with their metrics. Before (issue 20): bodies up to the SDK's
4 MiB were taken whatever hal0 said, and 3000 sessions opened and never closed stayed for 30 minutes."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.integration.mcp_helpers import mcp_client, memory_on

ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _initialize(pad: int = 0) -> dict:
    return {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "limits-test", "version": "0" + " " * pad}}}


def _open(server: Server, agent: str | None, path: str = "/mcp/admin") -> httpx.Response:
    headers = {**ACCEPT, **({"X-hal0-Agent": agent} if agent else {})}
    return httpx.post(f"{server.url}{path}", json=_initialize(), headers=headers, timeout=30)


def _metric(server: Server, name: str, labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    found = re.search(rf"^{re.escape(name)}{{{re.escape(labels)}}} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def capped(start_server: Callable[..., Server], tmp_path: Path) -> Server:
    return start_server(mcp={"sessions": {"max_per_agent": 3, "max_total": 5}}, memory=memory_on(tmp_path))


def test_mcp_bodies_follow_server_max_body_bytes(start_server: Callable[..., Server]) -> None:
    server = start_server(server={"max_body_bytes": 4096})
    small = _open(server, None)
    assert small.status_code == 200, small.text
    too_big = httpx.post(f"{server.url}/mcp/admin", json=_initialize(pad=8000), headers=ACCEPT)
    assert too_big.status_code == 413, too_big.text
    assert "4096" in too_big.json()["error"]["message"] and "server.max_body_bytes" in too_big.json()["error"]["message"]

    def chunks():  # no Content-Length: counted while it streams in
        yield b'{"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}}'

    streamed = httpx.post(f"{server.url}/mcp/admin", content=chunks(), headers={**ACCEPT, "Mcp-Session-Id": small.headers["mcp-session-id"]})
    assert streamed.status_code == 413, streamed.text
    assert _open(server, None).status_code == 200  # the server still serves


def test_sessions_are_capped_per_agent_and_in_total(capped: Server) -> None:
    mine = [_open(capped, "a") for _ in range(3)]
    assert [r.status_code for r in mine] == [200] * 3
    fourth = _open(capped, "a")
    assert fourth.status_code == 429 and "Retry-After" in fourth.headers
    assert "mcp.sessions.max_per_agent" in fourth.json()["error"]["message"] and "'a'" in fourth.json()["error"]["message"]
    # the cap counts both servers together
    assert _open(capped, "a", "/mcp/memory").status_code == 429
    assert [_open(capped, "b").status_code for _ in range(2)] == [200, 200]
    full = _open(capped, "c")
    assert full.status_code == 503 and "mcp.sessions.max_total" in full.json()["error"]["message"]
    assert _metric(capped, "hal0_mcp_sessions", 'server="admin"') == 5
    assert _metric(capped, "hal0_mcp_sessions_refused_total", 'reason="per_agent"') >= 1
    assert _metric(capped, "hal0_mcp_sessions_refused_total", 'reason="total"') == 1
    # closing a session (DELETE) frees its room at once
    closed = httpx.delete(f"{capped.url}/mcp/admin", headers={"Mcp-Session-Id": mine[0].headers["mcp-session-id"],
                                                                "X-hal0-Agent": "a", "MCP-Protocol-Version": "2025-06-18"})
    assert closed.status_code in (200, 204), closed.text
    assert _open(capped, "a").status_code == 200
    assert _metric(capped, "hal0_mcp_sessions", 'server="admin"') == 5


def test_concurrent_openings_cannot_overshoot_the_cap(capped: Server) -> None:
    async def race() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            calls = [client.post(f"{capped.url}/mcp/admin", json=_initialize(), headers={**ACCEPT, "X-hal0-Agent": "racer"})
                     for _ in range(20)]
            return [response.status_code for response in await asyncio.gather(*calls)]

    statuses = asyncio.run(race())
    assert statuses.count(200) == 3 and statuses.count(429) == 17, statuses


def test_invalid_agent_ids_share_one_bucket(capped: Server) -> None:
    assert [_open(capped, f"bad id {i}!").status_code for i in range(4)] == [200, 200, 200, 429]
    assert _open(capped, "good").status_code == 200


def test_idle_sessions_expire_and_free_their_room(start_server: Callable[..., Server]) -> None:
    server = start_server(mcp={"sessions": {"max_per_agent": 1, "max_total": 4, "idle_timeout_s": 1}})
    first = _open(server, "a")
    assert first.status_code == 200
    assert _open(server, "a").status_code == 429
    deadline = time.monotonic() + 30
    reopened = None
    while time.monotonic() < deadline:  # the first session is idle: within ~1 s the SDK closes it
        reopened = _open(server, "a")
        if reopened.status_code == 200:
            break
        time.sleep(0.25)
    assert reopened is not None and reopened.status_code == 200
    expired = httpx.post(f"{server.url}/mcp/admin", json={"jsonrpc": "2.0", "id": 2, "method": "ping"},
                         headers={**ACCEPT, "Mcp-Session-Id": first.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"})
    assert expired.status_code == 404


def test_a_real_client_works_within_the_caps(capped: Server) -> None:
    async def run() -> list[str]:
        names = []
        for _ in range(5):  # more sessions than the per-agent cap, one after the other: each is closed on exit
            async with mcp_client(f"{capped.url}/mcp/admin", agent="a") as client:
                names.append((await client.call_tool("status", {})).structured_content["agent"])
        return names

    assert asyncio.run(run()) == ["a"] * 5


def test_the_caps_say_when_a_slot_frees(start_server: Callable[..., Server]) -> None:
    """Issue 29 §7: sessions a client never closes (a conformance run) held the per-agent cap, and the 429's
    Retry-After (a tenth of the idle timeout) did not say when a slot frees. It is now the first expiry."""
    server = start_server(mcp={"sessions": {"max_per_agent": 2, "max_total": 3, "idle_timeout_s": 4}})
    assert [_open(server, "a").status_code for _ in range(2)] == [200, 200]
    refused = _open(server, "a")
    assert refused.status_code == 429
    wait = int(refused.headers["Retry-After"])
    assert 3 <= wait <= 4, wait  # the first session expires 4 s after its opening request ended
    assert f"frees in {wait} s" in refused.json()["error"]["message"]
    assert _open(server, "b").status_code == 200
    full = _open(server, "c")
    assert full.status_code == 503 and 1 <= int(full.headers["Retry-After"]) <= 4
    time.sleep(wait + 0.5)  # no request meanwhile: the slot the header named is free
    assert _open(server, "a").status_code == 200
