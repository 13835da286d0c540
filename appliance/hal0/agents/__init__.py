"""Layer 2: who is calling (identity and trusted proxies), personas, the rule engine, quotas and
fair share, and the approval queue."""

from hal0.agents.identity import AGENT_HEADER, Identity, InvalidAgentIdError, UntrustedPeerError, identify, resolve_agent

__all__ = ["AGENT_HEADER", "Identity", "InvalidAgentIdError", "UntrustedPeerError", "identify", "resolve_agent"]
