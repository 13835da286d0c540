"""Random documents never make the config loader crash: every failure is a ConfigError with positions."""

from __future__ import annotations

import yaml
from hal0.config import ConfigError, load_text
from hal0.config.models import Hal0Config
from hypothesis import given, settings
from hypothesis import strategies as st

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True), st.text(max_size=20))
KEYS = st.sampled_from(["server", "mcp", "memory", "models", "agents", "port", "bind", "id", "path", "default", "n_gpu_layers",
                        "personas", "approvals", "rules", "match", "decision", "reason", "allowed_hosts", "enabled", "x"])
DATA = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)), max_leaves=25)


def _check(text: str) -> None:
    problems = None
    try:
        loaded = load_text(text, "fuzz.yaml", {})
    except ConfigError as error:
        problems = error.issues
    if problems is None:
        assert isinstance(loaded.config, Hal0Config)
        return
    assert problems
    for issue in problems:
        assert issue.line >= 1 and issue.column >= 1
        assert str(issue).startswith("fuzz.yaml:")


@settings(max_examples=400, deadline=None)
@given(DATA)
def test_random_structures_never_crash_the_loader(data: object) -> None:
    _check(yaml.safe_dump(data))


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abc:- \n\t[]{}'\"#&*!|>%@`,?0123456789")), max_size=80))
def test_random_text_never_crashes_the_loader(text: str) -> None:
    _check(text)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["port", "bind", "queue_limit", "log_level", "request_timeout_s", "bogus"]), SCALARS, max_size=4))
def test_random_server_sections_never_crash(server: dict) -> None:
    _check(yaml.safe_dump({"server": server, "models": [{"id": "a", "path": "/a"}]}))
