"""THE policy door: `evaluate(agents, agent, tool, args) -> Decision`, with the reason it carries.

Every surface asks this one function and none re-derives its answer: MCP tools/list (what an agent
sees), tools/call and REST (what runs, queues or is refused), MCP resources (governed by the tool
they mirror), the dashboard's policy view and `hal0 approvals explain`. The order is fixed:

1. Persona gating: a tool outside the agent's persona `tools` is `refused` (and invisible).
2. Approval rules (agents.policy.decide): deny beats ask beats allow; an unmatched state-changing
   tool is `ask`, an unmatched read-only one `allow`.

Like datasette's permission checks, the answer is never a bare bool: the Decision names the rule
(`agents.approvals.rules[3]`, `agents.personas[].tools`, `default policy`) and says why in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from hal0.agents.policy import decide, persona_for, persona_refusal, tool_allowed_by_persona
from hal0.config.models import AgentsConfig, ApprovalRule
from hal0.tools.spec import ToolSpec

Verdict = Literal["allow", "ask", "deny", "refused"]
PERSONA_RULE = "agents.personas[].tools"


@dataclass(frozen=True)
class Decision:
    """What the policy does with one call, and why."""

    verdict: Verdict
    reason: str
    rule: str  # the config path that made the decision, for humans and for audit rows
    tool: str
    agent: str
    persona: str | None
    approval_rule: ApprovalRule | None = None  # the matched rule, when one did (its expires_after)

    @property
    def visible(self) -> bool:
        """Whether the agent sees the tool at all (tools/list, the dashboard)."""
        return self.verdict != "refused"

    @property
    def code(self) -> str:
        """The machine-readable code of a refusal (REST error code, MCP error text)."""
        return {"refused": "tool_not_in_persona", "deny": "denied"}.get(self.verdict, self.verdict)

    @property
    def message(self) -> str:
        """One line for the caller of a refused or denied call."""
        if self.verdict == "deny":
            return f"{self.tool} denied by {self.rule}: {self.reason}"
        return self.reason

    def as_dict(self) -> dict[str, Any]:
        return {"decision": self.verdict, "reason": self.reason, "rule": self.rule, "persona": self.persona}


def evaluate(agents: AgentsConfig, agent: str, tool: ToolSpec, args: dict[str, Any]) -> Decision:
    """The decision for `agent` calling `tool` with `args` under the policy `agents`."""
    persona = persona_for(agents, agent)
    persona_id = persona.id if persona is not None else None
    if not tool_allowed_by_persona(persona, tool.qualified):
        assert persona is not None  # no persona means no persona gating
        return Decision("refused", persona_refusal(persona, agent, tool.qualified), PERSONA_RULE,
                        tool.qualified, agent, persona_id)
    rule = decide(agents, agent, tool.qualified, args, state_changing=not tool.read_only)
    return Decision(rule.verdict, rule.reason, rule.rule_label, tool.qualified, agent, persona_id, rule.rule)
