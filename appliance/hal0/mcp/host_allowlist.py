"""Which Host and Origin values reach /mcp/*, computed from `mcp.*` in the config.

Loopback (127.0.0.1, localhost, [::1]) is always allowed, with or without any port: unlike the
SDK's default, a portless `Host: localhost` (a proxy on the same box, curl against port 80) passes.
An added entry means what it says: `host` is that Host header without a port, `host:8080` that
port, `host:*` any explicit port. Origins not listed explicitly are derived (http and https) from
the added hosts, so one knob opens the dashboard and a proxy vhost. The single host `*` turns the
gate off. This is a DNS-rebinding defence, not access control.
"""

from __future__ import annotations

from dataclasses import dataclass

from hal0.config.models import McpConfig

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
SCHEMES = ("http", "https")

# (host, port): port is None for "no port in the header", "*" for any explicit port, else digits.
HostPort = tuple[str, str | None]


@dataclass(frozen=True, eq=False)
class HostAllowlist:
    """The names (Host) and pages (Origin) allowed through the gate, compiled from `mcp.*`."""

    open: bool
    hosts: frozenset[HostPort]
    any_origin: bool
    origins: dict[str, frozenset[HostPort]]  # by scheme: /mcp/*
    channel_origins: dict[str, frozenset[HostPort]]  # by scheme: the human channel (loopback at hal0's own port only)

    def host_allowed(self, header: str | None) -> bool:
        if self.open:
            return True
        parsed = split_host(header or "", wildcard=False)
        return parsed is not None and _matches(parsed, self.hosts)

    def origin_allowed(self, header: str | None, *, channel: bool = False) -> bool:
        """Whether a request with this Origin may pass: /mcp/*, or with `channel` the human channel."""
        # No Origin: not a cross-site browser request (curl, SDK clients), nothing to defend.
        if self.open or header is None or self.any_origin:
            return True
        scheme, sep, rest = header.partition("://")
        parsed = split_host(rest, wildcard=False) if sep else None
        if parsed is None:
            return False
        allowed = self.channel_origins if channel else self.origins
        return _matches(parsed, allowed.get(scheme.lower(), frozenset()))


def split_host(value: str, *, wildcard: bool = True) -> HostPort | None:
    """`Example.lan:8080` -> ("example.lan", "8080"); `[::1]` -> ("[::1]", None); junk -> None.

    `wildcard` accepts the `:*` port of an allowlist entry; a request header never has one."""
    value = value.strip().lower()
    if not value or any(char in value for char in "/?#@ \t"):
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[: end + 1], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] if rest else None
    else:
        host, sep, port_text = value.partition(":")
        if ":" in port_text:
            return None  # an unbracketed IPv6 address is not a valid Host header
        port = port_text if sep else None
    if port == "*" and wildcard:
        return host, port
    # ASCII digits only: str.isdigit() also takes "²" and Arabic-Indic digits, which are no port (and int() refuses "²").
    if port is not None and not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) <= 65535):
        return None
    return (host, port) if host else None


def _matches(parsed: HostPort, allowed: frozenset[HostPort]) -> bool:
    host, port = parsed
    return parsed in allowed or (port is not None and (host, "*") in allowed)


def effective_hosts(config: McpConfig) -> list[str]:
    """The Host allowlist as the operator reads it (`*` when the gate is off)."""
    if config.allowed_hosts == ("*",):
        return ["*"]
    return [*(f"{host}{suffix}" for host in LOOPBACK for suffix in ("", ":*")), *config.allowed_hosts]


def effective_origins(config: McpConfig) -> list[str]:
    """The Origin allowlist: loopback always, plus the explicit list or, when empty, derived entries."""
    if config.allowed_hosts == ("*",) or config.allowed_origins == ("*",):
        return ["*"]
    loopback = [f"{scheme}://{host}{suffix}" for host in LOOPBACK for scheme in SCHEMES for suffix in ("", ":*")]
    added = list(config.allowed_origins) or [f"{scheme}://{entry}" for entry in config.allowed_hosts for scheme in SCHEMES]
    return loopback + [origin for origin in added if origin not in loopback]


def channel_origins(config: McpConfig, port: int) -> list[str]:
    """The Origin allowlist of the human channel (approve/deny): exactly the pages allowed to decide.
    Loopback only as hal0's own pages (http, the port it listens on): a page served by any other local
    service, on another port, must not approve. Added origins are as on /mcp/*."""
    if config.allowed_hosts == ("*",) or config.allowed_origins == ("*",):
        return ["*"]
    suffix = "" if port == 80 else f":{port}"  # a browser leaves the default port out of an Origin
    own = [f"http://{host}{suffix}" for host in LOOPBACK]
    return own + [origin for origin in effective_origins(config) if not _is_loopback_origin(origin) and origin not in own]


def _is_loopback_origin(origin: str) -> bool:
    parsed = split_host(origin.partition("://")[2])
    return parsed is not None and parsed[0] in LOOPBACK


def _by_scheme(origins: list[str]) -> dict[str, frozenset[HostPort]]:
    table: dict[str, set[HostPort]] = {}
    for origin in origins:
        scheme, _, rest = origin.partition("://")
        parsed = split_host(rest)
        if parsed is not None:
            table.setdefault(scheme.lower(), set()).add(parsed)
    return {scheme: frozenset(entries) for scheme, entries in table.items()}


def compile_allowlist(config: McpConfig, port: int) -> HostAllowlist:
    """The gate for a hal0 listening on `port` (the human channel's own origin)."""
    hosts = {split_host(entry) for entry in effective_hosts(config) if entry != "*"}
    return HostAllowlist(
        open=config.allowed_hosts == ("*",),
        hosts=frozenset(entry for entry in hosts if entry is not None),
        any_origin=effective_origins(config) == ["*"],
        origins=_by_scheme(effective_origins(config)),
        channel_origins=_by_scheme(channel_origins(config, port)),
    )
