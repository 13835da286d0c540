"""The caller's identity: the X-hal0-Agent header, or the configured default.

On its own the header is a label that selects a namespace and a persona, not authentication:
anyone who can reach the port can send any id. Behind an authenticating proxy that replaces the
header with the user it authenticated (roles/reverse_proxy), `agents.identity.trusted_proxies`
makes it an identity: only those peers may send it (Grafana's auth-proxy `whitelist`). The peer is
the TCP peer; `hal0 serve` does not rewrite it from X-Forwarded-For, or the client could choose it.
The id is validated here, once, before it can reach storage, logs or SQL.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from hal0.agents.personas import persona_for
from hal0.config.models import AGENT_ID_PATTERN, AgentsConfig, IdentityConfig

AGENT_HEADER = "X-hal0-Agent"
_AGENT_ID = re.compile(AGENT_ID_PATTERN)
RULE = "1 to 64 characters from a-z, A-Z, 0-9, '_' and '-'"


class InvalidAgentIdError(ValueError):
    def __init__(self, value: str) -> None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        super().__init__(f"invalid {AGENT_HEADER} header {shown!r}: an agent id is {RULE}")
        self.value = value


def resolve_agent(header: str | None, default: str) -> str:
    """The agent id for a request. An absent header means `default`; a present one must be valid,
    even when empty, so a client bug is reported instead of silently using someone else's namespace."""
    if header is None:
        return default
    # fullmatch, not match: with match, the pattern's `$` would accept a trailing newline.
    if not _AGENT_ID.fullmatch(header):
        raise InvalidAgentIdError(header)
    return header


TRUSTED_PROXIES = "agents.identity.trusted_proxies"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class UntrustedPeerError(PermissionError):
    """An X-hal0-Agent header from a peer that is not one of the trusted proxies."""

    def __init__(self, peer: str | None) -> None:
        super().__init__(f"{AGENT_HEADER} from {peer or 'an unknown peer'} is refused: only the proxies in "
                         f"{TRUSTED_PROXIES} may name the agent; send the request through the proxy, or without the header")
        self.peer = peer


@dataclass(frozen=True)
class Identity:
    """Who hal0 believes a request comes from, and why (GET /api/whoami shows this)."""

    agent: str
    source: Literal["header", "default"]
    peer: str | None

    def describe(self, agents: AgentsConfig) -> dict[str, str | None]:
        """GET /api/whoami's document; the persona is the default agent's for an id without one."""
        persona = persona_for(agents, self.agent)
        return {"agent": self.agent, "persona": persona.id if persona else None, "source": self.source, "peer": self.peer}


@lru_cache(maxsize=16)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    # Configs are frozen and swapped whole on reload; the tuple of entries is the cache key.
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def peer_trusted(peer: str | None, config: IdentityConfig) -> bool:
    """Whether `peer` may send the header: anyone when no proxy is configured."""
    if not config.trusted_proxies:
        return True
    try:
        address = ipaddress.ip_address(peer or "")
    except ValueError:
        return False  # no TCP peer (a unix socket, a test transport): not a proxy we know
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _networks(config.trusted_proxies))


def identify(header: str | None, peer: str | None, default: str, config: IdentityConfig) -> Identity:
    """The identity of a request: UntrustedPeerError before InvalidAgentIdError, so an untrusted
    peer learns nothing about which ids are valid."""
    if header is None:
        return Identity(default, "default", peer)
    if not peer_trusted(peer, config):
        raise UntrustedPeerError(peer)
    return Identity(resolve_agent(header, default), "header", peer)
