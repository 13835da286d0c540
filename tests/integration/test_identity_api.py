"""agents.identity.trusted_proxies and GET /api/whoami over real HTTP (`hal0 serve` on loopback).

Every request here comes from 127.0.0.1, so "a trusted proxy" is a list naming it and "an untrusted
peer" is a list that does not. X-Forwarded-For never changes who the peer is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.integration.mcp_helpers import memory_on

MCP_HEADERS = {"Accept": "application/json, text/event-stream"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def agents(*trusted: str) -> dict:
    return {"default_agent": "guest", "identity": {"trusted_proxies": list(trusted)},
            "personas": [{"id": "guest", "tools": ["memory:*"]}, {"id": "alice", "tools": ["memory:*"]}]}


def test_header_from_an_untrusted_peer_is_refused_everywhere(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server(agents=agents("10.0.0.0/8", "192.0.2.7"), memory=memory_on(tmp_path))
    forged = {"X-hal0-Agent": "alice", "X-Forwarded-For": "10.1.2.3"}  # a client-written XFF changes nothing
    for method, path, body in (("GET", "/api/whoami", None), ("POST", "/api/memory", {"text": "x"}),
                               ("GET", "/api/approvals", None), ("GET", "/v1/models", None),
                               ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})):
        response = httpx.request(method, f"{server.url}{path}", json=body, headers=forged, timeout=30)
        assert response.status_code == 403, (path, response.text)
        error = response.json()["error"]
        assert error["code"] == "untrusted_agent_header" and "agents.identity.trusted_proxies" in error["message"], error
        assert "127.0.0.1" in error["message"]
    mcp = httpx.post(f"{server.url}/mcp/memory", json=INIT, headers={**MCP_HEADERS, **forged})
    assert mcp.status_code == 403 and "agents.identity.trusted_proxies" in mcp.json()["error"]["message"]

    # Without the header: the default agent, served as usual.
    me = httpx.get(f"{server.url}/api/whoami").json()
    assert me == {"agent": "guest", "persona": "guest", "source": "default", "peer": "127.0.0.1"}
    assert httpx.post(f"{server.url}/api/memory", json={"text": "mine"}).status_code == 201
    assert httpx.post(f"{server.url}/mcp/memory", json=INIT, headers=MCP_HEADERS).status_code == 200
    page = httpx.get(f"{server.url}/", headers={"X-hal0-Agent": "alice"})
    assert page.status_code == 403  # the dashboard is behind the same gate


def test_header_from_a_trusted_proxy_names_the_agent(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server(agents=agents("127.0.0.0/8"), memory=memory_on(tmp_path))
    me = httpx.get(f"{server.url}/api/whoami", headers={"X-hal0-Agent": "alice"}).json()
    assert me == {"agent": "alice", "persona": "alice", "source": "header", "peer": "127.0.0.1"}
    stranger = httpx.get(f"{server.url}/api/whoami", headers={"X-hal0-Agent": "zed"}).json()
    assert stranger == {"agent": "zed", "persona": "guest", "source": "header", "peer": "127.0.0.1"}
    made = httpx.post(f"{server.url}/api/memory", json={"text": "alice's"}, headers={"X-hal0-Agent": "alice"})
    assert made.status_code == 201
    assert httpx.get(f"{server.url}/api/memory/{made.json()['id']}", headers={"X-hal0-Agent": "alice"}).status_code == 200
    assert httpx.get(f"{server.url}/api/memory/{made.json()['id']}").status_code == 404  # guest's namespace
    bad = httpx.get(f"{server.url}/api/whoami", headers={"X-hal0-Agent": "not valid"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_agent_id"
    overview = httpx.get(f"{server.url}/", headers={"X-hal0-Agent": "alice"}).text
    assert 'id="ov-whoami" data-source="header">alice<' in overview


def test_empty_list_believes_every_peer_and_a_reload_applies_at_once(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server(agents=agents())
    assert httpx.get(f"{server.url}/api/whoami", headers={"X-hal0-Agent": "alice"}).json()["source"] == "header"
    config = server.config_path.read_text().replace("trusted_proxies: []", "trusted_proxies:\n    - 198.51.100.0/24")
    assert config != server.config_path.read_text()
    server.write_config(config)
    server.reload()
    for _ in range(100):  # SIGHUP is asynchronous: wait for it, at most 5 s
        status = httpx.get(f"{server.url}/api/whoami", headers={"X-hal0-Agent": "alice"}, timeout=5).status_code
        if status == 403:
            break
        time.sleep(0.05)
    assert status == 403


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "proxy.lan", "10.0.0.1:80"])
def test_bad_entries_are_refused_naming_the_key(tmp_path: Path, entry: str, capsys: pytest.CaptureFixture[str]) -> None:
    from hal0.cli import main

    config = tmp_path / "hal0.yaml"
    config.write_text(f"models:\n  - {{id: a, path: /a}}\nagents:\n  identity:\n    trusted_proxies: ['{entry}']\n")
    assert main(["config", "validate", str(config)]) == 1
    err = capsys.readouterr().err
    assert "agents.identity.trusted_proxies" in err and "CIDR" in err
