"""Personas: which one an agent runs under, and what it does to that agent's generation requests.

A persona supplies the model when a request names none, its params as defaults for what the request
left out, its `limits.max_tokens` as the max_tokens of a request that names none, and its system prompt
before the request's messages. Whether a request stays within the persona's limits is the policy
door's answer (tools.policy.evaluate_generation), not this module's.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import TYPE_CHECKING, Any

from hal0.config.models import AgentsConfig, Persona

if TYPE_CHECKING:  # identity (and with it the CLI) needs persona_for without loading inference
    from hal0.agents.request import GenerationRequest


def persona_for(agents: AgentsConfig, agent: str) -> Persona | None:
    """The persona whose id is the agent; unknown agents get the default agent's persona, if any."""
    by_id = {persona.id: persona for persona in agents.personas}
    return by_id.get(agent) or by_id.get(agents.default_agent)


def apply_persona(persona: Persona | None, wanted: GenerationRequest) -> GenerationRequest:
    """`wanted` under `persona`: its model when the request names none, its params as defaults (an
    explicit null is the same as leaving the field out), its max_tokens limit when the request names
    no max_tokens (absent or null, "until the context is full", is limited like any other spelling),
    its system prompt first. A request over a limit is left as it is, to be refused, never clamped."""
    if persona is None:
        return wanted
    changes: dict[str, Any] = {}
    params = persona.params
    for name in ("temperature", "top_p", "top_k", "max_tokens", "stop"):
        default = getattr(params, name)
        if getattr(wanted, name) is None and default is not None:
            changes[name] = tuple(default) if name == "stop" else default
    if wanted.reasoning_format is None and params.reasoning_format is not None:
        changes["reasoning_format"] = params.reasoning_format
    if persona.limits.max_tokens is not None and changes.get("max_tokens", wanted.max_tokens) is None:
        changes["max_tokens"] = persona.limits.max_tokens
    if persona.system_prompt and wanted.messages is not None:
        changes["messages"] = ({"role": "system", "content": persona.system_prompt}, *wanted.messages)
    changes["model"] = wanted.model or persona.model
    return dataclasses.replace(wanted, **changes)


def cache_scope(persona: Persona | None, messages: tuple[dict[str, Any], ...] | None) -> dict[str, Any]:
    """The Task fields that scope the prompt cache: the caller's persona and whether `messages` open
    with its configured system prompt (apply_persona's; compared, so a reload in between cannot make
    the caller's own first message count as config)."""
    if persona is None:
        return {}
    first = messages[0] if messages else {}
    public = bool(persona.system_prompt) and first.get("role") == "system" and first.get("content") == persona.system_prompt
    return {"persona": persona.id, "public_messages": 1 if public else 0}


def tool_allowed_by_persona(persona: Persona | None, tool: str) -> bool:
    """Persona gating: whether the persona's `tools` patterns list the tool. No persona means no persona
    gating: the approval rules alone decide."""
    if persona is None:
        return True
    return any(fnmatch.fnmatchcase(tool, pattern) for pattern in persona.tools)


def persona_refusal(persona: Persona, agent: str, tool: str) -> str:
    patterns = ", ".join(persona.tools) or "none"
    return f"tool {tool} is not in persona {persona.id!r}'s tools ({patterns}) for agent {agent!r}: agents.personas[].tools"
