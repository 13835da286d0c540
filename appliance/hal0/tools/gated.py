"""Running an agent's tool call as the policy door (tools.policy.evaluate) decided it: refused, run, or queued.

This module decides nothing itself: `call_tool` (what MCP and REST use for an agent) asks the door, then
acts on its Decision. An `ask` never runs the tool: it queues an approval and returns a pending result at
once. A human clears it through `decide_approval` (dashboard, CLI and approval API all end here), which
runs exactly the stored arguments, once.
"""

from __future__ import annotations

import logging
from typing import Any

from hal0 import faults
from hal0.agents.approvals import Approval, PendingLimitError
from hal0.config.durations import seconds
from hal0.tools.policy import Decision, evaluate
from hal0.tools.spec import ToolContext, ToolFailedError, ToolSpec, invoke

log = logging.getLogger("hal0.approvals")


class ToolRefusedError(ToolFailedError):
    """Refused by policy (persona tool list, a deny rule or a quota); the message names the rule."""

    def __init__(self, message: str, code: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after  # seconds, for rate_limit_exceeded


def decision_for(spec: ToolSpec, call: ToolContext, arguments: dict[str, Any] | None = None) -> Decision:
    """The policy door (tools.policy.evaluate) under the live config, for this caller."""
    return evaluate(call.services.config.agents, call.agent, spec, arguments or {})


def visible_to(spec: ToolSpec, call: ToolContext) -> bool:
    """Whether the agent's persona lists the tool (tools/list shows only these)."""
    return decision_for(spec, call).visible


def pending_result(approval: Approval, created: bool) -> dict[str, Any]:
    return {
        "status": "pending",
        "approval_id": approval.id,
        "status_url": f"/api/approvals/{approval.id}",
        "tool": approval.tool,
        "rule": approval.rule,
        "reason": approval.reason,
        "expires_at": approval.expires_at,
        "new": created,
        "message": f"{approval.tool} needs a human's approval ({approval.reason}); "
        f"fetch the outcome from /api/approvals/{approval.id}",
    }


async def call_tool(spec: ToolSpec, call: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
    agents = call.services.config.agents
    decision = evaluate(agents, call.agent, spec, arguments, quotas=call.services.quotas)
    if decision.verdict in ("refused", "deny", "limited"):
        raise ToolRefusedError(decision.message, code=decision.code, retry_after=decision.retry_after)
    spec.check_arguments(call, arguments)  # an impossible call fails now, not after a human approved it
    if decision.verdict == "ask":
        store = call.services.approvals
        rule = decision.approval_rule
        grant_ttl = seconds(rule.expires_after) if rule and rule.expires_after else None
        if grant_ttl is not None and store.granted(call.agent, spec.qualified, arguments):
            return await invoke(spec, call, arguments)  # a recent approval of this very call still holds
        try:
            approval, created = store.enqueue(
                call.agent, spec.qualified, arguments, rule=decision.rule, reason=decision.reason,
                ttl_s=seconds(agents.approvals.pending_ttl), grant_ttl_s=grant_ttl, max_pending=agents.approvals.max_pending_per_agent,
            )
        except PendingLimitError as error:
            raise ToolRefusedError(str(error), code="too_many_pending") from None
        return pending_result(approval, created)
    return await invoke(spec, call, arguments)


async def execute(services: Any, approval_id: str) -> Approval:
    """Run an approved call with its stored arguments. Only the caller that claims it runs it."""
    from hal0.tools import tool

    store = services.approvals
    if not store.claim(approval_id):
        current = store.get(approval_id)
        if current is None:
            raise KeyError(approval_id)
        return current
    approval = store.get(approval_id)
    assert approval is not None
    faults.point("kill-after-claim")
    try:
        result = await invoke(tool(approval.tool), ToolContext(services=services, agent=approval.agent), approval.args)
    except Exception as error:  # noqa: BLE001 - the outcome is recorded for the agent to read
        log.warning("approval %s (%s) failed: %s", approval_id, approval.tool, error)
        return store.finish(approval_id, error=f"{type(error).__name__}: {error}" if not isinstance(error, ToolFailedError) else str(error))
    return store.finish(approval_id, result=result)


async def decide_approval(services: Any, approval_id: str, *, approve: bool, by: str, note: str | None) -> Approval:
    """The human channel: approve (then run) or deny a pending approval."""
    store = services.approvals
    if not approve:
        return store.deny(approval_id, by, note)
    store.approve(approval_id, by, note)
    faults.point("kill-after-approve")
    return await execute(services, approval_id)
