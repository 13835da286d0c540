"""The admin and memory MCP servers, built from the tool catalogue (hal0.tools).

Nothing about a tool is restated here: name, description, input schema (from the function's
signature) and annotations all come from its ToolSpec. This module only adapts the calling
convention: the caller's identity comes from the X-hal0-Agent header of the HTTP request
carrying the message, and the catalogue's expected failures become MCP tool errors.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    ListPromptsResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    ListToolsResult,
    ToolAnnotations,
)

from hal0.agents import AGENT_HEADER, InvalidAgentIdError, UntrustedPeerError, identify
from hal0.memory import MemoryDisabledError, MemoryStoreError
from hal0.services import Services
from hal0.tools import Server, ToolContext, ToolFailedError, ToolSpec, invoke, tool, tools_of
from hal0.tools.gated import call_tool, decision_for
from hal0.tools.policy import Decision, evaluate

_EXPECTED = (ToolFailedError, MemoryStoreError, MemoryDisabledError)

# A resource (or resource template) is governed by the tool it mirrors: listed only where that tool
# may run, and read only through the policy door as a call of that tool (persona, rules, quotas).
MIRRORS = {"hal0://status": "admin:status", "hal0://config": "admin:get_config", "hal0://memory/{agent}": "memory:list"}
# The SDK hands static resources no request context; the read handler puts the caller here.
_reader: ContextVar[str] = ContextVar("hal0_resource_reader")


def mirrored_tool(uri: str) -> str | None:
    """The tool a resource URI mirrors: an exact entry of MIRRORS, or a template's one `{name}` segment."""
    if uri in MIRRORS:
        return MIRRORS[uri]
    for pattern, name in MIRRORS.items():
        prefix, brace, rest = pattern.partition("{")
        if brace and rest.endswith("}") and uri.startswith(prefix) and uri[len(prefix):] and "/" not in uri[len(prefix):]:
            return name
    return None


def _no_cursor(method: str, params: Any) -> None:
    """hal0's lists are short and sent whole, so it never hands out a cursor: any cursor is invalid (-32602)."""
    cursor = getattr(params, "cursor", None)
    if cursor is not None:
        raise MCPError(INVALID_PARAMS, f"{method}: invalid cursor {cursor[:64]!r}; this server sends every list whole and "
                       "never issues a cursor")


def agent_of(ctx: Context, services: Services) -> str:
    """The caller's agent id; an invalid header is a protocol error (-32602) naming the rule, and
    so is one from an untrusted peer (the mount refuses those with 403 before they get here)."""
    headers = ctx.headers or {}
    value = next((v for k, v in headers.items() if k.lower() == AGENT_HEADER.lower()), None)
    client = getattr(ctx.request_context.request, "client", None)
    agents = services.config.agents
    try:
        return identify(value, client.host if client else None, agents.default_agent, agents.identity).agent
    except (InvalidAgentIdError, UntrustedPeerError) as error:
        raise MCPError(INVALID_PARAMS, str(error)) from None


def annotations_of(spec: ToolSpec) -> ToolAnnotations:
    return ToolAnnotations(
        title=spec.title,
        read_only_hint=spec.read_only,
        destructive_hint=spec.destructive,
        idempotent_hint=spec.idempotent,
        open_world_hint=False,  # every tool acts on this box only
    )


def _handler(spec: ToolSpec, services: Services) -> Callable[..., Awaitable[dict[str, Any]]]:
    """An MCP tool function with the spec's parameters plus the SDK's Context.

    The SDK reads the signature to build the input schema and to find where to inject the
    Context, so the wrapper carries an explicit `__signature__` rather than restating types.
    """

    async def handler(**arguments: Any) -> dict[str, Any]:
        ctx: Context = arguments.pop("ctx")
        call = ToolContext(services=services, agent=agent_of(ctx, services))
        try:
            return await call_tool(spec, call, arguments)
        except _EXPECTED as error:
            raise ToolError(str(error)) from None

    params = spec.parameters()
    context = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)
    handler.__signature__ = inspect.Signature([*params, context], return_annotation=dict[str, Any])  # type: ignore[attr-defined]
    handler.__annotations__ = {p.name: p.annotation for p in params} | {"ctx": Context, "return": dict[str, Any]}
    handler.__name__ = spec.name
    handler.__doc__ = spec.description
    return handler


def policy_note(spec: ToolSpec, call: ToolContext) -> str:
    """What the approval policy does with this tool for this agent, told in its description."""
    decision = decision_for(spec, call)
    if decision.verdict == "allow":
        return ""
    verb = "needs a human's approval" if decision.verdict == "ask" else "is denied"
    return f" [policy: {verb} for you ({decision.reason}; {decision.rule})]"


class GatedMCPServer(MCPServer):
    """tools/list shows an agent only the tools its persona allows, described with the policy that
    applies to it, so a client sees what it will really get."""

    def __init__(self, *args: Any, services: Services, server: Server, **kwargs: Any) -> None:
        self._hal0_services = services
        self._hal0_server = server
        super().__init__(*args, **kwargs)

    async def _handle_list_tools(self, ctx: Any, params: Any) -> ListToolsResult:
        _no_cursor("tools/list", params)
        context = Context(request_context=ctx, mcp_server=self)
        call = ToolContext(services=self._hal0_services, agent=agent_of(context, self._hal0_services))
        specs = {spec.name: spec for spec in tools_of(self._hal0_server)}
        shown = []
        for listed in await self.list_tools():
            spec = specs.get(listed.name)
            if spec is None or not decision_for(spec, call).visible:
                continue
            note = policy_note(spec, call)
            shown.append(listed.model_copy(update={"description": (listed.description or "") + note}) if note else listed)
        return ListToolsResult(tools=shown)

    def _mirror_decision(self, uri: str, agent: str) -> Decision | None:
        """What the policy says of `agent` seeing the resource (no quota counted: a question, not a call)."""
        name = mirrored_tool(uri)
        return None if name is None else decision_for(tool(name), ToolContext(self._hal0_services, agent))

    def _shown(self, uri: str, agent: str) -> bool:
        decision = self._mirror_decision(uri, agent)
        return decision is None or decision.verdict == "allow"

    async def _handle_list_resources(self, ctx: Any, params: Any) -> ListResourcesResult:
        _no_cursor("resources/list", params)
        agent = agent_of(Context(request_context=ctx, mcp_server=self), self._hal0_services)
        return ListResourcesResult(resources=[item for item in await self.list_resources() if self._shown(str(item.uri), agent)])

    async def _handle_list_resource_templates(self, ctx: Any, params: Any) -> ListResourceTemplatesResult:
        _no_cursor("resources/templates/list", params)
        agent = agent_of(Context(request_context=ctx, mcp_server=self), self._hal0_services)
        templates = [item for item in await self.list_resource_templates() if self._shown(item.uri_template, agent)]
        return ListResourceTemplatesResult(resource_templates=templates)

    async def _handle_read_resource(self, ctx: Any, params: Any) -> Any:
        agent = agent_of(Context(request_context=ctx, mcp_server=self), self._hal0_services)
        uri = str(params.uri)
        name = mirrored_tool(uri)
        if name is not None:
            # The one policy door, as for a call of the mirrored tool: persona, rules, and the quota it counts.
            decision = evaluate(self._hal0_services.config.agents, agent, tool(name), {}, quotas=self._hal0_services.quotas)
            if decision.verdict != "allow":
                # A read cannot wait for a human: `ask` is refused too, pointing at the tool that can queue it.
                why = decision.message if decision.verdict != "ask" else f"{decision.tool} needs a human's approval ({decision.reason}); call the tool"
                data: dict[str, Any] = {"uri": uri, "code": decision.code}
                if decision.retry_after is not None:
                    data["retry_after"] = decision.retry_after
                raise MCPError(INVALID_PARAMS, f"resource {uri} mirrors {decision.tool}: {why}", data=data)
        token = _reader.set(agent)
        try:
            return await super()._handle_read_resource(ctx, params)
        finally:
            _reader.reset(token)

    async def _handle_list_prompts(self, ctx: Any, params: Any) -> ListPromptsResult:
        _no_cursor("prompts/list", params)
        return await super()._handle_list_prompts(ctx, params)

    async def _handle_get_prompt(self, ctx: Any, params: Any) -> Any:
        names = {prompt.name for prompt in await self.list_prompts()}
        if params.name not in names:
            # The spec's code for an unknown prompt (the SDK's own answer is a bare ValueError, code 0).
            known = f"one of {', '.join(sorted(names))}" if names else "this server has no prompts"
            raise MCPError(INVALID_PARAMS, f"unknown prompt {params.name[:64]!r} ({known})", data={"name": params.name[:64]})
        return await super()._handle_get_prompt(ctx, params)


class _Capabilities:
    """SDK middleware: the capabilities a server advertises say what it has. The SDK advertises
    `prompts` for every MCPServer; hal0's servers have none, so the handshake leaves it out."""

    def __init__(self, server: MCPServer) -> None:
        self._server = server

    async def __call__(self, ctx: Any, call_next: Any) -> Any:
        result = await call_next(ctx)
        if ctx.method in ("initialize", "server/discover") and isinstance(result, dict):
            capabilities = result.get("capabilities")
            if isinstance(capabilities, dict) and not await self._server.list_prompts():
                capabilities.pop("prompts", None)
        return result


def build_server(server: Server, services: Services, instructions: str) -> MCPServer:
    # The SDK calls logging.basicConfig at this level: a no-op under `hal0 serve`, which configures
    # logging first; elsewhere (tests, embedding) it follows hal0's own log level.
    level = services.config.server.log_level.upper()
    mcp = GatedMCPServer(
        f"hal0-{server}", version=services.version, instructions=instructions, log_level=level, services=services, server=server,  # type: ignore[arg-type]
    )
    for spec in tools_of(server):
        mcp.add_tool(_handler(spec, services), name=spec.name, title=spec.title,
                     description=spec.description, annotations=annotations_of(spec))
    mcp.middleware.append(_Capabilities(mcp))
    return mcp


def _json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2)


def build_admin(services: Services) -> MCPServer:
    mcp = build_server("admin", services, "Read the state of this hal0 box; privileged tools change it.")

    async def read(name: str) -> str:
        # The policy was asked by GatedMCPServer._handle_read_resource, which names the reader.
        agent = _reader.get(services.config.agents.default_agent)
        return _json(await invoke(tool(f"admin:{name}"), ToolContext(services, agent), {}))

    @mcp.resource("hal0://status", name="status", mime_type="application/json",
                  description="The same document as the status tool.")
    async def status_resource() -> str:
        return await read("status")

    @mcp.resource("hal0://config", name="config", mime_type="application/json",
                  description="The effective configuration (read-only).")
    async def config_resource() -> str:
        return await read("get_config")

    return mcp


def build_memory(services: Services) -> MCPServer:
    mcp = build_server("memory", services, "Your own memory on this hal0 box, keyed by your X-hal0-Agent id.")

    @mcp.resource("hal0://memory/{agent}", name="namespace", mime_type="application/json",
                  description="The newest items of a memory namespace; readable only by that agent, where its memory:list may run.")
    async def namespace_resource(agent: str, ctx: Context) -> str:
        # The policy door (memory:list, quotas counted) was passed in GatedMCPServer._handle_read_resource.
        caller = agent_of(ctx, services)
        if agent != caller:
            # The same refusal whether or not that namespace exists: ids leak nothing.
            raise ResourceError(f"agent {caller!r} can read only hal0://memory/{caller}")
        try:
            return _json(await invoke(tool("memory:list"), ToolContext(services, caller), {}))
        except _EXPECTED as error:
            raise ResourceError(str(error)) from None

    return mcp
