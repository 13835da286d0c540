"""THE policy door: `evaluate(agents, agent, tool, args) -> Decision`, with the reason it carries.

Every surface asks this one function and none re-derives its answer: MCP tools/list (what an agent
sees), tools/call and REST (what runs, queues or is refused), MCP resources (governed by the tool
they mirror), the dashboard's policy view and `hal0 approvals explain`. The order is fixed:

1. Persona gating: a tool outside the agent's persona `tools` is `refused` (and invisible).
2. Approval rules (the rule engine, agents.rules.match_rules): deny beats ask beats allow; an unmatched state-changing
   tool is `ask`, an unmatched read-only one `allow`.
3. Quotas, when the caller passes the live counters (a real call, not a question about one): a call
   over the persona's `limits.requests_per_minute` is `limited`, with a true retry_after.
   Generations pass the same quotas through `admit_generation`, which also checks tokens and
   concurrency and hands back the lease that counts the tokens when the generation ends.

A generation asks the door too, before anything else: `evaluate_generation` answers whether its request
(the persona applied) stays within the persona's limits (max_tokens, max_temperature), with the limit
it exceeds as the rule.

Like datasette's permission checks, the answer is never a bare bool: the Decision names the rule
(`agents.approvals.rules[3]`, `agents.personas[].tools`, `default policy`) and says why in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hal0.agents.personas import persona_for, persona_refusal, tool_allowed_by_persona
from hal0.agents.quotas import Lease, QuotaExceededError, Quotas
from hal0.agents.rules import match_rules
from hal0.config.models import AgentsConfig, ApprovalRule, PersonaLimits, RuleVerdict
from hal0.tools.spec import ToolSpec

if TYPE_CHECKING:
    from hal0.agents.request import GenerationRequest

Verdict = RuleVerdict | Literal["refused", "limited"]  # the rules' verdicts, and the door's own two
PERSONA_RULE = "agents.personas[].tools"
OTHER = "other"  # the metrics label of agents without a persona (labels are never raw agent ids)
GENERATION = "generation"  # what a generation's Decision is about, where a tool call's names the tool


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
    retry_after: int | None = None  # seconds, for `limited`
    limit: str | None = None  # for a generation over a persona limit: the request field (max_tokens, temperature)

    @property
    def visible(self) -> bool:
        """Whether the agent sees the tool at all (tools/list, the dashboard)."""
        return self.verdict != "refused"

    @property
    def code(self) -> str:
        """The machine-readable code of a refusal (REST error code, MCP error text)."""
        if self.limit is not None:
            return "persona_limit"
        return {"refused": "tool_not_in_persona", "deny": "denied", "limited": "rate_limit_exceeded"}.get(self.verdict, self.verdict)

    @property
    def message(self) -> str:
        """One line for the caller of a refused or denied call."""
        if self.verdict == "deny":
            return f"{self.tool} denied by {self.rule}: {self.reason}"
        return self.reason

    def as_dict(self) -> dict[str, Any]:
        return {"decision": self.verdict, "reason": self.reason, "rule": self.rule, "persona": self.persona}


def persona_limits(agents: AgentsConfig, agent: str) -> tuple[str, PersonaLimits]:
    """The agent's persona label (its id, or `other`) and the limits that apply to it."""
    persona = persona_for(agents, agent)
    return (persona.id, persona.limits) if persona is not None else (OTHER, PersonaLimits())


def evaluate(agents: AgentsConfig, agent: str, tool: ToolSpec, args: dict[str, Any],
             quotas: Quotas | None = None) -> Decision:
    """The decision for `agent` calling `tool` with `args` under the policy `agents`. With `quotas`
    the call is also counted (or refused as `limited`): pass them only for a call that happens."""
    persona = persona_for(agents, agent)
    persona_id = persona.id if persona is not None else None
    if not tool_allowed_by_persona(persona, tool.qualified):
        assert persona is not None  # no persona means no persona gating
        return Decision("refused", persona_refusal(persona, agent, tool.qualified), PERSONA_RULE,
                        tool.qualified, agent, persona_id)
    matched = match_rules(agents, agent, tool.qualified, args, state_changing=not tool.read_only)
    decision = Decision(matched.verdict, matched.reason, matched.rule_label, tool.qualified, agent, persona_id, matched.rule)
    if quotas is not None and decision.verdict != "deny":
        label, limits = persona_limits(agents, agent)
        try:
            quotas.request(agent, label, limits)
        except QuotaExceededError as error:
            return Decision("limited", str(error), f"agents.personas[].limits.{error.quota}", tool.qualified, agent,
                            persona_id, retry_after=error.retry_after)
    return decision


def evaluate_generation(agents: AgentsConfig, agent: str, request: GenerationRequest) -> Decision:
    """The decision for `agent`'s generation `request` (its persona already applied: agents.personas):
    `refused` naming the persona limit it exceeds (never clamped to it), else `allow`."""
    persona = persona_for(agents, agent)
    if persona is None:
        return Decision("allow", "no persona: no limits", "default policy", GENERATION, agent, None)
    limits = persona.limits
    if limits.max_tokens is not None and request.max_tokens is not None and request.max_tokens > limits.max_tokens:
        return Decision("refused", f"max_tokens {request.max_tokens} exceeds persona {persona.id!r}'s limit of {limits.max_tokens} "
                        "(agents.personas[].limits.max_tokens)", "agents.personas[].limits.max_tokens", GENERATION, agent, persona.id,
                        limit="max_tokens")
    if limits.max_temperature is not None and (request.temperature or 0) > limits.max_temperature:
        return Decision("refused", f"temperature {request.temperature} exceeds persona {persona.id!r}'s limit of {limits.max_temperature}",
                        "agents.personas[].limits.max_temperature", GENERATION, agent, persona.id, limit="temperature")
    return Decision("allow", f"within persona {persona.id!r}'s limits", "agents.personas[].limits", GENERATION, agent, persona.id)


def admit_generation(agents: AgentsConfig, quotas: Quotas, agent: str) -> Lease:
    """A generation's pass through the quotas; raises QuotaExceededError (429) when over one."""
    label, limits = persona_limits(agents, agent)
    return quotas.generation(agent, label, limits)
