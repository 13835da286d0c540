"""The rule engine: deny beats ask beats allow, unmatched state-changing calls ask, examples are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from hal0.agents.personas import persona_for, tool_allowed_by_persona
from hal0.agents.rules import match_rules
from hal0.cli import main
from hal0.config.models import AgentsConfig
from hypothesis import given, settings
from hypothesis import strategies as st

AGENTS = ["alice", "bob", "ops"]
TOOLS = ["admin:status", "admin:unload_model", "memory:remember", "memory:forget_all"]
PATTERNS_AGENT = st.sampled_from(["*", "alice", "bob", "a*", "ops"])
PATTERNS_TOOL = st.sampled_from(["*:*", "admin:*", "memory:*", *TOOLS])
RULES = st.lists(
    st.fixed_dictionaries({
        "match": st.fixed_dictionaries({"agent": PATTERNS_AGENT, "tool": PATTERNS_TOOL}),
        "decision": st.sampled_from(["allow", "ask", "deny"]),
        "reason": st.just("r"),
    }),
    max_size=8,
)


def _matches(rule: dict, agent: str, tool: str) -> bool:
    from fnmatch import fnmatchcase

    return fnmatchcase(agent, rule["match"]["agent"]) and fnmatchcase(tool, rule["match"]["tool"])


@settings(max_examples=300)
@given(rules=RULES, agent=st.sampled_from(AGENTS), tool=st.sampled_from(TOOLS), state_changing=st.booleans(), reverse=st.booleans())
def test_strongest_matching_rule_wins_whatever_the_order(rules: list, agent: str, tool: str, state_changing: bool, reverse: bool) -> None:
    ordered = list(reversed(rules)) if reverse else rules
    agents = AgentsConfig.model_validate({"approvals": {"rules": ordered}})
    decision = match_rules(agents, agent, tool, {}, state_changing=state_changing)
    matched = {rule["decision"] for rule in rules if _matches(rule, agent, tool)}
    if "deny" in matched:
        assert decision.verdict == "deny"
    elif "ask" in matched:
        assert decision.verdict == "ask"
    elif "allow" in matched:
        assert decision.verdict == "allow"
    else:
        assert decision.verdict == ("ask" if state_changing else "allow")
        assert decision.rule_index is None
    if decision.rule_index is not None:
        assert ordered[decision.rule_index]["decision"] == decision.verdict
        assert _matches(ordered[decision.rule_index], agent, tool)


def test_an_unmatched_state_changing_tool_is_never_allowed() -> None:
    agents = AgentsConfig.model_validate({"approvals": {"rules": [{"match": {"tool": "memory:*"}, "decision": "allow", "reason": "x"}]}})
    decision = match_rules(agents, "alice", "admin:unload_model", {}, state_changing=True)
    assert decision.verdict == "ask" and "no rule allows it" in decision.reason


def test_argument_conditions() -> None:
    agents = AgentsConfig.model_validate({"approvals": {"rules": [
        {"match": {"tool": "admin:unload_model", "args": {"model": "big"}}, "decision": "deny", "reason": "big stays"},
        {"match": {"tool": "admin:unload_model"}, "decision": "allow", "reason": "others may go"},
    ]}})
    assert match_rules(agents, "a", "admin:unload_model", {"model": "big"}, state_changing=True).verdict == "deny"
    assert match_rules(agents, "a", "admin:unload_model", {"model": "small"}, state_changing=True).verdict == "allow"


def test_the_shipped_default_policy_asks_for_privileged_tools() -> None:
    agents = AgentsConfig()
    for tool in ("admin:load_model", "admin:unload_model", "admin:reload_config", "memory:forget_all"):
        assert match_rules(agents, "anyone", tool, {}, state_changing=True).verdict == "ask", tool
    assert match_rules(agents, "anyone", "memory:remember", {}, state_changing=True).verdict == "allow"


def test_persona_gating_and_default_persona() -> None:
    agents = AgentsConfig.model_validate({"default_agent": "guest", "personas": [
        {"id": "guest", "tools": ["admin:status"]}, {"id": "ops", "tools": ["admin:*", "memory:*"]},
    ]})
    assert persona_for(agents, "stranger").id == "guest"  # unknown agents get the default persona
    assert tool_allowed_by_persona(persona_for(agents, "ops"), "admin:unload_model")
    assert not tool_allowed_by_persona(persona_for(agents, "stranger"), "memory:remember")
    assert tool_allowed_by_persona(None, "admin:unload_model")


@pytest.mark.parametrize(
    ("examples", "message"),
    [
        ("match: [{agent: bob, tool: 'admin:load_model'}]", "rules[0].examples.match[0]: the rule does not match this example"),
        ("no_match: [{agent: bob, tool: 'admin:unload_model'}]", "rules[0].examples.no_match[0]: the rule matches this example"),
    ],
)
def test_rule_examples_are_checked_by_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str], examples: str, message: str) -> None:
    config = tmp_path / "hal0.yaml"
    config.write_text(
        "models:\n  - {id: a, path: /a}\nagents:\n  approvals:\n    rules:\n"
        "      - match: {agent: '*', tool: 'admin:unload_model'}\n        decision: ask\n        reason: stops inference\n"
        f"        examples:\n          {examples}\n"
    )
    assert main(["config", "validate", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"agents.approvals.{message}" in err
    assert f"{config}:10:" in err  # the line of the offending example


def test_generations_ask_the_same_door_for_persona_limits() -> None:
    from hal0.agents.request import GenerationRequest
    from hal0.tools.policy import evaluate_generation

    agents = AgentsConfig.model_validate({"default_agent": "guest", "personas": [
        {"id": "guest", "limits": {"max_tokens": 50, "max_temperature": 1.0}},
    ]})
    over = evaluate_generation(agents, "ann", GenerationRequest(max_tokens=51))
    assert (over.verdict, over.rule, over.code, over.limit, over.persona) == (
        "refused", "agents.personas[].limits.max_tokens", "persona_limit", "max_tokens", "guest")
    assert "max_tokens 51 exceeds persona 'guest''s limit of 50" in over.message
    hot = evaluate_generation(agents, "ann", GenerationRequest(max_tokens=50, temperature=1.5))
    assert (hot.verdict, hot.rule, hot.limit) == ("refused", "agents.personas[].limits.max_temperature", "temperature")
    assert evaluate_generation(agents, "ann", GenerationRequest(max_tokens=50, temperature=1.0)).verdict == "allow"
    assert evaluate_generation(AgentsConfig(), "ann", GenerationRequest(max_tokens=10**9)).verdict == "allow"
