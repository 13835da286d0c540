"""The caller's agent id for a REST request (400 naming the rule when the header is invalid)."""

from __future__ import annotations

from starlette.requests import Request

from hal0.agents import AGENT_HEADER, InvalidAgentIdError, resolve_agent
from hal0.api.errors import bad_request
from hal0.services import Services


def agent_of(request: Request, services: Services) -> str:
    try:
        return resolve_agent(request.headers.get(AGENT_HEADER), services.config.agents.default_agent)
    except InvalidAgentIdError as error:
        raise bad_request(str(error), param=AGENT_HEADER, code="invalid_agent_id") from None
