"""The rule engine: what agents.approvals.rules say of one tool call, as a `RuleMatch` with its rule.

Among the rules whose pattern matches, deny beats ask beats allow, whatever the file order. A
state-changing tool that no rule matches is `ask`, never `allow`; a read-only one is `allow`. Persona
gating comes before the rules and is not the engine's: the policy door (tools.policy.evaluate) asks the
persona (agents.personas), then this, and turns the answer into its Decision.

The rules' `examples` are checked here too (`example_problems`), since only the engine knows what a
pattern matches; the config loader runs the check (`CONFIG_CHECKS`) wherever a config is loaded.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from hal0.config.loader import Check
from hal0.config.models import AgentsConfig, ApprovalRule, Hal0Config, RulePattern, RuleVerdict
from hal0.config.yaml_source import Path

_STRENGTH: dict[RuleVerdict, int] = {"allow": 0, "ask": 1, "deny": 2}


@dataclass(frozen=True)
class RuleMatch:
    """The engine's answer for one call: the verdict, why, and the rule that made it."""

    verdict: RuleVerdict
    reason: str
    rule_index: int | None = None  # index in agents.approvals.rules; None for the built-in default
    rule: ApprovalRule | None = None

    @property
    def rule_label(self) -> str:
        return f"agents.approvals.rules[{self.rule_index}]" if self.rule_index is not None else "default policy"


def pattern_matches(pattern: RulePattern, agent: str, tool: str, args: dict[str, Any]) -> bool:
    """Glob match on agent and `server:tool`; every listed argument must be present and equal."""
    return (
        fnmatch.fnmatchcase(agent, pattern.agent)
        and fnmatch.fnmatchcase(tool, pattern.tool)
        and all(name in args and args[name] == value for name, value in pattern.args.items())
    )


def match_rules(agents: AgentsConfig, agent: str, tool: str, args: dict[str, Any], *, state_changing: bool) -> RuleMatch:
    """What the approval rules say of one call (persona gating is the door's, before this)."""
    best: RuleMatch | None = None
    for index, rule in enumerate(agents.approvals.rules):
        if not pattern_matches(rule.match, agent, tool, args):
            continue
        candidate = RuleMatch(rule.decision, rule.reason, index, rule)
        if best is None or _STRENGTH[candidate.verdict] > _STRENGTH[best.verdict]:
            best = candidate
    if best is not None:
        return best
    if state_changing:
        return RuleMatch("ask", f"{tool} changes state and no rule allows it: a human must approve")
    return RuleMatch("allow", f"{tool} is read-only")


def example_problems(config: Hal0Config) -> list[tuple[Path, str]]:
    """Each rule example its rule does not match (examples.match) or matches (examples.no_match)."""
    problems: list[tuple[Path, str]] = []
    for rule_index, rule in enumerate(config.agents.approvals.rules):
        at: Path = ("agents", "approvals", "rules", rule_index, "examples")
        examples = rule.examples
        if examples is None:
            continue
        for index, example in enumerate(examples.match):
            if not pattern_matches(rule.match, example.agent, example.tool, example.args):
                problems.append(((*at, "match", index), f"the rule does not match this example ({example.agent} calling {example.tool})"))
        for index, example in enumerate(examples.no_match):
            if pattern_matches(rule.match, example.agent, example.tool, example.args):
                problems.append(((*at, "no_match", index), f"the rule matches this example ({example.agent} calling {example.tool})"))
    return problems


CONFIG_CHECKS: tuple[Check, ...] = (example_problems,)
