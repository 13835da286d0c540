"""The dashboard in a real browser against a real `hal0 serve`: every tab, live approvals decided by
a human (keyboard and mouse) with the agent's outcome changing, memory search, model state.

Screenshots of each tab (1280x800, and phone width) land in build/screenshots/.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.browser.conftest import PHONE, new_page, screenshot
from tests.conftest import Server
from tests.integration.mcp_helpers import mcp_client

AGENTS = {
    "default_agent": "guest",
    "personas": [
        {"id": "ops", "tools": ["admin:*"]},
        {"id": "guest", "tools": ["admin:status"]},
        {"id": "scribe", "tools": ["memory:*"]},
    ],
}


def start(start_server: Callable[..., Server], tmp_path: Path) -> Server:
    return start_server(memory={"enabled": True, "path": str(tmp_path / "memory.db")},
                        agents={**AGENTS, "approvals": {"path": str(tmp_path / "approvals.db")}})


def call_admin(server: Server, agent: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """An agent's MCP tool call. Runs on its own thread: Playwright's sync API owns this one's loop."""

    async def run() -> dict[str, Any]:
        async with mcp_client(f"{server.url}/mcp/admin", agent=agent) as client:
            result = await client.call_tool(name, arguments)
            assert not result.is_error, result.content
            return result.structured_content

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result(timeout=60)


def outcome(server: Server, approval_id: str, agent: str = "ops") -> dict[str, Any]:
    """What the agent reads back: the approval API with its own identity."""
    response = httpx.get(f"{server.url}/api/approvals/{approval_id}", headers={"X-hal0-Agent": agent}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def remember(server: Server, text: str, tags: list[str] | None = None) -> str:
    response = httpx.post(f"{server.url}/api/memory", json={"text": text, "tags": tags or []}, headers={"X-hal0-Agent": "scribe"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_every_tab_and_model_state(browser: Any, start_server: Callable[..., Server], tmp_path: Path, page_errors: list[str]) -> None:
    from playwright.sync_api import expect

    server = start(start_server, tmp_path)
    remember(server, "The backup server lives in rack 4 and reboots at 03:00", ["infra"])
    remember(server, "Alice prefers short answers")
    page = new_page(browser, page_errors)

    page.goto(f"{server.url}/")
    expect(page.locator("#ov-state")).to_have_text("ok")
    expect(page.locator("#ov-posture")).to_have_text("proxied")  # bound to 127.0.0.1
    expect(page.locator("#ov-memory")).to_have_text("on")
    expect(page.locator('[data-model-state="tiny"]')).to_have_text("ready")
    expect(page.locator("#ov-rps")).to_have_text(re.compile(r"/s$"))  # rates appear after the first refresh
    screenshot(page, "overview")

    page.get_by_role("link", name="Models").click()
    expect(page.locator('#model-tiny [data-model-state="tiny"]')).to_have_text("ready")
    expect(page.locator("#model-tiny")).to_contain_text("1024")  # n_ctx
    screenshot(page, "models")

    page.get_by_role("link", name="MCP", exact=True).click()
    # The browser's own handshake through the gate: same-origin fetch sends the Origin it expects.
    expect(page.locator("#probe-admin")).to_contain_text("reachable: hal0-admin", timeout=20_000)
    expect(page.locator("#probe-admin")).to_contain_text("tools/list as guest gives 1 tool: status")
    expect(page.locator("#probe-memory")).to_contain_text("reachable: hal0-memory")
    expect(page.locator("#mounted-memory")).to_have_text("mounted")
    expect(page.locator("#tool-admin-unload_model")).to_contain_text("destructiveHint: true")
    screenshot(page, "mcp")
    page.get_by_label("View as agent").fill("ops")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#tool-admin-unload_model")).to_contain_text("ask")
    expect(page.locator("#probe-admin")).to_contain_text("tools/list as ops gives 7 tools")

    page.get_by_role("link", name="Memory").click()
    page.get_by_label("Namespace", exact=True).select_option("scribe")
    page.get_by_label("Words", exact=True).fill("backup")
    page.get_by_role("button", name="Search").click()
    results = page.locator("#items li")
    expect(results).to_have_count(1)
    results.first.get_by_role("link").click()
    expect(page.locator("#item-view")).to_contain_text("rack 4")
    expect(page.locator("#item-view")).to_contain_text("infra")
    screenshot(page, "memory")

    page.get_by_role("link", name="Config").click()
    expect(page.locator("#disk-ok")).to_contain_text("Valid")
    expect(page.locator("table.config")).to_contain_text("memory.enabled")
    screenshot(page, "config")
    assert page_errors == []


def test_human_approves_and_denies_live(browser: Any, start_server: Callable[..., Server], tmp_path: Path, page_errors: list[str]) -> None:
    from playwright.sync_api import expect

    server = start(start_server, tmp_path)
    unload = call_admin(server, "ops", "unload_model", {"model": "tiny"})
    assert unload["status"] == "pending"
    page = new_page(browser, page_errors)
    page.goto(f"{server.url}/ui/approvals")
    card = page.locator(f"#approval-{unload['approval_id']}")
    expect(card).to_contain_text("admin:unload_model")
    expect(card).to_contain_text("agents.approvals.rules[4]")
    expect(card).to_contain_text("unloading stops inference")
    expect(card).to_contain_text('"model": "tiny"')

    # The human starts a note; meanwhile a second request arrives and shows up without a reload,
    # and the refresh keeps what was typed.
    note = page.get_by_label(re.compile("^Note")).and_(page.locator(f"#note-{unload['approval_id']}"))
    note.fill("maintenance window")
    reload = call_admin(server, "ops", "reload_config", {})
    reload_card = page.locator(f"#approval-{reload['approval_id']}")
    expect(reload_card).to_contain_text("admin:reload_config", timeout=10_000)
    expect(note).to_have_value("maintenance window")
    screenshot(page, "approvals")

    # Approve by keyboard: from the note field, Tab reaches the Approve button, Enter presses it.
    note.focus()
    page.keyboard.press("Tab")
    expect(page.locator(f"#approve-{unload['approval_id']}")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator(f"#history-{unload['approval_id']}")).to_contain_text("executed", timeout=15_000)
    record = outcome(server, unload["approval_id"])
    assert record["state"] == "executed" and record["note"] == "maintenance window" and record["result"]["changed"] is True

    # Deny the other with the mouse.
    page.locator(f"#note-{reload['approval_id']}").fill("not during the demo")
    page.locator(f"#deny-{reload['approval_id']}").click()
    expect(page.locator(f"#history-{reload['approval_id']}")).to_contain_text("denied")
    record = outcome(server, reload["approval_id"])
    assert record["state"] == "denied" and record["note"] == "not during the demo"
    assert not any(entry["action"] == "execute" for entry in record["audit"])
    expect(page.locator("#no-pending")).to_be_visible()
    expect(page.locator("#tab-approvals .badge")).to_have_count(0)  # the tab's pending count follows too
    expect(page.locator("#audit")).to_contain_text("not during the demo")
    screenshot(page, "approvals-decided")

    # The approved unload really ran: the model's state shows it.
    page.get_by_role("link", name="Models").click()
    expect(page.locator('#model-tiny [data-model-state="tiny"]')).to_have_text("unloaded")
    screenshot(page, "models-after-unload")

    phone = new_page(browser, page_errors, PHONE)
    phone.goto(f"{server.url}/ui/approvals")
    expect(phone.locator(f"#history-{reload['approval_id']}")).to_contain_text("denied")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scrolling
    screenshot(phone, "approvals-phone")
    phone.goto(f"{server.url}/")
    assert phone.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(phone, "overview-phone")
    assert page_errors == []


def test_memory_tab_says_how_to_enable(browser: Any, server: Server, page_errors: list[str]) -> None:
    from playwright.sync_api import expect

    page = new_page(browser, page_errors)
    page.goto(f"{server.url}/ui/memory")
    expect(page.locator("#memory-off")).to_contain_text("memory.enabled: true")
    page.goto(f"{server.url}/ui/mcp")
    expect(page.locator("#mounted-memory")).to_have_text("not mounted")
    expect(page.locator("#probe-memory")).to_contain_text("not reachable from this browser: HTTP 404")
    assert [error for error in page_errors if "404" not in error] == []
