"""The dashboard over plain HTTP (the browser tests in tests/browser drive it in Chromium):
every tab renders with relative URLs only, a proxy prefix is honoured, reading creates nothing,
the Config tab checks the file on disk, and the MCP tab names where each allowlist entry came from."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server

PAGES = ["/", "/ui/models", "/ui/mcp", "/ui/approvals", "/ui/memory", "/ui/config"]
FRAGMENTS = ["overview", "models", "pending", "history", "audit"]


def get(server: Server, path: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", headers=headers, timeout=30)


@pytest.mark.parametrize("path", PAGES)
def test_every_tab_renders_with_relative_urls_only(server: Server, path: str) -> None:
    response = get(server, path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    html = response.text
    assert f'<base href="{"./" if path == "/" else "../"}">' in html
    # No absolute URL anywhere: the same HTML must work on a proxy sub-path.
    assert not re.search(r'(?:href|src|action)="/', html), re.findall(r'(?:href|src|action)="/[^"]*"', html)
    assert 'aria-current="page"' in html


def test_static_files_and_fragments(server: Server) -> None:
    assert "data-refresh" in get(server, "/static/dashboard.js").text
    assert get(server, "/static/dashboard.css").status_code == 200
    for name in FRAGMENTS:
        assert get(server, f"/ui/fragments/{name}").status_code == 200, name
    assert get(server, "/ui/fragments/nope").status_code == 404


def test_forwarded_prefix_becomes_the_base(server: Server) -> None:
    assert '<base href="/hal0/">' in get(server, "/ui/models", **{"X-Forwarded-Prefix": "/hal0"}).text
    hostile = get(server, "/", **{"X-Forwarded-Prefix": '/x"><script>alert(1)</script>'}).text
    assert "<script>alert" not in hostile and '<base href="./">' in hostile


def test_reading_creates_no_approval_database(start_server: Callable[..., Server], tmp_path: Path) -> None:
    db = tmp_path / "approvals.db"
    server = start_server(agents={"approvals": {"path": str(db)}})
    assert "Nothing is waiting" in get(server, "/ui/approvals").text
    assert get(server, "/").status_code == 200
    assert not db.exists()


def test_overview_and_models_show_state_and_posture(server: Server) -> None:
    html = get(server, "/").text
    assert 'id="ov-posture">proxied<' in html and "127.0.0.1:" in html
    assert 'data-model-state="tiny">ready<' in html
    models = get(server, "/ui/models").text
    assert "tiny.gguf" in models and "1024" in models


def test_config_tab_validates_the_file_on_disk(server: Server) -> None:
    html = get(server, "/ui/config").text
    assert 'id="disk-ok"' in html and "Same as the running config" in html
    assert re.search(r"<code>server.bind</code></td><td><code>&#34;127.0.0.1&#34;</code></td><td><span class=\"src src-file\">file", html)
    server.write_config("server:\n  port: 0\nmodels: []\n")
    html = get(server, "/ui/config").text
    assert 'id="disk-bad"' in html and "port" in html and ":2:" in html  # file:line:col of the problem


def test_mcp_tab_names_the_source_of_each_gate_entry(start_server: Callable[..., Server]) -> None:
    server = start_server(mcp={"allowed_hosts": ["box.lan"]}, env={"HAL0_MCP_ALLOWED_HOSTS": "proxy.lan:8443"})
    html = get(server, "/ui/mcp").text
    rows = dict(re.findall(r"<tr><td><code>([^<]+)</code></td><td>([^<]+)</td></tr>", html))
    assert rows["box.lan"] == "file (mcp.allowed_hosts)"
    assert rows["proxy.lan:8443"] == "env $HAL0_MCP_ALLOWED_HOSTS"
    assert rows["localhost:*"] == "built in (loopback)"
    assert rows["https://proxy.lan:8443"] == "derived from allowed_hosts"
    assert "sessions: 0" in html and 'id="mounted-memory">not mounted<' in html
    assert "hal0://status" in html and "readOnlyHint: true" in html


def test_memory_tab_lists_namespaces_and_searches(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server(memory={"enabled": True, "path": str(tmp_path / "memory.db")},
                          agents={"personas": [{"id": "scribe", "tools": ["memory:*"]}]})
    for text in ("rack 4 holds the backup box", "the printer is on floor 2"):
        added = httpx.post(f"{server.url}/api/memory", json={"text": text}, headers={"X-hal0-Agent": "scribe"})
        assert added.status_code == 201, added.text
    html = get(server, "/ui/memory").text
    assert re.search(r">scribe</a></td><td>2</td>", html)
    found = get(server, "/ui/memory?ns=scribe&q=backup").text
    assert "rack 4 holds the backup box" in found and "printer" not in found
    assert "No items." in get(server, "/ui/memory?ns=other").text  # an empty namespace, not an error


def test_overview_shows_a_rejected_first_boot_config(start_server, tmp_path) -> None:
    import httpx

    report = tmp_path / "firstboot-error.txt"
    report.write_text("/boot/efi/hal0.yaml:3:9 server.port: must be >= 1 and <= 65535, got 0\n")
    server = start_server(env={"HAL0_FIRSTBOOT_ERROR": str(report)})
    page = httpx.get(f"{server.url}/").text
    assert "was rejected at first boot" in page
    assert "server.port: must be &gt;= 1" in page or "server.port: must be >= 1" in page
    clean = start_server(env={"HAL0_FIRSTBOOT_ERROR": str(tmp_path / "absent.txt")})
    assert "rejected at first boot" not in httpx.get(f"{clean.url}/").text
