"""HTTP side of the metrics: the /metrics endpoint and the middleware that counts requests."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hal0.metrics import Metrics


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.services.metrics
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


def route_label(app: ASGIApp, scope: Scope) -> str:
    """The route template (bounded cardinality), never the raw path."""
    for route in getattr(app, "routes", []):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return getattr(route, "path", "other")
    return "unmatched"


class MetricsMiddleware:
    """Counts every HTTP request and times it until its last body byte (streams included)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, router: ASGIApp) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = route_label(self.router, scope)
        status = 500

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.duration.labels(route).observe(time.perf_counter() - started)
