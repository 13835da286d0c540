"""The DNS-rebinding gate as ASGI middleware on /mcp/* (the rest of the API stays open, by design).

It reads the live config on each request, so `systemctl reload hal0` widens or narrows the gate
without a restart. Refusals mirror the MCP transport's: 421 with the bare body
`Invalid Host header`, 403 for an Origin that is present and not allowed.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from hal0.config.models import McpConfig
from hal0.mcp.policy import GatePolicy, compile_policy

PREFIX = "/mcp"


class McpGate:
    def __init__(self, app: ASGIApp, config: Callable[[], McpConfig]) -> None:
        self.app = app
        self._config = config
        self._cached: tuple[McpConfig, GatePolicy] | None = None

    def policy(self) -> GatePolicy:
        config = self._config()
        # Configs are frozen and swapped whole on reload, so identity tells when to recompile.
        if self._cached is None or self._cached[0] is not config:
            self._cached = (config, compile_policy(config))
        return self._cached[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        policy = self.policy()
        if not policy.host_allowed(headers.get("host")):
            response = PlainTextResponse("Invalid Host header", status_code=421)
        elif not policy.origin_allowed(headers.get("origin")):
            response = PlainTextResponse("Invalid Origin header", status_code=403)
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
