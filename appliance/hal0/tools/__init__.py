"""Layer 3: the catalogue of actions. A tool is defined here once; MCP, REST and (later) the
dashboard and the approval policy all read the same entries."""

from __future__ import annotations

from hal0.tools import admin, memory
from hal0.tools.spec import Server, ToolContext, ToolFailedError, ToolSpec, invoke

CATALOGUE: tuple[ToolSpec, ...] = (*admin.TOOLS, *memory.TOOLS)
_BY_NAME = {spec.qualified: spec for spec in CATALOGUE}


def tools_of(server: Server) -> tuple[ToolSpec, ...]:
    return tuple(spec for spec in CATALOGUE if spec.server == server)


def tool(qualified: str) -> ToolSpec:
    """`memory:recall` -> its spec (KeyError when unknown)."""
    return _BY_NAME[qualified]


__all__ = ["CATALOGUE", "Server", "ToolContext", "ToolFailedError", "ToolSpec", "invoke", "tool", "tools_of"]
