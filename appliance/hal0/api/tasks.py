"""What every generating dialect shares: a request's fields -> an inference Task, events -> results.

Chat completions, Responses and Messages differ only in their wire shapes; the persona (model,
default params, limits, system prompt), identity, deadline and sampling are applied here, once,
so the three dialects cannot drift apart. `kwargs` holds the request's fields under chat
completions' names (messages, max_tokens, stop, temperature, ...), whatever the dialect called them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from hal0.agents.policy import persona_for
from hal0.api.errors import bad_request
from hal0.api.generation import deadline_of, lookup_model, services_of
from hal0.api.identity import agent_of
from hal0.inference import Event, Finish, ModelRuntime, ReasoningDelta, Sampling, Task, TextDelta, ToolCallDelta

_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty", "repeat_penalty", "logit_bias")


def apply_persona(request: Request, kwargs: dict[str, Any], model: str | None) -> str | None:
    """The caller's persona: its model when the request names none, its params as defaults, its
    limits as ceilings (a request over a limit is refused, never silently clamped)."""
    services = services_of(request)
    agent = agent_of(request, services)
    persona = persona_for(services.config.agents, agent)
    if persona is None:
        return model
    for name in ("temperature", "top_p", "top_k", "max_tokens", "stop"):
        default = getattr(persona.params, name)
        # An explicit null is the same as leaving the field out: it takes the persona's default.
        if kwargs.get(name) is None and default is not None:
            kwargs[name] = list(default) if name == "stop" else default
    limits = persona.limits
    if limits.max_tokens is not None:
        asked = kwargs.get("max_tokens")
        if asked is not None and asked > limits.max_tokens:
            raise bad_request(
                f"max_tokens {asked} exceeds persona {persona.id!r}'s limit of {limits.max_tokens} (agents.personas[].limits.max_tokens)",
                param="max_tokens", code="persona_limit",
            )
        if asked is None:  # absent or null ("until the context is full") is limited like any other spelling
            kwargs["max_tokens"] = limits.max_tokens
    if limits.max_temperature is not None and kwargs.get("temperature", 0) > limits.max_temperature:
        raise bad_request(
            f"temperature {kwargs['temperature']} exceeds persona {persona.id!r}'s limit of {limits.max_temperature}",
            param="temperature", code="persona_limit",
        )
    if persona.system_prompt and "messages" in kwargs:
        kwargs["messages"] = [{"role": "system", "content": persona.system_prompt}, *kwargs["messages"]]
    return model or persona.model


def cache_fields(request: Request, messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The Task fields that scope the prompt cache: the caller's persona and whether `messages` open
    with its configured system prompt (apply_persona's; compared, so a reload in between cannot make
    the caller's own first message count as config)."""
    services = services_of(request)
    persona = persona_for(services.config.agents, agent_of(request, services))
    if persona is None:
        return {}
    first = messages[0] if messages else {}
    public = bool(persona.system_prompt) and first.get("role") == "system" and first.get("content") == persona.system_prompt
    return {"persona": persona.id, "public_messages": 1 if public else 0}


def sampling_of(kwargs: dict[str, Any]) -> Sampling:
    return Sampling(**{name: kwargs[name] for name in _SAMPLING if name in kwargs})


def stops_of(kwargs: dict[str, Any]) -> tuple[str, ...]:
    stop = kwargs.get("stop")
    return (stop,) if isinstance(stop, str) else tuple(stop or ())


def chat_task(request: Request, kwargs: dict[str, Any], model: str | None, **fields: Any) -> tuple[ModelRuntime, Task]:
    """The model and the chat Task for `kwargs` (persona applied); `fields` are further Task fields
    (tools, tool_choice, output, ...)."""
    services = services_of(request)
    runtime = lookup_model(services, apply_persona(request, kwargs, model))
    task = Task(
        messages=tuple(kwargs["messages"]),
        sampling=sampling_of(kwargs),
        max_tokens=kwargs.get("max_tokens"),
        stop=stops_of(kwargs),
        deadline=deadline_of(services),
        agent=agent_of(request, services),
        **cache_fields(request, kwargs["messages"]),
        **fields,
    )
    return runtime, task


def finish_of(events: list[Event]) -> Finish:
    finish = events[-1]
    assert isinstance(finish, Finish)
    return finish


def text_of(events: list[Event]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def reasoning_of(events: list[Event]) -> str:
    """The reasoning a thinking model wrote before its answer ("" when none)."""
    return "".join(event.text for event in events if isinstance(event, ReasoningDelta))


@dataclass
class Call:
    """One tool call assembled from its deltas."""

    id: str
    name: str
    arguments: str = ""


def calls_of(events: list[Event]) -> list[Call]:
    calls: list[Call] = []
    for event in events:
        if isinstance(event, ToolCallDelta):
            if event.id is not None:
                calls.append(Call(event.id, event.name or ""))
            calls[event.index].arguments += event.arguments
    return calls
