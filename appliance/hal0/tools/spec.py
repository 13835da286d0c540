"""What a tool is: a typed async function plus the metadata every surface shows the same way.

The function's signature (after the leading `ToolContext`) is the tool's input schema: MCP derives
its JSON Schema from it and REST validates into the same parameters. The hints are the truth
about effects; `privileged` marks the state-changing tools the approval policy gates.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from hal0.services import Services

Server = Literal["admin", "memory"]


@dataclass(frozen=True)
class ToolContext:
    """Who is calling and the live services the call may use."""

    services: Services
    agent: str


class ToolFailedError(Exception):
    """An expected failure, reported to the caller as the tool's error (not a crash)."""


@dataclass(frozen=True)
class ToolSpec:
    server: Server
    name: str
    title: str
    description: str
    fn: Callable[..., Awaitable[dict[str, Any]]]
    read_only: bool
    destructive: bool
    idempotent: bool
    privileged: bool = False
    # Checks arguments against the live box (e.g. that a model exists) before any policy runs, so
    # an impossible call fails at once instead of waiting in the approval queue for a human.
    check: Callable[[ToolContext, dict[str, Any]], None] | None = None

    @property
    def qualified(self) -> str:
        """`server:tool`, the name the approval rules and persona tool lists match."""
        return f"{self.server}:{self.name}"

    def check_arguments(self, call: ToolContext, arguments: dict[str, Any]) -> None:
        """Raise ToolFailedError for arguments this box cannot act on."""
        if self.check is not None:
            self.check(call, arguments)

    def parameters(self) -> list[inspect.Parameter]:
        """The tool's own parameters: the function's, without the leading ToolContext."""
        return list(inspect.signature(self.fn, eval_str=True).parameters.values())[1:]


async def invoke(spec: ToolSpec, call: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run a tool, once the policy door (tools.policy.evaluate) has let the call through: every surface
    runs tools here, and none runs one without asking the door first."""
    return await spec.fn(call, **arguments)
