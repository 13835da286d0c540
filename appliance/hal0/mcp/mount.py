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

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import INVALID_REQUEST
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from hal0.agents import AGENT_HEADER, InvalidAgentIdError, resolve_agent
from hal0.api.body import read_body
from hal0.api.errors import ApiError
from hal0.config.models import McpSessions, ServerConfig
from hal0.mcp.servers import build_admin, build_memory
from hal0.mcp.sessions import SessionCollector, SessionTable
from hal0.memory.service import ENABLE_HINT
from hal0.services import Services

ADMIN_PATH = "/mcp/admin"
INVALID_AGENT = "(invalid X-hal0-Agent)"  # not a valid id, so no real agent can share its bucket
MEMORY_PATH = "/mcp/memory"


# The SDK's own body limit is set past anything server.max_body_bytes allows: hal0's limit, read live
# from the config, is the one that applies (the SDK's default was 4 MiB whatever hal0 said).
_SDK_BODY_LIMIT = ServerConfig.model_fields["max_body_bytes"].metadata[-1].le


def _session_manager(server: MCPServer, sessions: McpSessions) -> StreamableHTTPSessionManager:
    # streamable_http_app() is the public way to create the server's session manager; its own
    # Starlette app is not used (see the module docstring).
    server.streamable_http_app(transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
                               max_request_body_size=_SDK_BODY_LIMIT, session_idle_timeout=sessions.idle_timeout_s)
    return server.session_manager


def _jsonrpc_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error before the SDK sees the request, in the shape the SDK's own refusals have."""
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": INVALID_REQUEST, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _buffered_body(scope: Scope, receive: Receive, limit: int) -> tuple[Receive, Response | None]:
    """Read a POST body within server.max_body_bytes, then hand the SDK a receive that replays it."""
    try:
        body = await read_body(Request(scope, receive), limit)
    except ApiError as error:
        return receive, _jsonrpc_error(error.status, error.message)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later: the client's disconnect, which ends an SSE response

    return replay, None


class _Endpoint:
    """ASGI endpoint for one server: hal0's body limit and session caps, then the SDK.

    The memory one answers 404 while memory is disabled."""

    def __init__(self, manager: StreamableHTTPSessionManager, services: Services, table: SessionTable, *, memory: bool) -> None:
        self.manager = manager
        self.services = services
        self.table = table
        self.memory = memory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.memory and not self.services.memory.enabled:
            body = {"error": {"message": ENABLE_HINT, "type": "invalid_request_error", "param": None,
                              "code": "memory_disabled"}}
            await JSONResponse(body, status_code=404)(scope, receive, send)
            return
        config = self.services.config
        if scope["method"] == "POST":
            receive, refused = await _buffered_body(scope, receive, config.server.max_body_bytes)
            if refused is not None:
                await refused(scope, receive, send)
                return
            if MCP_SESSION_ID_HEADER not in Headers(scope=scope):
                await self._open_session(scope, receive, send)
                return
        await self.manager.handle_request(scope, receive, send)

    async def _open_session(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request without a session id opens one: the caps apply, and the new session is recorded."""
        sessions = self.services.config.mcp.sessions
        try:
            agent = resolve_agent(Headers(scope=scope).get(AGENT_HEADER), self.services.config.agents.default_agent)
        except InvalidAgentIdError:
            # The SDK reports the invalid header as a protocol error (-32602) on the call itself;
            # for the caps every invalid id shares one bucket, so varying it gains nothing.
            agent = INVALID_AGENT
        refusal = self.table.reserve(agent, sessions)
        if refusal is not None:
            self.services.metrics.mcp_sessions_refused.labels(refusal.reason).inc()
            await _jsonrpc_error(refusal.status, refusal.message, {"Retry-After": str(refusal.retry_after)})(scope, receive, send)
            return
        self.manager.session_idle_timeout = sessions.idle_timeout_s  # the live value, read by the SDK at admission
        opened: str | None = None
        settled = False

        async def record(message: Message) -> None:
            nonlocal opened, settled
            if message["type"] == "http.response.start" and not settled:
                settled = True
                if message["status"] < 400:
                    opened = Headers(raw=message.get("headers", [])).get(MCP_SESSION_ID_HEADER)
                self.table.settle(agent, opened)
            await send(message)

        try:
            await self.manager.handle_request(scope, receive, record)
        finally:
            if not settled:
                self.table.settle(agent, None)


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

    def live_sessions(self) -> set[str] | None:
        """Every session id the SDK still serves, over both servers; None where the SDK hides them."""
        live: set[str] = set()
        for manager in self._managers:
            table = getattr(manager, "_server_instances", None)
            if not isinstance(table, dict):
                return None
            live.update(table)
        return live

    def expires_in(self, session_id: str) -> float | None:
        """Seconds until the SDK closes this session if it stays idle: inf while a request of it is in
        flight, None where the SDK hides it. Read defensively, like `sessions`: the SDK documents the
        transport's `idle_scope` (cancelled at its deadline) but keeps its session table private."""
        for manager in self._managers:
            table = getattr(manager, "_server_instances", None)
            transport = table.get(session_id) if isinstance(table, dict) else None
            scope = getattr(transport, "idle_scope", None)
            deadline = getattr(scope, "deadline", None)
            if isinstance(deadline, int | float):
                return max(0.0, deadline - anyio.current_time())
        return None

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for manager in self._managers:
                await stack.enter_async_context(manager.run())
            yield


def build_mcp(services: Services) -> McpMounts:
    admin, memory = build_admin(services), build_memory(services)
    sessions = services.config.mcp.sessions
    admin_manager, memory_manager = _session_manager(admin, sessions), _session_manager(memory, sessions)
    mounts: McpMounts
    # one table: the caps count both servers together
    table = SessionTable(lambda: mounts.live_sessions(), lambda session_id: mounts.expires_in(session_id))
    routes = [
        Route(ADMIN_PATH, _Endpoint(admin_manager, services, table, memory=False)),
        # Always routed, answering 404 while disabled: a reload can then enable memory without a
        # restart. Its session manager holds no files, so "disabled creates nothing" still holds.
        Route(MEMORY_PATH, _Endpoint(memory_manager, services, table, memory=True)),
    ]
    mounts = McpMounts(admin, memory, routes, (admin_manager, memory_manager))
    services.metrics.registry.register(SessionCollector(mounts.sessions))
    return mounts
