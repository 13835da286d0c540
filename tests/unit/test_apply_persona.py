"""The persona applied to a GenerationRequest (agents/personas.py, through api/tasks.py's personalised) in
process, on a bare Starlette request: the persona's model, its params as defaults, its limits as ceilings
(max_tokens in every spelling a request can take), its system prompt, and the request fields of each
dialect that reach it as max_tokens."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hal0.agents import AGENT_HEADER
from hal0.agents.personas import cache_scope
from hal0.agents.request import GenerationRequest
from hal0.api.errors import ApiError
from hal0.api.messages import MessagesRequest
from hal0.api.openai import chat_request
from hal0.api.schemas import ChatCompletionRequest
from hal0.api.tasks import personalised
from hal0.config.models import AgentsConfig, GenerationParams, Persona, PersonaLimits
from starlette.requests import Request

AGENTS = AgentsConfig(
    default_agent="anonymous",
    personas=(
        Persona(id="coder", model="big", system_prompt="You write code.",
                params=GenerationParams(temperature=0.2, max_tokens=100, stop=("###",)),
                limits=PersonaLimits(max_tokens=200, max_temperature=1.0)),
        Persona(id="capped", limits=PersonaLimits(max_tokens=50)),
    ),
)


def request_from(agent: str | None, agents: AgentsConfig = AGENTS) -> Request:
    services = SimpleNamespace(config=SimpleNamespace(agents=agents))
    headers = [(AGENT_HEADER.lower().encode(), agent.encode())] if agent else []
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers, "client": ("127.0.0.1", 5000),
                    "app": SimpleNamespace(state=SimpleNamespace(services=services))})


_PERSONA_FIELDS = ("messages", "max_tokens", "stop", "temperature", "top_p", "top_k")


def apply_persona(request: Request, kwargs: dict[str, Any], model: str | None) -> str | None:
    """The request `kwargs` spell (chat completions' names) under the caller's persona, written back into
    `kwargs` as the fields the persona may set; the model the request gets."""
    wanted = GenerationRequest(model=model, **{name: tuple(value) if name in ("messages", "stop") and value is not None else value
                                               for name, value in kwargs.items()})
    _persona, applied = personalised(request, wanted)
    for name in _PERSONA_FIELDS:
        value = getattr(applied, name)
        if value is not None:
            kwargs[name] = list(value) if name in ("messages", "stop") else value
    return applied.model


def cache_fields(request: Request, messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    persona, _applied = personalised(request, GenerationRequest())
    return cache_scope(persona, tuple(messages) if messages is not None else None)


def persona_of(agent: str | None, kwargs: dict[str, Any], model: str | None = None) -> str | None:
    return apply_persona(request_from(agent), kwargs, model)


def test_an_agent_without_a_persona_is_left_alone() -> None:
    kwargs = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10_000}
    assert persona_of("stranger", kwargs, "m") == "m"
    assert kwargs == {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10_000}


def test_the_persona_supplies_model_defaults_and_system_prompt() -> None:
    kwargs: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "temperature": None}
    assert persona_of("coder", kwargs) == "big"
    assert kwargs == {
        "messages": [{"role": "system", "content": "You write code."}, {"role": "user", "content": "hi"}],
        "temperature": 0.2,  # an explicit null takes the default too
        "max_tokens": 100, "stop": ["###"],
    }


def test_the_request_s_own_values_win_over_the_defaults() -> None:
    kwargs: dict[str, Any] = {"messages": [], "temperature": 0.9, "max_tokens": 150, "stop": ["END"]}
    assert persona_of("coder", kwargs, "small") == "small"
    assert (kwargs["temperature"], kwargs["max_tokens"], kwargs["stop"]) == (0.9, 150, ["END"])


def test_a_raw_completion_gets_no_system_prompt() -> None:
    kwargs: dict[str, Any] = {}
    persona_of("coder", kwargs)
    assert "messages" not in kwargs and kwargs["max_tokens"] == 100


@pytest.mark.parametrize("kwargs", [{}, {"max_tokens": None}])
def test_absent_or_null_max_tokens_is_the_limit(kwargs: dict[str, Any]) -> None:
    persona_of("capped", kwargs)
    assert kwargs["max_tokens"] == 50


@pytest.mark.parametrize(("agent", "asked"), [("capped", 51), ("coder", 201)])
def test_max_tokens_over_the_limit_is_refused_not_clamped(agent: str, asked: int) -> None:
    with pytest.raises(ApiError) as raised:
        persona_of(agent, {"max_tokens": asked})
    error = raised.value
    assert (error.status, error.param, error.code) == (400, "max_tokens", "persona_limit")
    assert f"max_tokens {asked} exceeds persona {agent!r}" in error.message


def test_max_tokens_at_the_limit_passes() -> None:
    kwargs = {"max_tokens": 50}
    persona_of("capped", kwargs)
    assert kwargs["max_tokens"] == 50


def test_temperature_over_the_limit_is_refused() -> None:
    with pytest.raises(ApiError) as raised:
        persona_of("coder", {"temperature": 1.5})
    assert (raised.value.param, raised.value.code) == ("temperature", "persona_limit")


def test_no_header_is_the_default_agent_s_persona() -> None:
    agents = AGENTS.model_copy(update={"default_agent": "capped"})
    kwargs: dict[str, Any] = {}
    apply_persona(request_from(None, agents), kwargs, None)
    assert kwargs == {"max_tokens": 50}


@pytest.mark.parametrize(("body", "limit", "refused"), [
    ({"max_tokens": 70}, 70, True),
    ({"max_completion_tokens": 60}, 60, True),  # the newer spelling
    ({"max_completion_tokens": 40}, 40, False),
    ({"max_tokens": None}, None, False),
    ({}, None, False),
])
def test_each_chat_spelling_reaches_the_persona_as_max_tokens(body: dict[str, Any], limit: int | None, refused: bool) -> None:
    chat = ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **body})
    assert chat.token_limit == limit
    wanted = chat_request(chat)  # as chat_completions builds it
    kwargs = {} if wanted.max_tokens is None else {"max_tokens": wanted.max_tokens}
    if refused:
        with pytest.raises(ApiError):
            persona_of("capped", kwargs)
    else:
        persona_of("capped", kwargs)
        assert kwargs["max_tokens"] == (limit or 50)


def test_anthropic_max_tokens_is_required() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        MessagesRequest.model_validate({"messages": [{"role": "user", "content": "hi"}]})


def test_cache_fields_count_the_configured_system_prompt_as_public() -> None:
    kwargs: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    request = request_from("coder")
    apply_persona(request, kwargs, None)
    assert cache_fields(request, kwargs["messages"]) == {"persona": "coder", "public_messages": 1}
    own = [{"role": "system", "content": "my own"}]
    assert cache_fields(request, own) == {"persona": "coder", "public_messages": 0}
    assert cache_fields(request_from("stranger"), own) == {}
