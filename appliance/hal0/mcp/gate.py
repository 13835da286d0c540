"""The DNS-rebinding gate as ASGI middleware: /mcp/* and the human channel's state-changing routes.

Under DNS rebinding a web page on the internet, loaded by a browser on the LAN, talks to hal0 under
the attacker's own name: Host and Origin are both `rebind.attacker.example`, so comparing one with the
other proves nothing. What does hold is an allowlist of the names hal0 is really reached by (loopback
plus `mcp.allowed_hosts`, where site.yml puts the proxy's names) and of the exact origins derived from
them. The MCP mounts and the routes a human uses to change state (approve/deny: the approval queue
exists so that a human, not a page, decides) pass it; the rest of the API stays open, by design.

It reads the live config on each request, so `systemctl reload hal0` widens or narrows the gate
without a restart. Refusals on /mcp/* mirror the MCP transport's: 421 with the bare body
`Invalid Host header`, 403 for an Origin that is present and not allowed. The API routes answer the
same statuses in the API's error shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from hal0.api.errors import ApiError, error_response
from hal0.config.models import McpConfig
from hal0.mcp.host_allowlist import HostAllowlist, compile_allowlist

PREFIX = "/mcp"


class HostGate:
    def __init__(self, app: ASGIApp, config: Callable[[], McpConfig], port: int, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self._config = config
        self._port = port  # the port hal0 listens on (a reload cannot change it): the human channel's own origin
        self._routes = tuple(routes)
        self._cached: tuple[McpConfig, HostAllowlist] | None = None

    def allowlist(self) -> HostAllowlist:
        config = self._config()
        # Configs are frozen and swapped whole on reload, so identity tells when to recompile.
        if self._cached is None or self._cached[0] is not config:
            self._cached = (config, compile_allowlist(config, self._port))
        return self._cached[1]

    def _guarded(self, scope: Scope) -> str | None:
        """"mcp" or "api" for a request the gate covers, None for the open rest of the API."""
        if scope["type"] != "http":
            return None
        path = scope.get("path", "")
        if path == PREFIX or path.startswith(PREFIX + "/"):
            return "mcp"
        # Match.FULL includes the method: a GET of the same path is not state-changing.
        return "api" if any(route.matches(scope)[0] is Match.FULL for route in self._routes) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        surface = self._guarded(scope)
        if surface is None:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        allowlist = self.allowlist()
        host, origin = headers.get("host"), headers.get("origin")
        response: Response
        if not allowlist.host_allowed(host):
            response = PlainTextResponse("Invalid Host header", status_code=421) if surface == "mcp" else error_response(ApiError(
                421, f"Invalid Host header {host!r}: this route changes state and accepts only the names hal0 is served by "
                "(loopback and mcp.allowed_hosts), against DNS rebinding", param="Host", code="invalid_host"))
        elif not allowlist.origin_allowed(origin, channel=surface == "api"):
            response = PlainTextResponse("Invalid Origin header", status_code=403) if surface == "mcp" else error_response(ApiError(
                403, f"cross-origin request refused: Origin {origin!r} is not an allowed origin (scheme, host and port: hal0's own "
                "page on loopback, or of mcp.allowed_hosts, or mcp.allowed_origins)", param="Origin", code="cross_origin"))
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
