"""Who may call which tool, decided with a reason.

Two questions, asked in this order for every tool call:
1. Persona gating: is the tool in the agent's persona tool list? If not, the tool is invisible to the
   agent (filtered from MCP tools/list) and a call is refused naming the persona and the rule.
2. Approval rules: among the rules that match, deny beats ask beats allow, whatever the file order.
   A state-changing tool that no rule matches is `ask`, never `allow`; a read-only one is `allow`.
Every decision carries the rule that made it, so `hal0 approvals explain` and the approver see why.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Literal

from hal0.config.models import AgentsConfig, ApprovalRule, Persona

Verdict = Literal["allow", "ask", "deny"]
_STRENGTH: dict[Verdict, int] = {"allow": 0, "ask": 1, "deny": 2}


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    rule_index: int | None = None  # index in agents.approvals.rules; None for built-in defaults
    rule: ApprovalRule | None = None

    @property
    def rule_label(self) -> str:
        return f"agents.approvals.rules[{self.rule_index}]" if self.rule_index is not None else "default policy"

    def as_dict(self) -> dict[str, Any]:
        return {"decision": self.verdict, "reason": self.reason, "rule": self.rule_label}


def tool_allowed_by_persona(persona: Persona | None, tool: str) -> bool:
    """No persona means no persona gating: the approval rules alone decide."""
    if persona is None:
        return True
    return any(fnmatch.fnmatchcase(tool, pattern) for pattern in persona.tools)


def decide(agents: AgentsConfig, agent: str, tool: str, args: dict[str, Any], *, state_changing: bool) -> Decision:
    """The approval decision for one call (persona gating is checked by the caller first)."""
    best: Decision | None = None
    for index, rule in enumerate(agents.approvals.rules):
        if not rule.match.matches(agent, tool, args):
            continue
        candidate = Decision(rule.decision, rule.reason, index, rule)
        if best is None or _STRENGTH[candidate.verdict] > _STRENGTH[best.verdict]:
            best = candidate
    if best is not None:
        return best
    if state_changing:
        return Decision("ask", f"{tool} changes state and no rule allows it: a human must approve")
    return Decision("allow", f"{tool} is read-only")


def persona_refusal(persona: Persona, agent: str, tool: str) -> str:
    patterns = ", ".join(persona.tools) or "none"
    return f"tool {tool} is not in persona {persona.id!r}'s tools ({patterns}) for agent {agent!r}: agents.personas[].tools"
