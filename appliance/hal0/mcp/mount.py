"""Mounting the two MCP servers at exactly /mcp/admin and /mcp/memory, and running them.

Each server is a plain Route to the SDK's session manager rather than a Starlette Mount: a Mount
at /mcp/admin answers a request for /mcp/admin with a 307 to /mcp/admin/, which MCP clients do
not all follow for POST. A mounted sub-app's lifespan never runs, so the parent app's lifespan
enters `McpMounts.run()`, which runs both session managers.

The SDK's own DNS-rebinding check is switched off on purpose: HostGate (gate.py) does it for
every /mcp/* path with hal0's rules, which the SDK's cannot express (portless loopback, `*`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from hal0.mcp.servers import build_admin, build_memory
from hal0.memory.service import ENABLE_HINT
from hal0.services import Services

ADMIN_PATH = "/mcp/admin"
MEMORY_PATH = "/mcp/memory"


def _session_manager(server: MCPServer) -> StreamableHTTPSessionManager:
    # streamable_http_app() is the public way to create the server's session manager; its own
    # Starlette app is not used (see the module docstring).
    server.streamable_http_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    return server.session_manager


class _Endpoint:
    """ASGI endpoint for one server; the memory one answers 404 while memory is disabled."""

    def __init__(self, manager: StreamableHTTPSessionManager, services: Services, *, memory: bool) -> None:
        self.manager = manager
        self.services = services
        self.memory = memory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.memory and not self.services.memory.enabled:
            body = {"error": {"message": ENABLE_HINT, "type": "invalid_request_error", "param": None,
                              "code": "memory_disabled"}}
            await JSONResponse(body, status_code=404)(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)


@dataclass
class McpMounts:
    admin: MCPServer
    memory: MCPServer
    routes: list[Route]
    _managers: tuple[StreamableHTTPSessionManager, ...]

    def sessions(self) -> dict[str, int | None]:
        """Open sessions per server, for the dashboard's MCP tab; None where the SDK hides it.

        The SDK has no public count: its session table is read defensively, so an SDK that
        renames it shows "unknown" rather than breaking the dashboard."""
        counts: dict[str, int | None] = {}
        for name, manager in zip(("admin", "memory"), self._managers, strict=True):
            table = getattr(manager, "_server_instances", None)
            counts[name] = len(table) if isinstance(table, dict) else None
        return counts

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for manager in self._managers:
                await stack.enter_async_context(manager.run())
            yield


def build_mcp(services: Services) -> McpMounts:
    admin, memory = build_admin(services), build_memory(services)
    admin_manager, memory_manager = _session_manager(admin), _session_manager(memory)
    routes = [
        Route(ADMIN_PATH, _Endpoint(admin_manager, services, memory=False)),
        # Always routed, answering 404 while disabled: a reload can then enable memory without a
        # restart. Its session manager holds no files, so "disabled creates nothing" still holds.
        Route(MEMORY_PATH, _Endpoint(memory_manager, services, memory=True)),
    ]
    return McpMounts(admin, memory, routes, (admin_manager, memory_manager))
