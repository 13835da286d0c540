"""The Overview's fleet section in a real browser: hidden on hal0's own port; through the fleet lab's
proxy (the fleet session runs this file with HAL0_FLEET_* set) one row per box with what each reports.

HAL0_FLEET_PROXY   the proxy's URL (https://...), HAL0_FLEET_AUTH  user:password,
HAL0_FLEET_EXPECT  comma-separated ADDRESS=HOSTNAME (a healthy box) or ADDRESS=unreachable,
HAL0_FLEET_STRAGGLERS  how many reachable boxes run another version or config than most,
HAL0_FLEET_DRAINED  comma-separated addresses the proxy has drained (out of rotation).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.browser.conftest import new_page, screenshot
from tests.conftest import Server


def test_fleet_section_hidden_on_hal0s_own_port(browser: Any, server: Server, page_errors: list[str]) -> None:
    from playwright.sync_api import expect

    page = new_page(browser, page_errors)
    with page.expect_response(lambda response: response.url.endswith("/fleet/boxes.json")) as answer:
        page.goto(f"{server.url}/")
    assert answer.value.json() == {"boxes": [], "drained": []}
    expect(page.locator("#ov-hostname")).not_to_be_empty()
    expect(page.locator("#fleet")).to_be_hidden()
    assert page_errors == []


@pytest.mark.skipif(not os.environ.get("HAL0_FLEET_PROXY"), reason="run by the fleet session (HAL0_FLEET_PROXY)")
def test_fleet_through_the_proxy(browser: Any, page_errors: list[str]) -> None:
    from playwright.sync_api import expect

    user, password = os.environ["HAL0_FLEET_AUTH"].split(":", 1)
    expected = dict(pair.split("=", 1) for pair in os.environ["HAL0_FLEET_EXPECT"].split(","))
    # The lab proxy's certificate is self-signed (its TLS is checked by tests/infra/test_proxy.py).
    context = browser.new_context(http_credentials={"username": user, "password": password}, ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.on("console", lambda message: page_errors.append(message.text) if message.type == "error" else None)
    page.goto(os.environ["HAL0_FLEET_PROXY"] + "/")
    expect(page.locator("#fleet[data-done]")).to_be_visible(timeout=15_000)  # a failed round is retried in 5 s
    rows = page.locator("#fleet-rows tr")
    expect(rows).to_have_count(len(expected))
    for address, state in expected.items():
        row = page.locator(f'#fleet-rows tr[data-box="{address}"]')
        if state == "unreachable":
            expect(row.locator('td[data-label="Health"]')).to_contain_text("unreachable")
        else:
            expect(row.locator("th")).to_have_text(state)
            expect(row.locator('td[data-label="Health"]')).to_have_text("ok")
    drained = {address for address in os.environ.get("HAL0_FLEET_DRAINED", "").split(",") if address}
    for address in expected:
        text = "drained" if address in drained else "in rotation"
        expect(page.locator(f'#fleet-rows tr[data-box="{address}"] td[data-label="Proxy"]')).to_have_text(text)
    stragglers = int(os.environ.get("HAL0_FLEET_STRAGGLERS", "0"))
    expect(page.locator('#fleet-rows tr[data-straggler="1"]')).to_have_count(stragglers)
    expect(page.locator("#fleet-summary")).to_contain_text(f"{len(expected)} boxes")
    screenshot(page, f"fleet-overview-{stragglers}-stragglers")
    context.close()
    # A box that is down answers 502 through the proxy: the browser logs that, nothing else.
    assert [error for error in page_errors if "502" not in error] == []
