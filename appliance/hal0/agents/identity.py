"""The caller's identity: the X-hal0-Agent header, or the configured default.

This is a label that selects a namespace and a persona, not authentication: anyone who can reach
the port can send any id. Access control belongs at the reverse proxy (see the security page).
The id is validated here, once, before it can reach storage, logs or SQL.
"""

from __future__ import annotations

import re

from hal0.config.models import AGENT_ID_PATTERN

AGENT_HEADER = "X-hal0-Agent"
_AGENT_ID = re.compile(AGENT_ID_PATTERN)
RULE = "1 to 64 characters from a-z, A-Z, 0-9, '_' and '-'"


class InvalidAgentIdError(ValueError):
    def __init__(self, value: str) -> None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        super().__init__(f"invalid {AGENT_HEADER} header {shown!r}: an agent id is {RULE}")
        self.value = value


def resolve_agent(header: str | None, default: str) -> str:
    """The agent id for a request. An absent header means `default`; a present one must be valid,
    even when empty, so a client bug is reported instead of silently using someone else's namespace."""
    if header is None:
        return default
    # fullmatch, not match: with match, the pattern's `$` would accept a trailing newline.
    if not _AGENT_ID.fullmatch(header):
        raise InvalidAgentIdError(header)
    return header
