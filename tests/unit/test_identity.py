"""X-hal0-Agent validation: [a-zA-Z0-9_-], 1 to 64 characters; absent means the default."""

from __future__ import annotations

import pytest
from hal0.agents import InvalidAgentIdError, resolve_agent
from hypothesis import given
from hypothesis import strategies as st

VALID = st.text(alphabet="abcXYZ019_-", min_size=1, max_size=64)


def test_absent_header_is_the_default():
    assert resolve_agent(None, "anonymous") == "anonymous"


@given(VALID)
def test_valid_ids_pass_unchanged(agent):
    assert resolve_agent(agent, "d") == agent


@pytest.mark.parametrize("value", ["", " ", "a b", "a\n", "\na", "x" * 65, "ä", "a/b", "a.b", "../x", "a;drop"])
def test_invalid_ids_are_refused_naming_the_rule(value):
    with pytest.raises(InvalidAgentIdError, match="1 to 64 characters"):
        resolve_agent(value, "d")


@given(st.text(max_size=80).filter(lambda s: not (1 <= len(s) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in s))))
def test_anything_else_is_refused(value):
    with pytest.raises(InvalidAgentIdError):
        resolve_agent(value, "d")
