"""The human channel (approve/deny) behind the DNS-rebinding gate, in both postures, over real HTTP.

The attack that worked (issue 20): a page on the internet, loaded by a browser on the LAN, rebinds its own
name to hal0 and posts `Host: rebind.attacker.example:8080`, `Origin: http://rebind.attacker.example:8080`.
Host equals Origin, so the old same-host check let it approve a pending forget_all, which then ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import Server
from tests.integration.mcp_helpers import memory_on

AGENT = "X-hal0-Agent"
REBIND = "rebind.attacker.example:8080"
PROXY = "hal0-proxy.lan"  # the proxy's name, which site.yml adds to mcp.allowed_hosts


def _queue_forget_all(server: Server, agent: str = "victim") -> str:
    assert httpx.post(f"{server.url}/api/memory", json={"text": "precious"}, headers={AGENT: agent}).status_code == 201
    queued = httpx.delete(f"{server.url}/api/memory", headers={AGENT: agent})
    assert queued.status_code == 202, queued.text
    return queued.json()["approval_id"]


def _state(server: Server, approval_id: str) -> str:
    return httpx.get(f"{server.url}/api/approvals/{approval_id}").json()["state"]


def _items(server: Server, agent: str = "victim") -> int:
    return len(httpx.get(f"{server.url}/api/memory", headers={AGENT: agent}).json()["items"])


@pytest.fixture
def lan(start_server: Callable[..., Server], tmp_path: Path) -> Server:
    """Trusted-LAN posture: clients reach hal0 by loopback, or by a LAN name the operator added."""
    return start_server(memory=memory_on(tmp_path), mcp={"allowed_hosts": ["hal0.lan:8080"]})


@pytest.fixture
def proxied(start_server: Callable[..., Server], tmp_path: Path) -> Server:
    """Proxied posture: nginx forwards `Host: $host` (its server name, no port) and the browser's Origin."""
    return start_server(memory=memory_on(tmp_path), mcp={"allowed_hosts": [PROXY, "10.0.0.2"]})


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_a_rebound_page_cannot_decide(lan: Server, decision: str) -> None:
    approval = _queue_forget_all(lan)
    for host, origin in [(REBIND, f"http://{REBIND}"), (REBIND, None), ("rebind.attacker.example", "http://rebind.attacker.example"),
                         ("192.168.1.66:8080", "http://192.168.1.66:8080"), ("hal0.lan", "http://hal0.lan")]:
        headers = {"Host": host, **({"Origin": origin} if origin else {})}
        response = httpx.post(f"{lan.url}/api/approvals/{approval}/{decision}", headers=headers)
        assert response.status_code == 421, (host, origin, response.text)
        error = response.json()["error"]
        assert error["code"] == "invalid_host" and host in error["message"] and "mcp.allowed_hosts" in error["message"]
    assert _state(lan, approval) == "pending" and _items(lan) == 1


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_an_origin_must_be_exactly_an_allowed_one(lan: Server, decision: str) -> None:
    approval = _queue_forget_all(lan)
    # same host, another port or scheme; another site; opaque origins
    for host, origin in [("hal0.lan:8080", "http://hal0.lan:9090"), ("hal0.lan:8080", "http://hal0.lan"),
                         ("hal0.lan:8080", "ftp://hal0.lan:8080"), ("hal0.lan:8080", "https://evil.example"),
                         ("127.0.0.1", "http://evil.example"), ("localhost:1", "null"), ("hal0.lan:8080", "http://hal0.lan.evil.example:8080")]:
        response = httpx.post(f"{lan.url}/api/approvals/{approval}/{decision}", headers={"Host": host, "Origin": origin})
        assert response.status_code == 403, (host, origin, response.text)
        assert response.json()["error"]["code"] == "cross_origin" and origin in response.json()["error"]["message"]
    assert _state(lan, approval) == "pending"


def test_lan_posture_the_dashboard_by_its_lan_name_decides(lan: Server) -> None:
    approval = _queue_forget_all(lan)
    response = httpx.post(f"{lan.url}/api/approvals/{approval}/approve",
                          headers={"Host": "hal0.lan:8080", "Origin": "http://hal0.lan:8080"}, json={"note": "ok"})
    assert response.status_code == 200 and response.json()["state"] == "executed", response.text
    assert _items(lan) == 0


def test_lan_posture_loopback_and_the_cli_decide(lan: Server) -> None:
    first, second = _queue_forget_all(lan, "a"), _queue_forget_all(lan, "b")
    dashboard = httpx.post(f"{lan.url}/api/approvals/{first}/deny", headers={"Origin": lan.url})  # Host 127.0.0.1:port
    assert dashboard.status_code == 200 and dashboard.json()["state"] == "denied"
    cli = httpx.post(f"{lan.url}/api/approvals/{second}/deny")  # no Origin: not a browser
    assert cli.status_code == 200 and cli.json()["state"] == "denied"


def test_proxied_posture(proxied: Server) -> None:
    approval = _queue_forget_all(proxied)
    # the proxy's name on another port, or a longer name, is not the page the proxy serves
    for origin in (f"https://{PROXY}:8443", f"https://{PROXY}.evil.example", "https://10.0.0.2:8443"):
        response = httpx.post(f"{proxied.url}/api/approvals/{approval}/approve", headers={"Host": PROXY, "Origin": origin})
        assert response.status_code == 403, (origin, response.text)
    rebound = httpx.post(f"{proxied.url}/api/approvals/{approval}/approve",
                         headers={"Host": "rebind.attacker.example", "Origin": "https://rebind.attacker.example",
                                  "X-Forwarded-User": "mallory"})
    assert rebound.status_code == 421 and _state(proxied, approval) == "pending"
    # the dashboard through the proxy: Host is the proxy's name, Origin its https origin, the user from auth
    response = httpx.post(f"{proxied.url}/api/approvals/{approval}/approve",
                          headers={"Host": PROXY, "Origin": f"https://{PROXY}", "X-Forwarded-User": "alice"})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "executed" and response.json()["decided_by"] == "alice"
    assert _items(proxied) == 0


def test_reads_stay_open_and_the_gate_follows_a_reload(lan: Server) -> None:
    approval = _queue_forget_all(lan)
    assert httpx.get(f"{lan.url}/api/approvals/{approval}", headers={"Host": REBIND}).status_code == 200
    assert httpx.get(f"{lan.url}/api/approvals", headers={"Host": REBIND}).status_code == 200
    config = yaml.safe_load(lan.config_path.read_text())
    config["mcp"]["allowed_hosts"] = ["box.lan"]
    lan.write_config(config)
    lan.reload()
    url = f"{lan.url}/api/approvals/{approval}/deny"
    for _ in range(100):  # the reload is asynchronous (at most ~5 s here); each probe is refused until it lands
        if httpx.post(url, headers={"Host": "hal0.lan:8080", "Origin": "http://box.lan"}).status_code == 421:
            break
        time.sleep(0.05)
    assert httpx.post(url, headers={"Host": "hal0.lan:8080"}).status_code == 421
    assert httpx.post(url, headers={"Host": "box.lan", "Origin": "http://box.lan"}).json()["state"] == "denied"


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_another_local_service_cannot_decide(lan: Server, decision: str) -> None:
    """Issue 29: `Origin: http://127.0.0.1:9` approved on a hal0 on another port. A loopback Origin is hal0's own
    page only (http, the port it listens on); /mcp/* still takes local browser clients on any port."""
    approval = _queue_forget_all(lan)
    for origin in ("http://127.0.0.1:9", "http://localhost:3000", f"https://127.0.0.1:{lan.port}", "http://localhost",
                   "http://[::1]:5173"):
        response = httpx.post(f"{lan.url}/api/approvals/{approval}/{decision}", headers={"Origin": origin})
        assert response.status_code == 403, (origin, response.text)
        assert response.json()["error"]["code"] == "cross_origin" and origin in response.json()["error"]["message"]
    assert _state(lan, approval) == "pending" and _items(lan) == 1
    for origin in (f"http://localhost:{lan.port}", f"http://[::1]:{lan.port}"):  # hal0's own page, by any loopback name
        assert httpx.post(f"{lan.url}/api/approvals/{approval}/{decision}", headers={"Origin": origin}).status_code in (200, 409)
    assert _state(lan, approval) != "pending"


def test_a_port_in_other_digits_is_refused_not_a_500(lan: Server) -> None:
    """`localhost:²` passed str.isdigit() and broke int(): a 500 from the gate (issue 29). Header bytes are read
    as latin-1, so the byte B2 is "²" (and B3, B9 are "³", "¹"); UTF-8 digits of other scripts are tried too."""
    approval = _queue_forget_all(lan)
    for raw in (b"localhost:\xb2", b"localhost:8\xb3\xb9", "localhost:\u0668\u0660".encode(), "localhost:\uff18".encode()):
        for path in (f"/api/approvals/{approval}/approve", "/mcp/admin"):
            host = httpx.post(f"{lan.url}{path}", headers=[(b"Host", raw)])
            assert host.status_code == 421, (raw, path, host.text)
            origin = httpx.post(f"{lan.url}{path}", headers=[(b"Origin", b"http://" + raw)])
            assert origin.status_code == 403, (raw, path, origin.text)
    assert _state(lan, approval) == "pending"
    assert "Traceback" not in lan.log()
