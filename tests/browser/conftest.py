"""Headless Chromium for the dashboard tests: Debian's `chromium` driven by Playwright for Python.

Nothing here downloads a browser (never `playwright install`): tests/tools/install-browser.sh
installs the distro's chromium and the playwright package. Without either, these tests skip and
say which is missing. Screenshots go to build/screenshots/ (gitignored), as test artifacts.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("HAL0_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"
# The flags a headless, sandboxed, offline CI needs: no sandbox (root in a container), no GPU,
# /tmp instead of a small /dev/shm, and none of Chromium's own network chatter.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (run tests/tools/install-browser.sh .venv)"
    if not Path(CHROMIUM).is_file():
        return f"no chromium at {CHROMIUM} (run tests/tools/install-browser.sh .venv, or set HAL0_CHROMIUM)"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    reason = missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page_errors() -> list[str]:
    return []


def new_page(browser: Any, errors: list[str], viewport: dict[str, int] = DESKTOP) -> Any:
    """A page that records console errors and uncaught exceptions into `errors`."""
    page = browser.new_page(viewport=viewport)
    page.set_default_timeout(15_000)
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    page.on("console", lambda message: errors.append(f"console: {message.text}") if message.type == "error" else None)
    return page


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
