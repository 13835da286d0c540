"""The MCP tab's server side: what a client of /mcp/admin and /mcp/memory really gets.

Tools and annotations come from the catalogue (the same ToolSpecs the MCP servers are built from),
resources from the live MCP servers, and the gate's allowlists from hal0.mcp.host_allowlist with the
source of each entry. The browser half (static/dashboard.js) then probes the mounts for real,
with the Host and Origin this browser sends, which is the one thing the server cannot know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hal0.config import LoadedConfig
from hal0.config.loader import ENV_ALLOWED_HOSTS, ENV_ALLOWED_ORIGINS
from hal0.mcp.host_allowlist import LOOPBACK, effective_hosts, effective_origins
from hal0.mcp.mount import ADMIN_PATH, MEMORY_PATH, McpMounts
from hal0.mcp.servers import annotations_of, mirrored_tool
from hal0.services import Services
from hal0.tools import Server, ToolContext, tool, tools_of
from hal0.tools.gated import decision_for


@dataclass(frozen=True)
class GateEntry:
    value: str
    source: str


def _env_values(loaded: LoadedConfig, name: str) -> set[str]:
    return {part.strip() for part in loaded.env.get(name, "").split(",") if part.strip()}


def _is_loopback(entry: str) -> bool:
    host = entry.split("://", 1)[-1]
    return any(host == name or host.startswith(f"{name}:") for name in LOOPBACK)


def gate_hosts(loaded: LoadedConfig) -> list[GateEntry]:
    config = loaded.config.mcp
    from_env = _env_values(loaded, ENV_ALLOWED_HOSTS)
    rows = []
    for entry in effective_hosts(config):
        if entry == "*":
            source = f"env ${ENV_ALLOWED_HOSTS}" if "*" in from_env else "file (mcp.allowed_hosts)"
            rows.append(GateEntry("* (gate off: any Host)", source))
        elif _is_loopback(entry) and entry not in config.allowed_hosts:
            rows.append(GateEntry(entry, "built in (loopback)"))
        else:
            rows.append(GateEntry(entry, f"env ${ENV_ALLOWED_HOSTS}" if entry in from_env else "file (mcp.allowed_hosts)"))
    return rows


def gate_origins(loaded: LoadedConfig) -> list[GateEntry]:
    config = loaded.config.mcp
    from_env = _env_values(loaded, ENV_ALLOWED_ORIGINS)
    rows = []
    for entry in effective_origins(config):
        if entry == "*":
            rows.append(GateEntry("* (any Origin)", "gate off (mcp.allowed_hosts is *)" if config.allowed_hosts == ("*",)
                                  else f"env ${ENV_ALLOWED_ORIGINS}" if "*" in from_env else "file (mcp.allowed_origins)"))
        elif entry in config.allowed_origins:
            rows.append(GateEntry(entry, f"env ${ENV_ALLOWED_ORIGINS}" if entry in from_env else "file (mcp.allowed_origins)"))
        elif _is_loopback(entry):
            rows.append(GateEntry(entry, "built in (loopback)"))
        else:
            rows.append(GateEntry(entry, "derived from allowed_hosts"))
    return rows


def tool_rows(server: Server, services: Services, agent: str) -> list[dict[str, Any]]:
    """Each tool with its MCP annotations and what the policy does with it for `agent`."""
    call = ToolContext(services=services, agent=agent)
    rows = []
    for spec in tools_of(server):
        decision = decision_for(spec, call)
        visible = decision.visible
        rows.append({
            "name": spec.name,
            "qualified": spec.qualified,
            "title": spec.title,
            "description": spec.description,
            "annotations": annotations_of(spec).model_dump(by_alias=True, exclude_none=True),
            "privileged": spec.privileged,
            "visible": visible,
            "verdict": decision.verdict if visible else "hidden",
            "reason": decision.reason if visible else "not in this agent's persona tools",
            "rule": decision.rule if visible else "agents.personas",
        })
    return rows


def _resource_shown(uri: str, call: ToolContext) -> bool:
    """A resource or template mirroring a tool is shown only where that tool is allowed (as resources/list does)."""
    mirrored = mirrored_tool(uri)
    return mirrored is None or decision_for(tool(mirrored), call).verdict == "allow"


async def resource_rows(mcp: McpMounts, server: Server, call: ToolContext) -> list[dict[str, Any]]:
    mounted = mcp.admin if server == "admin" else mcp.memory
    rows = [{"uri": str(item.uri), "name": item.name, "description": item.description or "", "mime_type": item.mime_type or ""}
            for item in await mounted.list_resources() if _resource_shown(str(item.uri), call)]
    rows += [{"uri": item.uri_template, "name": item.name, "description": item.description or "", "mime_type": item.mime_type or ""}
             for item in await mounted.list_resource_templates() if _resource_shown(item.uri_template, call)]
    return rows


async def mcp_tab(services: Services, mcp: McpMounts, agent: str) -> dict[str, Any]:
    loaded = services.loaded
    sessions = mcp.sessions()
    servers = []
    for name, path in (("admin", ADMIN_PATH), ("memory", MEMORY_PATH)):
        mounted = name == "admin" or services.memory.enabled
        servers.append({
            "name": name,
            "path": path.lstrip("/"),  # relative: the dashboard may sit under a proxy prefix
            "mounted": mounted,
            "why_not": "" if mounted else "memory is disabled (memory.enabled: false): the mount answers 404",
            "sessions": sessions.get(name),
            "tools": tool_rows(name, services, agent),  # type: ignore[arg-type]
            "resources": await resource_rows(mcp, name, ToolContext(services=services, agent=agent)),  # type: ignore[arg-type]
        })
    return {
        "agent": agent,
        "default_agent": loaded.config.agents.default_agent,
        "personas": [persona.id for persona in loaded.config.agents.personas],
        "servers": servers,
        "gate_open": loaded.config.mcp.allowed_hosts == ("*",),
        "hosts": gate_hosts(loaded),
        "origins": gate_origins(loaded),
        "env": dict(loaded.env),
    }
