"""Checks through the reverse proxy, from the LAN (the machine running pytest).

Run with the same command as the box checks; skipped when the inventory has no `proxy` hosts:
    pytest tests/infra --hosts=ansible://hal0 --ansible-inventory=build/lab/inventory.yml
The basic-auth user comes from the proxy's inventory variables, or HAL0_PROXY_USER / HAL0_PROXY_PASSWORD
(e.g. when the inventory's password is vaulted).
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.infra.conftest import address_of

pytestmark = pytest.mark.box

CHAT = {"messages": [{"role": "user", "content": "Count to ten"}], "max_tokens": 32}
MCP_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "testinfra", "version": "0"}},
}


@dataclass
class Proxy:
    name: str
    address: str
    url: str
    auth: tuple[str, str]
    server_name: str
    cafile: str
    keepalive_s: int
    identity: str  # reverse_proxy_identity as the inventory (or the role's default) sets it
    agent: str  # the agent the basic-auth user is pinned to


@pytest.fixture(scope="module")
def proxy(runner: Any, inventory_path: str) -> Iterator[Proxy]:
    names = runner.get_hosts("proxy")
    if not names:
        pytest.skip("no proxy hosts in this inventory (trusted-LAN posture)")
    name = names[0]
    variables = runner.get_variables(name)
    users = variables.get("reverse_proxy_basic_auth_users") or [{}]
    user = os.environ.get("HAL0_PROXY_USER", users[0].get("name", ""))
    password = os.environ.get("HAL0_PROXY_PASSWORD", users[0].get("password", ""))
    if not (user and password):
        pytest.skip("no basic-auth credentials: set HAL0_PROXY_USER and HAL0_PROXY_PASSWORD")
    import testinfra  # only where pytest-testinfra is installed (plain `pytest tests` skips this module)

    box = testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory_path)
    # Trust exactly the proxy's certificate (self-signed on the box, or the operator's).
    cert = box.file("/etc/nginx/hal0/selfsigned.crt")
    if not cert.exists:
        cert = box.file("/etc/nginx/hal0/tls.crt")
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as handle:
        handle.write(cert.content_string)
    address = address_of(runner, name)
    port = int(variables.get("reverse_proxy_https_port", 443))
    yield Proxy(
        name=name,
        address=address,
        url=f"https://{address}:{port}",
        auth=(user, password),
        server_name=variables.get("reverse_proxy_server_name", name),
        cafile=handle.name,
        keepalive_s=int(variables.get("reverse_proxy_keepalive_timeout_s", 0)),
        identity=variables.get("reverse_proxy_identity")
        or ("basic_auth" if variables.get("reverse_proxy_basic_auth_users") else "client_cert" if variables.get("reverse_proxy_client_ca") else "none"),
        agent=next((entry.get("agent", entry["name"]) for entry in users if entry.get("name") == user), user),
    )
    os.unlink(handle.name)


def client(proxy: Proxy, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=proxy.url, verify=ssl.create_default_context(cafile=proxy.cafile), timeout=60, **kwargs)


def test_401_without_credentials(proxy: Proxy) -> None:
    with client(proxy) as http:
        response = http.get("/health")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")


def test_401_with_a_wrong_password(proxy: Proxy) -> None:
    with client(proxy, auth=(proxy.auth[0], proxy.auth[1] + "x")) as http:
        assert http.get("/v1/models").status_code == 401


def test_200_with_credentials(proxy: Proxy) -> None:
    with client(proxy, auth=proxy.auth) as http:
        health = http.get("/health")
        models = http.get("/v1/models")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert models.status_code == 200
    assert models.json()["data"]
    assert "strict-transport-security" in health.headers


def test_one_request_per_client_connection(proxy: Proxy) -> None:
    # The default (0): no idle keep-alive connection for an nginx reload (a drain) to close under a request.
    with client(proxy, auth=proxy.auth) as http:
        response = http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2})
    assert response.status_code == 200, response.text
    if proxy.keepalive_s == 0:
        assert response.headers["connection"] == "close"
    else:
        assert response.headers.get("connection", "keep-alive") == "keep-alive"


def test_chat_completion_through_the_proxy(proxy: Proxy) -> None:
    with client(proxy, auth=proxy.auth) as http:
        response = http.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] is not None


def sse_events(proxy: Proxy, path: str, body: dict[str, Any]) -> list[str]:
    events: list[str] = []
    with client(proxy, auth=proxy.auth) as http, http.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in response.headers, "a buffered (non-streamed) response"
        events.extend(line[6:] for line in response.iter_lines() if line.startswith("data: "))
    assert events[-1] == "[DONE]"
    return events[:-1]


def test_streaming_flows_through(proxy: Proxy) -> None:
    # Text completion: a base model always continues a prompt, so tokens must arrive as separate events.
    chunks = [json.loads(data) for data in sse_events(proxy, "/v1/completions", {"prompt": "Once upon a time", "max_tokens": 16})]
    assert len([chunk for chunk in chunks if chunk["choices"] and chunk["choices"][0].get("text")]) >= 3, chunks
    chat = [json.loads(data) for data in sse_events(proxy, "/v1/chat/completions", CHAT)]
    assert chat
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chat)


def tls_handshake(proxy: Proxy, version: ssl.TLSVersion) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(proxy.cafile)
    context.check_hostname = False
    # Let this client offer old protocols, so that refusing them is the server's doing.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = version
    context.maximum_version = version
    port = int(proxy.url.rsplit(":", 1)[1])
    with socket.create_connection((proxy.address, port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        return str(tls.version())


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_refused(proxy: Proxy, version: ssl.TLSVersion) -> None:
    with pytest.raises(ssl.SSLError):
        tls_handshake(proxy, version)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_12_and_13_accepted(proxy: Proxy, version: ssl.TLSVersion) -> None:
    assert tls_handshake(proxy, version) == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]


def test_http2_only_with_keepalive(proxy: Proxy) -> None:
    # With keep-alive off (the default) an idle HTTP/2 connection would be closed under the next request.
    context = ssl.create_default_context(cafile=proxy.cafile)
    context.check_hostname = False
    context.set_alpn_protocols(["h2", "http/1.1"])
    port = int(proxy.url.rsplit(":", 1)[1])
    with socket.create_connection((proxy.address, port), timeout=5) as raw, context.wrap_socket(raw) as tls:
        chosen = tls.selected_alpn_protocol()
    assert chosen == ("h2" if proxy.keepalive_s > 0 else "http/1.1")


def test_password_hashes_are_cheap_to_check(runner: Any, proxy: Proxy, inventory_path: str) -> None:
    # nginx checks the hash on every request inside its event loop: the role's rounds, not passlib's 656000.
    import testinfra

    rounds = int(runner.get_variables(proxy.name).get("reverse_proxy_basic_auth_rounds", 5000))
    box = testinfra.get_host(f"ansible://{proxy.name}", ansible_inventory=inventory_path)
    for line in box.file("/etc/nginx/hal0/htpasswd").content_string.splitlines():
        scheme = line.split(":", 1)[1]
        assert scheme.startswith("$6$"), line.split(":", 1)[0]
        # crypt(3) omits `rounds=` for its default, 5000.
        assert scheme.startswith(f"$6$rounds={rounds}$") if rounds != 5000 else "rounds=" not in scheme


def test_plain_http_redirects_to_https(proxy: Proxy) -> None:
    response = httpx.get(f"http://{proxy.address}/v1/models", follow_redirects=False, timeout=10)
    assert response.status_code == 301
    assert response.headers["location"].startswith("https://")


def test_mcp_host_gate_through_the_proxy(proxy: Proxy) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    with client(proxy, auth=proxy.auth) as http:
        probe = http.post("/mcp/admin", json=MCP_INITIALIZE, headers=headers)
        foreign = http.post("/mcp/admin", json=MCP_INITIALIZE, headers={**headers, "Host": "lan-client.example"})
        allowed = http.post("/mcp/admin", json=MCP_INITIALIZE, headers={**headers, "Host": proxy.server_name})
    assert probe.status_code == 200, f"Host {proxy.address} (added by the play): {probe.status_code} {probe.text[:200]}"
    assert (foreign.status_code, foreign.text) == (421, "Invalid Host header")
    assert allowed.status_code == 200, allowed.text[:200]


def test_hal0_unreachable_from_the_lan(runner: Any, proxy: Proxy) -> None:
    for name in runner.get_hosts("hal0"):
        if name == proxy.name:
            continue  # same box: hal0 binds 127.0.0.1, checked by test_box
        address = address_of(runner, name)
        try:
            with socket.create_connection((address, 8080), timeout=3):
                reachable = True
        except OSError:
            reachable = False
        assert not reachable, f"{address}:8080 must not be reachable from the LAN behind a proxy"


def connect_from(box: Any, address: str, port: int) -> str:
    """What a TCP connect from `box` (a testinfra host) to address:port gives: ok, refused or timeout."""
    script = (
        "import socket, sys\n"
        "try:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close(); print('ok')\n"
        "except ConnectionRefusedError:\n    print('refused')\n"
        "except OSError:\n    print('timeout')\n"
    )
    return str(box.check_output("python3 -c %s %s %s", script, address, str(port))).strip()


def test_only_the_proxy_reaches_hal0(runner: Any, proxy: Proxy, inventory_path: str) -> None:
    import testinfra

    hal0_boxes = [name for name in runner.get_hosts("hal0") if name != proxy.name]
    if not hal0_boxes:
        pytest.skip("hal0 shares the proxy's box (binds 127.0.0.1)")
    proxy_box = testinfra.get_host(f"ansible://{proxy.name}", ansible_inventory=inventory_path)
    lan_client = runner.get_variables(proxy.name).get("hal0_lab_lan_client")
    for name in hal0_boxes:
        address = address_of(runner, name)
        assert connect_from(proxy_box, address, 8080) == "ok", f"the proxy must reach {name} ({address}:8080)"
        # This machine is a LAN client that is not the proxy: refused by the box's nftables (a TCP reset).
        if lan_client:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((address, 8080), timeout=3).close()
        # Another hal0 box is a LAN client too: refused unless the inventory's hal0_allowed_clients lets it in.
        allowed = [ipaddress.ip_network(client) for client in runner.get_variables(name).get("hal0_allowed_clients", [])]
        for other in hal0_boxes:
            if other != name:
                box = testinfra.get_host(f"ansible://{other}", ansible_inventory=inventory_path)
                let_in = any(ipaddress.ip_address(address_of(runner, other)) in network for network in allowed)
                assert connect_from(box, address, 8080) == ("ok" if let_in else "refused"), f"{other} -> {name}"


def box_of(http: httpx.Client, agent: str | None) -> str:
    headers = {"X-hal0-Agent": agent} if agent else {}
    response = http.get("/health", headers=headers)
    assert response.status_code == 200, response.text
    return str(response.json()["hostname"])


def test_agents_stick_to_one_box(runner: Any, proxy: Proxy) -> None:
    boxes = set(runner.get_hosts("hal0"))
    agents = [f"agent-{i}" for i in range(32)]
    with client(proxy, auth=proxy.auth) as http:
        first = {agent: box_of(http, agent) for agent in agents}
        again = {agent: box_of(http, agent) for agent in agents}
    assert first == again, "an agent must always reach the same box"
    if proxy.identity == "none":
        assert len(set(first.values())) == len(boxes), f"32 agents should spread over every box: {sorted(set(first.values()))}"
    else:  # the hash is on the pinned agent: whatever header the client forges, one user stays on one box
        assert len(set(first.values())) == 1, f"a forged X-hal0-Agent moved the user between boxes: {first}"


def test_a_forged_agent_header_is_replaced_by_the_authenticated_user(proxy: Proxy, inventory_path: str) -> None:
    import testinfra

    marker = os.urandom(6).hex()
    with client(proxy, auth=proxy.auth) as http:
        forged = http.get(f"/api/whoami?probe={marker}", headers={"X-hal0-Agent": "mallory"})
        plain = http.get("/api/whoami")
    assert forged.status_code == 200, forged.text
    if proxy.identity == "none":  # not pinned: the client's header passes, as the posture says
        assert forged.json()["agent"] == "mallory"
        return
    assert forged.json()["agent"] == proxy.agent and forged.json()["source"] == "header", forged.json()
    assert plain.json()["agent"] == proxy.agent  # no header from the client: still the user, never the default
    assert forged.json()["peer"] != "127.0.0.1" or proxy.address in ("127.0.0.1", "localhost")
    proxy_box = testinfra.get_host(f"ansible://{proxy.name}", ansible_inventory=inventory_path)
    line = proxy_box.check_output("grep -F %s /var/log/nginx/hal0-access.log", f"probe={marker}")
    assert f'user="{proxy.auth[0]}" agent="{proxy.agent}"' in line, line
    assert "mallory" not in line


def test_memory_through_the_proxy_lands_in_the_users_namespace(proxy: Proxy) -> None:
    text = f"pinned {os.urandom(6).hex()}"
    with client(proxy, auth=proxy.auth) as http:
        made = http.post("/api/memory", json={"text": text}, headers={"X-hal0-Agent": "mallory"})
        if made.status_code == 404 and made.json()["error"]["code"] == "memory_disabled":
            pytest.skip("memory.enabled is false on this box (the shipped default)")
        assert made.status_code == 201, made.text
        item = made.json()["id"]
        if proxy.identity != "none":  # pinned: the item is the user's, whatever header is sent
            assert http.get(f"/api/memory/{item}", headers={"X-hal0-Agent": "someone-else"}).json()["text"] == text
            assert http.get(f"/api/memory/{item}").json()["text"] == text
        http.delete(f"/api/memory/{item}", headers={"X-hal0-Agent": "mallory"})


def test_hal0_refuses_an_agent_header_not_from_the_proxy(runner: Any, proxy: Proxy, inventory_path: str) -> None:
    """On a hal0 box behind a proxy on another box, its own loopback is not a trusted proxy."""
    import testinfra

    for name in runner.get_hosts("hal0"):
        if name in runner.get_hosts("proxy"):
            continue
        box = testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory_path)
        bind = address_of(runner, name)  # behind a proxy on another box, hal0 binds its LAN address
        probe = (
            "import urllib.request as u, urllib.error as e\n"
            f"r = u.Request('http://{bind}:8080/api/whoami', headers={{'X-hal0-Agent': 'mallory'}})\n"
            "try:\n    print(u.urlopen(r).status)\nexcept e.HTTPError as x:\n    print(x.code, x.read().decode())\n"
        )
        answer = box.check_output("python3 -c %s", probe)
        assert answer.startswith("403") and "agents.identity.trusted_proxies" in answer, answer


def test_requests_without_an_agent_header_are_routed_by_the_pinned_identity(runner: Any, proxy: Proxy, inventory_path: str) -> None:
    """A client that sends no X-hal0-Agent: with the identity pinned at the proxy every request still carries
    one (the user's agent), so they all go to that agent's box; unpinned (`none`), /v1/ is balanced."""
    import testinfra

    boxes = runner.get_hosts("hal0")
    if len(boxes) < 2:
        pytest.skip("one hal0 box")
    marker = os.urandom(6).hex()
    with client(proxy, auth=proxy.auth) as http:
        for _ in range(2 * len(boxes)):
            assert http.get(f"/v1/models?probe={marker}").status_code == 200
    proxy_box = testinfra.get_host(f"ansible://{proxy.name}", ansible_inventory=inventory_path)
    log = proxy_box.check_output("grep -F %s /var/log/nginx/hal0-access.log", f"probe={marker}")
    upstreams = {line.split("upstream=")[1].split()[0] for line in log.splitlines()}
    if proxy.identity == "none":
        assert len(upstreams) == len(boxes), f"header-less /v1/ requests went to {upstreams}"
    else:
        assert len(upstreams) == 1, f"requests of one authenticated user went to {upstreams}, not to its agent's box"
