"""Helpers for the MCP and memory tests: configs for the shared `start_server` fixture
(tests/conftest.py: a real `hal0 serve` on a free loopback port) and an SDK client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def memory_on(tmp_path: Path, **limits: Any) -> dict[str, Any]:
    return {"enabled": True, "path": str(tmp_path / "mem" / "memory.db"), **limits}


@asynccontextmanager
async def mcp_client(url: str, *, agent: str | None = None, mode: str = "auto",
                     headers: dict[str, str] | None = None) -> AsyncIterator[Client]:
    """The SDK's own client over streamable HTTP, optionally with an X-hal0-Agent header."""
    sent = {**(headers or {}), **({"X-hal0-Agent": agent} if agent is not None else {})}
    async with httpx2.AsyncClient(headers=sent, timeout=30) as http, \
            Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        yield client
