"""The Host/Origin policy as pure functions (the HTTP matrix is in tests/integration)."""

from __future__ import annotations

import pytest
from hal0.config.models import McpConfig
from hal0.mcp.policy import compile_policy, effective_hosts, effective_origins, split_host


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("localhost", ("localhost", None)),
        ("LocalHost:8080", ("localhost", "8080")),
        ("[::1]", ("[::1]", None)),
        ("[::1]:9", ("[::1]", "9")),
        ("::1", None),
        ("host:0", None),
        ("host:70000", None),
        ("host/path", None),
        ("user@host", None),
        ("", None),
    ],
)
def test_split_host(value, expected):
    assert split_host(value, wildcard=False) == expected


def test_wildcard_port_is_for_entries_only():
    assert split_host("box:*") == ("box", "*")
    assert split_host("box:*", wildcard=False) is None


def test_effective_lists_default_and_open():
    assert effective_hosts(McpConfig())[:2] == ["127.0.0.1", "127.0.0.1:*"]
    assert effective_hosts(McpConfig(allowed_hosts=("*",))) == ["*"]
    assert effective_origins(McpConfig(allowed_hosts=("*",))) == ["*"]


def test_explicit_origins_replace_derived_ones_but_keep_loopback():
    config = McpConfig(allowed_hosts=("hal0.lan",), allowed_origins=("https://proxy.example",))
    origins = effective_origins(config)
    assert "https://proxy.example" in origins and "http://hal0.lan" not in origins
    assert "http://localhost:*" in origins
    policy = compile_policy(config)
    assert policy.origin_allowed("https://proxy.example")
    assert not policy.origin_allowed("http://hal0.lan")


@pytest.mark.parametrize("entries", [("http://x",), ("x/y",), ("*", "x"), ("x:99999",), ("x:abc",)])
def test_invalid_entries_are_config_errors(entries):
    with pytest.raises(ValueError, match=r"host|port|mixed"):
        McpConfig(allowed_hosts=entries)
