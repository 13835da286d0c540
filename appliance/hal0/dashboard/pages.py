"""The dashboard's routes: one page per tab under /ui/ (Overview at /), the HTML fragments the
pages poll to stay live, and the static files. Everything here reads; the only writes a page
makes are the approve/deny calls its script sends to the approval API (the human channel)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from hal0.agents import AGENT_HEADER, InvalidAgentIdError, UntrustedPeerError, identify, resolve_agent
from hal0.dashboard.config_view import config_tab
from hal0.dashboard.mcp_view import mcp_tab
from hal0.dashboard.memory_view import memory_tab
from hal0.dashboard.rates import RateSampler
from hal0.dashboard.render import STATIC, render
from hal0.dashboard.status import model_rows, overview
from hal0.services import Services

# (id, label, URL relative to the app root)
TABS = (
    ("overview", "Overview", "./"),
    ("models", "Models", "ui/models"),
    ("mcp", "MCP", "ui/mcp"),
    ("approvals", "Approvals", "ui/approvals"),
    ("memory", "Memory", "ui/memory"),
    ("config", "Config", "ui/config"),
)
HISTORY = 100
AUDIT = 100


def _services(request: Request) -> Services:
    return request.app.state.services


def _sampler(request: Request) -> RateSampler:
    # One sampler per app, made on first use: the app's state outlives any one request.
    sampler = getattr(request.app.state, "dashboard_rates", None)
    if sampler is None:
        sampler = request.app.state.dashboard_rates = RateSampler(_services(request).metrics)
    return sampler


def _page(request: Request, template: str, tab: str, **context: Any) -> HTMLResponse:
    services = _services(request)
    store = services.approvals_if_present()
    here = {key: url for key, _, url in TABS}[tab]
    return render(request, template, tab=tab, tabs=TABS, here=here, version=services.version,
                  pending_count=store.pending_count() if store is not None else 0, **context)


def _approvals(services: Services) -> dict[str, Any]:
    store = services.approvals_if_present()  # reading must not create the queue's database
    if store is None:
        return {"pending": [], "history": [], "audit": [], "exists": False}
    everything = store.list(limit=HISTORY + store.pending_count())
    return {
        "pending": [item for item in everything if item.state == "pending"],
        "history": [item for item in everything if item.state != "pending"][:HISTORY],
        "audit": store.audit(limit=AUDIT),
        "exists": True,
    }


def _whoami(request: Request) -> dict[str, Any]:
    """What hal0 believes about this browser's requests (GET /api/whoami), or why it refuses them."""
    agents = _services(request).config.agents
    peer = request.client.host if request.client else None
    try:
        return identify(request.headers.get(AGENT_HEADER), peer, agents.default_agent, agents.identity).describe(agents)
    except (InvalidAgentIdError, UntrustedPeerError) as error:
        return {"agent": None, "persona": None, "source": "refused", "peer": peer, "error": str(error)}


async def overview_page(request: Request) -> Response:
    services = _services(request)
    return _page(request, "overview.html", "overview", o=overview(services), rates=_sampler(request).sample(), me=_whoami(request))


async def models_page(request: Request) -> Response:
    return _page(request, "models.html", "models", models=model_rows(_services(request)))


async def mcp_page(request: Request) -> Response:
    services = _services(request)
    default = services.config.agents.default_agent
    wanted = request.query_params.get("agent") or None
    try:
        agent, error = resolve_agent(wanted, default), None
    except InvalidAgentIdError as invalid:
        agent, error = default, str(invalid)
    view = await mcp_tab(services, request.app.state.mcp, agent)
    return _page(request, "mcp.html", "mcp", m=view, agent_error=error, asked=wanted or "")


async def approvals_page(request: Request) -> Response:
    return _page(request, "approvals.html", "approvals", a=_approvals(_services(request)))


async def memory_page(request: Request) -> Response:
    params = request.query_params
    view = memory_tab(_services(request), params.get("ns") or None, params.get("q") or None, params.get("item") or None)
    return _page(request, "memory.html", "memory", mem=view)


async def config_page(request: Request) -> Response:
    # The tab validates the file on disk: blocking work, kept off the event loop like a reload.
    view = await asyncio.to_thread(config_tab, _services(request))
    return _page(request, "config.html", "config", c=view)


async def fragment(request: Request) -> Response:
    """The live parts of a page, re-fetched by dashboard.js every 2 s."""
    services = _services(request)
    name = request.path_params["name"]
    if name == "overview":
        return render(request, "_overview.html", o=overview(services), rates=_sampler(request).sample(), me=_whoami(request))
    if name == "models":
        return render(request, "_models.html", models=model_rows(services))
    if name in ("pending", "history", "audit"):
        return render(request, f"_{name}.html", a=_approvals(services))
    return render(request, "_missing.html", status=404, name=name)


async def fleet_boxes(request: Request) -> Response:
    """No fleet seen from here. roles/reverse_proxy answers this path itself with the boxes it forwards
    to, so the Overview viewed through the proxy lists them; on hal0's own port the list is empty and the
    Overview's fleet section stays hidden (an empty answer rather than a 404 the browser would log)."""
    return JSONResponse({"boxes": [], "drained": []}, headers={"Cache-Control": "no-store"})


routes: list[BaseRoute] = [
    Route("/", overview_page, methods=["GET"]),
    Route("/ui/models", models_page, methods=["GET"]),
    Route("/ui/mcp", mcp_page, methods=["GET"]),
    Route("/ui/approvals", approvals_page, methods=["GET"]),
    Route("/ui/memory", memory_page, methods=["GET"]),
    Route("/ui/config", config_page, methods=["GET"]),
    Route("/ui/fragments/{name}", fragment, methods=["GET"]),
    Route("/fleet/boxes.json", fleet_boxes, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
]
