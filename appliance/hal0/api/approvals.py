"""The approval API: the human channel that clears what agents asked for, and the audit log.

Approve and deny are refused for any request that carries an agent identity: an agent can read
the outcome of its own approvals, never decide them (and they are not MCP tools either).
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hal0.agents import AGENT_HEADER
from hal0.agents.approvals import STATES, TransitionError
from hal0.api.body import ascii_int, parse_json
from hal0.api.errors import ApiError, bad_request, refused
from hal0.api.generation import services_of
from hal0.api.identity import agent_of
from hal0.tools import ToolContext, tool
from hal0.tools.gated import ToolRefusedError, call_tool, decide_approval

log = logging.getLogger("hal0.approvals")


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(None, max_length=2000)
    by: str | None = Field(None, min_length=1, max_length=128, description="Who decides; default: the proxy's user or 'operator'.")


def _limit(request: Request) -> int:
    value = request.query_params.get("limit", "100")
    number = ascii_int(value)
    if number is None or not 1 <= number <= 1000:
        raise bad_request(f"limit must be an integer from 1 to 1000, got {value!r}", param="limit")
    return number


def _caller_agent(request: Request) -> str | None:
    """The agent id when the request carries one (validated), else None (a human)."""
    if AGENT_HEADER.lower() not in request.headers:
        return None
    return agent_of(request, services_of(request))


async def list_approvals(request: Request) -> JSONResponse:
    services = services_of(request)
    state = request.query_params.get("state") or None
    if state is not None and state not in STATES:
        raise bad_request(f"state must be one of {', '.join(STATES)}, got {state!r}", param="state")
    limit = _limit(request)
    caller = _caller_agent(request)
    if caller is not None:
        # An agent lists its own approvals by calling admin:list_approvals through the policy door (its
        # persona's tools, the rules, its quota), the same call as over MCP. Its own approval's status_url
        # (GET /api/approvals/{id}) stays readable: that is how it learns the outcome of what it asked.
        try:
            result = await call_tool(tool("admin:list_approvals"), ToolContext(services, caller), {"state": state, "limit": limit})
        except ToolRefusedError as error:
            raise refused(str(error), error.code, error.retry_after) from None
        return JSONResponse(result)
    store = services.approvals
    items = store.list(state=state, agent=request.query_params.get("agent") or None, limit=limit)
    return JSONResponse({"approvals": [item.as_dict() for item in items], "pending": store.pending_count(agent=None)})


def _found(request: Request) -> Any:
    store = services_of(request).approvals
    approval = store.get(request.path_params["id"])
    caller = _caller_agent(request)
    # An agent sees only its own approvals; another's answers exactly like a missing one.
    if approval is None or (caller is not None and approval.agent != caller):
        raise ApiError(404, f"approval {request.path_params['id']!r} does not exist", param="id", code="approval_not_found")
    return approval


async def get_approval(request: Request) -> JSONResponse:
    approval = _found(request)
    trail = services_of(request).approvals.audit(approval_id=approval.id)
    return JSONResponse({**approval.as_dict(), "audit": trail})


async def _decide(request: Request, approve: bool) -> JSONResponse:
    if AGENT_HEADER.lower() in request.headers:
        raise ApiError(403, "agents cannot approve or deny; a human clears approvals (dashboard, CLI or this API without X-hal0-Agent)",
                       code="agents_cannot_decide")
    # Host and Origin were checked before this runs: these routes are behind the DNS-rebinding gate
    # (hal0.mcp.gate.HostGate, see `human_channel`), which a same-host comparison could not replace.
    services = services_of(request)
    body = await parse_json(request, DecisionBody, services.config.server.max_body_bytes, optional=True)
    by = body.by or request.headers.get("x-forwarded-user") or request.headers.get("x-remote-user") or "operator"
    approval = _found(request)
    try:
        outcome = await decide_approval(services, approval.id, approve=approve, by=by, note=body.note)
    except TransitionError as error:
        raise ApiError(409, str(error), param="id", code="not_pending") from None
    return JSONResponse(outcome.as_dict())


async def approve(request: Request) -> JSONResponse:
    return await _decide(request, approve=True)


async def deny(request: Request) -> JSONResponse:
    return await _decide(request, approve=False)


async def audit(request: Request) -> JSONResponse:
    store = services_of(request).approvals
    # Scoped like the queue: an agent reads the trail of its own approvals only; a human reads all.
    entries = store.audit(approval_id=request.query_params.get("approval_id") or None, agent=_caller_agent(request),
                          limit=_limit(request))
    return JSONResponse({"audit": entries})


# The state-changing routes the dashboard uses: app.py puts them behind the same Host/Origin gate as /mcp/*.
human_channel = [
    Route("/api/approvals/{id}/approve", approve, methods=["POST"]),
    Route("/api/approvals/{id}/deny", deny, methods=["POST"]),
]

routes = [
    Route("/api/approvals", list_approvals, methods=["GET"]),
    Route("/api/approvals/{id}", get_approval, methods=["GET"]),
    *human_channel,
    Route("/api/audit", audit, methods=["GET"]),
]
