"""What every generating dialect shares: a GenerationRequest -> the model and an inference Task, events -> results.

Chat completions, completions, Responses and Messages differ only in their wire shapes: each turns its body
into a `GenerationRequest` (agents/request.py), and from there one path serves them all. The persona (model,
default params, system prompt) is applied and its limits answered here, then the model looked up and the
Task built, then every check that can refuse the Task made: all before the request takes a quota lease or
waits for the model, so the dialects cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from hal0.agents.personas import apply_persona, cache_scope, persona_for
from hal0.agents.request import GenerationRequest
from hal0.api.errors import bad_request
from hal0.api.generation import check, deadline_of, lookup_model, services_of
from hal0.api.identity import agent_of
from hal0.config.models import Persona
from hal0.inference import Event, Finish, ModelRuntime, ReasoningDelta, Task, TextDelta, ToolCallDelta
from hal0.tools.policy import evaluate_generation


def personalised(request: Request, wanted: GenerationRequest) -> tuple[Persona | None, GenerationRequest]:
    """The caller's persona and `wanted` under it, as the policy door lets it through; a 400 naming the
    persona limit it exceeds (refused, never silently clamped)."""
    services = services_of(request)
    agent = agent_of(request, services)
    persona = persona_for(services.config.agents, agent)
    applied = apply_persona(persona, wanted)
    decision = evaluate_generation(services.config.agents, agent, applied)
    if decision.verdict != "allow":
        raise bad_request(decision.message, param=decision.limit, code=decision.code)
    return persona, applied


def generation_task(request: Request, wanted: GenerationRequest) -> tuple[ModelRuntime, Task]:
    """The model and the Task of `wanted` (persona applied), not yet checked: /apply-template and
    count_tokens only render its prompt."""
    services = services_of(request)
    persona, applied = personalised(request, wanted)
    runtime = lookup_model(services, applied.model)
    task = Task(
        prompt=applied.prompt,
        messages=applied.messages,
        sampling=applied.sampling,
        max_tokens=applied.token_limit,
        stop=applied.stop or (),
        echo=applied.echo,
        suffix=applied.suffix,
        output=applied.output,
        tools=applied.tools,
        tool_choice=applied.tool_choice,
        parallel_tool_calls=applied.parallel_tool_calls,
        logprobs=applied.logprobs,
        deadline=deadline_of(services),
        agent=agent_of(request, services),
        reasoning_format=applied.reasoning_format or "auto",
        chat_template_kwargs=dict(applied.chat_template_kwargs),
        **cache_scope(persona, applied.messages),
    )
    return runtime, task


async def prepare(request: Request, wanted: GenerationRequest) -> tuple[ModelRuntime, Task]:
    """The model and the checked Task of `wanted`: a schema, grammar or persona limit that cannot be met
    is a 400 here, before any quota lease or queue wait (run_to_completion and start_stream take it as checked)."""
    runtime, task = generation_task(request, wanted)
    await check(task, runtime)
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
