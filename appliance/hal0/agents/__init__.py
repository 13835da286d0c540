"""Layer 2: who is calling (identity); personas and approvals arrive with the agents issue."""

from hal0.agents.identity import AGENT_HEADER, InvalidAgentIdError, resolve_agent

__all__ = ["AGENT_HEADER", "InvalidAgentIdError", "resolve_agent"]
