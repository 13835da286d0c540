"""The Host/Origin allowlist as pure functions (the HTTP matrix is in tests/integration)."""

from __future__ import annotations

import pytest
from hal0.config.models import McpConfig
from hal0.mcp.host_allowlist import channel_origins, compile_allowlist, effective_hosts, effective_origins, split_host


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
    allowlist = compile_allowlist(config, 8080)
    assert allowlist.origin_allowed("https://proxy.example")
    assert not allowlist.origin_allowed("http://hal0.lan")


def test_the_human_channel_takes_loopback_only_as_hal0s_own_page():
    config = McpConfig(allowed_hosts=("hal0.lan:8080", "box.lan:*"))
    assert channel_origins(config, 8080)[:3] == ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"]
    allowlist = compile_allowlist(config, 8080)
    for origin in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", "http://hal0.lan:8080", "https://box.lan:9"):
        assert allowlist.origin_allowed(origin, channel=True), origin
    # another local service's page (another port, https, no port) may use /mcp/* but never decide
    for origin in ("http://127.0.0.1:9", "http://localhost", "https://localhost:8080", "http://[::1]:3000"):
        assert allowlist.origin_allowed(origin) and not allowlist.origin_allowed(origin, channel=True), origin
    assert compile_allowlist(McpConfig(), 80).origin_allowed("http://localhost", channel=True)  # the browser omits :80
    assert channel_origins(McpConfig(allowed_origins=("*",)), 8080) == ["*"]


@pytest.mark.parametrize("port", ["\u00b2", "\u0668\u0660", "８０", "1" * 5000, "99999", "-1"])
def test_a_port_is_ascii_digits(port):
    assert split_host(f"localhost:{port}", wildcard=False) is None


@pytest.mark.parametrize("entries", [("http://x",), ("x/y",), ("*", "x"), ("x:99999",), ("x:abc",)])
def test_invalid_entries_are_config_errors(entries):
    with pytest.raises(ValueError, match=r"host|port|mixed"):
        McpConfig(allowed_hosts=entries)
