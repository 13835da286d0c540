"""The catalogue is the one definition of every tool; its hints must tell the truth."""

from __future__ import annotations

from hal0.tools import CATALOGUE, tool, tools_of

PRIVILEGED = {"admin:load_model", "admin:unload_model", "admin:reload_config", "memory:forget_all"}


def test_names_are_the_issues():
    assert {spec.name for spec in tools_of("admin")} == {
        "status", "list_models", "get_config", "list_approvals", "load_model", "unload_model", "reload_config"}
    assert {"remember", "recall", "list", "get", "forget", "forget_all"} <= {spec.name for spec in tools_of("memory")}


def test_hints_are_consistent():
    for spec in CATALOGUE:
        assert not (spec.read_only and spec.destructive), spec.qualified
        assert not (spec.read_only and spec.privileged), spec.qualified
        if spec.read_only:
            assert spec.idempotent, spec.qualified
    assert {spec.qualified for spec in CATALOGUE if spec.privileged} == PRIVILEGED
    assert tool("memory:forget_all").destructive and tool("memory:forget").destructive
    assert not tool("memory:remember").idempotent


def test_no_memory_tool_takes_a_namespace():
    for spec in tools_of("memory"):
        names = {param.name for param in spec.parameters()}
        assert not names & {"agent", "namespace", "agent_id"}, spec.qualified
