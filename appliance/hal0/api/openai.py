"""The OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hal0.agents.policy import persona_for
from hal0.api.body import parse_json
from hal0.api.errors import ApiError, bad_request, unavailable
from hal0.api.generation import enter_turn, lookup_model, run_to_completion, services_of, start_stream
from hal0.api.identity import agent_of
from hal0.api.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from hal0.inference import Guard


async def list_models(request: Request) -> JSONResponse:
    services = services_of(request)
    data = [
        {
            "id": runtime.id,
            "object": "model",
            "created": int(runtime.loaded_at or services.started_at),
            "owned_by": "hal0",
            "state": runtime.state.value,
            "default": runtime.id == services.models.default_id,
        }
        for runtime in services.models
    ]
    return JSONResponse({"object": "list", "data": data})


def _usage_chunk(include: bool, object_name: str) -> Any:
    def build(guard: Guard) -> dict[str, Any] | None:
        if not include:
            return None
        return {
            "id": f"usage-{int(time.time() * 1000)}",
            "object": object_name,
            "created": int(time.time()),
            "choices": [],
            "usage": {
                "prompt_tokens": guard.prompt_tokens,
                "completion_tokens": guard.generated,
                "total_tokens": guard.prompt_tokens + guard.generated,
            },
        }

    return build


def _record(request: Request, model: str, result: dict[str, Any], guard: Guard) -> None:
    usage = result.get("usage") or {}
    services_of(request).metrics.record_generation(
        model, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), guard.ttft
    )


def _apply_persona(request: Request, kwargs: dict[str, Any], model: str | None) -> str | None:
    """The caller's persona: its model when the request names none, its params as defaults, its
    limits as ceilings (a request over a limit is refused, never silently clamped)."""
    services = services_of(request)
    agent = agent_of(request, services)
    persona = persona_for(services.config.agents, agent)
    if persona is None:
        return model
    for name in ("temperature", "top_p", "top_k", "max_tokens", "stop"):
        default = getattr(persona.params, name)
        if name not in kwargs and default is not None:
            kwargs[name] = list(default) if name == "stop" else default
    limits = persona.limits
    if limits.max_tokens is not None:
        asked = kwargs.get("max_tokens")
        if asked is not None and asked > limits.max_tokens:
            raise bad_request(
                f"max_tokens {asked} exceeds persona {persona.id!r}'s limit of {limits.max_tokens} (agents.personas[].limits.max_tokens)",
                param="max_tokens", code="persona_limit",
            )
        kwargs.setdefault("max_tokens", limits.max_tokens)
    if limits.max_temperature is not None and kwargs.get("temperature", 0) > limits.max_temperature:
        raise bad_request(
            f"temperature {kwargs['temperature']} exceeds persona {persona.id!r}'s limit of {limits.max_temperature}",
            param="temperature", code="persona_limit",
        )
    if persona.system_prompt and "messages" in kwargs:
        kwargs["messages"] = [{"role": "system", "content": persona.system_prompt}, *kwargs["messages"]]
    return model or persona.model


async def _generate(
    request: Request, runtime: Any, method: str, kwargs: dict[str, Any], stream: bool, include_usage: bool, chunk_object: str
) -> Response:
    """Run `llm.<method>(**kwargs)` for the request: as an SSE stream, or to completion as JSON."""
    if stream:

        def stream_work(llm: Any, _guard: Guard) -> Iterator[dict[str, Any]]:
            yield from getattr(llm, method)(stream=True, **kwargs)

        return await start_stream(request, runtime, stream_work, _usage_chunk(include_usage, chunk_object))

    result, guard = await run_to_completion(request, runtime, lambda llm, _g: getattr(llm, method)(**kwargs))
    result["model"] = runtime.id
    _record(request, runtime.id, result, guard)
    return JSONResponse(result)


async def chat_completions(request: Request) -> Response:
    services = services_of(request)
    body = await parse_json(request, ChatCompletionRequest, services.config.server.max_body_bytes)
    kwargs: dict[str, Any] = {"messages": [message.as_llama() for message in body.messages], **body.sampling()}
    if body.token_limit is not None:
        kwargs["max_tokens"] = body.token_limit
    runtime = lookup_model(services, _apply_persona(request, kwargs, body.model))
    if body.response_format and body.response_format.get("type") == "json_object":
        kwargs["response_format"] = {"type": "json_object"}

    return await _generate(request, runtime, "create_chat_completion", kwargs, body.stream, body.include_usage, "chat.completion.chunk")


async def completions(request: Request) -> Response:
    services = services_of(request)
    body = await parse_json(request, CompletionRequest, services.config.server.max_body_bytes)
    kwargs: dict[str, Any] = {"prompt": body.prompt_text, "echo": body.echo, **body.sampling()}
    if "max_tokens" in body.model_fields_set or body.max_tokens is None:
        kwargs["max_tokens"] = body.max_tokens
    runtime = lookup_model(services, _apply_persona(request, kwargs, body.model))
    kwargs.setdefault("max_tokens", body.max_tokens)
    if body.suffix is not None:
        kwargs["suffix"] = body.suffix

    return await _generate(request, runtime, "create_completion", kwargs, body.stream, body.include_usage, "text_completion")


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


async def embeddings(request: Request) -> Response:
    services = services_of(request)
    body = await parse_json(request, EmbeddingRequest, services.config.server.max_body_bytes)
    runtime = lookup_model(services, body.model)
    if not runtime.config.embeddings:
        raise bad_request(f"model {runtime.id!r} does not serve embeddings (models[].embeddings is false)", param="model")
    if any(not text for text in body.inputs):
        raise bad_request("input must not contain empty strings", param="input")
    async with AsyncExitStack() as stack:
        await enter_turn(stack, runtime, services.config.server.queue_limit)
        try:
            raw = await runtime.embed(body.inputs)
        except ValueError as error:
            raise bad_request(str(error), param="input", code="context_length_exceeded") from None
        except RuntimeError as error:
            raise unavailable(f"embeddings failed: {error}") from None
    data = []
    for item in raw["data"]:
        vector = item["embedding"]
        if body.dimensions is not None:
            if body.dimensions > len(vector):
                raise bad_request(f"dimensions must be at most {len(vector)} for this model", param="dimensions")
            vector = vector[: body.dimensions]
        data.append({"object": "embedding", "index": item["index"], "embedding": _encode(vector, body.encoding_format)})
    usage = raw.get("usage", {})
    services.metrics.record_generation(runtime.id, usage.get("prompt_tokens", 0), 0, None)
    return JSONResponse({"object": "list", "data": data, "model": runtime.id, "usage": usage})


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
]

__all__ = ["ApiError", "routes"]
