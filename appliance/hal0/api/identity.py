"""The caller's identity for a REST request: 400 naming the rule when the header is invalid, 403
naming agents.identity.trusted_proxies when a peer that is not a trusted proxy sends it."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from hal0.agents import AGENT_HEADER, Identity, InvalidAgentIdError, UntrustedPeerError, identify
from hal0.agents.identity import peer_trusted
from hal0.api.errors import ApiError, bad_request, error_response
from hal0.services import Services


def peer_of(request: Request) -> str | None:
    return request.client.host if request.client else None


def identity_of(request: Request, services: Services) -> Identity:
    agents = services.config.agents
    try:
        return identify(request.headers.get(AGENT_HEADER), peer_of(request), agents.default_agent, agents.identity)
    except UntrustedPeerError as error:
        raise untrusted(error) from None
    except InvalidAgentIdError as error:
        raise bad_request(str(error), param=AGENT_HEADER, code="invalid_agent_id") from None


def untrusted(error: UntrustedPeerError) -> ApiError:
    return ApiError(403, str(error), type="permission_error", param=AGENT_HEADER, code="untrusted_agent_header")


def agent_of(request: Request, services: Services) -> str:
    return identity_of(request, services).agent


class TrustedProxyGate:
    """ASGI middleware: any request (REST, MCP, dashboard) carrying X-hal0-Agent from a peer outside
    agents.identity.trusted_proxies is refused with 403 before a route sees it. It reads the live
    config per request, so a reload changes the list at once."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and AGENT_HEADER.lower() in Headers(scope=scope):
            client = scope.get("client")
            peer = client[0] if client else None
            if not peer_trusted(peer, self.services.config.agents.identity):
                await error_response(untrusted(UntrustedPeerError(peer)))(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def whoami(request: Request) -> JSONResponse:
    services: Services = request.app.state.services
    return JSONResponse(identity_of(request, services).describe(services.config.agents))


routes = [Route("/api/whoami", whoami, methods=["GET"])]
