"""create_app(config) -> Starlette: wires the layers, the lifespan and the mounts."""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hal0 import dashboard
from hal0.api import approvals, health, identity, llamacpp, memory, messages, openai, openapi, responses
from hal0.api.errors import ApiError, error_response, storage_error
from hal0.api.metrics import MetricsMiddleware, metrics_endpoint
from hal0.config import LoadedConfig
from hal0.mcp.gate import HostGate
from hal0.mcp.mount import build_mcp
from hal0.services import Services
from hal0.tools import housekeeping

log = logging.getLogger("hal0")


async def _api_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return error_response(error)


async def _http_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    kind = "not_found" if error.status_code == 404 else "method_not_allowed" if error.status_code == 405 else "http_error"
    body = {"error": {"message": error.detail, "type": "invalid_request_error", "param": None, "code": kind}}
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)


def create_app(loaded: LoadedConfig, *, load_models: bool = True, reload_on_sighup: bool = False) -> Starlette:
    services = Services.create(loaded)
    mcp = build_mcp(services)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # Start-up models load in the background (/health answers 503 "loading" meanwhile), then the
        # same task unloads idle models past their keep_alive.
        loader = asyncio.create_task(services.lifecycle.run()) if load_models else None
        reloads: set[asyncio.Task[object]] = set()  # held until done: the loop keeps only weak references

        def on_sighup() -> None:
            task = asyncio.ensure_future(services.reload_off_loop())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        if reload_on_sighup:
            # `systemctl reload hal0`: re-read and re-validate policy in process, no dropped connections,
            # off the event loop (a hostile or slow file must not stall requests).
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, on_sighup)
        approval_queue = asyncio.create_task(housekeeping.run(services, housekeeping.recover(services)))
        try:
            async with mcp.run():  # the mounted MCP servers' session managers
                yield
        finally:
            approval_queue.cancel()
            if loader is not None and not loader.done():
                loader.cancel()
            services.close()

    routes = [*health.routes, *openai.routes, *llamacpp.routes, *responses.routes, *messages.routes, *memory.routes, *approvals.routes, *identity.routes,
              *openapi.routes, *mcp.routes,
              Route("/metrics", metrics_endpoint, methods=["GET"]), *dashboard.routes]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        # The DNS-rebinding gate covers /mcp/* and the human channel; the trusted-proxy gate every X-hal0-Agent
        # header. Both read the live config, so a reload applies at once.
        middleware=[Middleware(HostGate, config=lambda: services.config.mcp, port=loaded.config.server.port, routes=approvals.human_channel),
                    Middleware(identity.TrustedProxyGate, services=services)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error, sqlite3.OperationalError: storage_error},
    )
    app.user_middleware.insert(0, Middleware(MetricsMiddleware, metrics=services.metrics, router=app.router))
    app.state.services = services
    app.state.mcp = mcp  # the dashboard's MCP tab reads the mounted servers and their sessions
    return app
