"""The OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings."""

from __future__ import annotations

import base64
import struct
import threading
import time
import uuid
from contextlib import AsyncExitStack
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hal0.api.body import parse_json
from hal0.api.errors import ApiError, bad_request, unavailable
from hal0.api.generation import (
    cancel_on_disconnect,
    deadline_of,
    enter_turn,
    lookup_model,
    run_to_completion,
    services_of,
    start_stream,
)
from hal0.api.identity import agent_of
from hal0.api.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from hal0.api.tasks import apply_persona, finish_of, sampling_of, stops_of, text_of
from hal0.inference import Cancelled, Event, Finish, JsonOutput, Task, TextDelta


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


def _usage(finish: Finish) -> dict[str, int]:
    usage = finish.usage
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens}


class _Chunks:
    """Event -> wire chunks of one response (ids and timestamps shared by all its chunks)."""

    def __init__(self, model: str, object_name: str, prefix: str, include_usage: bool) -> None:
        self.meta = {"id": f"{prefix}-{uuid.uuid4()}", "object": object_name, "created": int(time.time()), "model": model}
        self.include_usage = include_usage

    def usage_chunk(self, finish: Finish) -> list[dict[str, Any]]:
        return [{**self.meta, "choices": [], "usage": _usage(finish)}] if self.include_usage else []


class _ChatChunks(_Chunks):
    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, "chat.completion.chunk", "chatcmpl", include_usage)
        self.started = False

    def __call__(self, event: Event) -> list[dict[str, Any]]:
        chunks: list[dict[str, Any]] = []
        if not self.started:
            self.started = True
            chunks.append(self._chunk({"role": "assistant", "content": ""}, None))
        if isinstance(event, TextDelta):
            if event.text:
                chunks.append(self._chunk({"content": event.text}, None))
        elif isinstance(event, Finish):
            chunks.append(self._chunk({}, _reason(event)))
            chunks.extend(self.usage_chunk(event))
        return chunks

    def _chunk(self, delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
        return {**self.meta, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}


class _TextChunks(_Chunks):
    def __init__(self, model: str, include_usage: bool) -> None:
        super().__init__(model, "text_completion", "cmpl", include_usage)

    def __call__(self, event: Event) -> list[dict[str, Any]]:
        if isinstance(event, TextDelta):
            return [self._chunk(event.text, None)] if event.text else []
        if isinstance(event, Finish):
            return [self._chunk("", _reason(event)), *self.usage_chunk(event)]
        return []

    def _chunk(self, text: str, reason: str | None) -> dict[str, Any]:
        return {**self.meta, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": reason}]}


def _reason(finish: Finish) -> str:
    return "stop" if finish.reason == "cancelled" else finish.reason


async def chat_completions(request: Request) -> Response:
    services = services_of(request)
    body = await parse_json(request, ChatCompletionRequest, services.config.server.max_body_bytes)
    kwargs: dict[str, Any] = {"messages": [message.as_llama() for message in body.messages], **body.sampling()}
    if body.token_limit is not None:
        kwargs["max_tokens"] = body.token_limit
    runtime = lookup_model(services, apply_persona(request, kwargs, body.model))
    json_output = body.response_format is not None and body.response_format.get("type") == "json_object"
    task = Task(
        messages=tuple(kwargs["messages"]),
        sampling=sampling_of(kwargs),
        max_tokens=kwargs.get("max_tokens"),
        stop=stops_of(kwargs),
        output=JsonOutput() if json_output else None,
        deadline=deadline_of(services),
        agent=agent_of(request, services),
    )
    if body.stream:
        return await start_stream(request, runtime, task, _ChatChunks(runtime.id, body.include_usage))
    events = await run_to_completion(request, runtime, task)
    finish = finish_of(events)
    meta = _Chunks(runtime.id, "chat.completion", "chatcmpl", False).meta
    choice = {"index": 0, "message": {"role": "assistant", "content": text_of(events)}, "logprobs": None, "finish_reason": _reason(finish)}
    return JSONResponse({**meta, "choices": [choice], "usage": _usage(finish)})


async def completions(request: Request) -> Response:
    services = services_of(request)
    body = await parse_json(request, CompletionRequest, services.config.server.max_body_bytes)
    kwargs: dict[str, Any] = {**body.sampling()}
    if "max_tokens" in body.model_fields_set or body.max_tokens is None:
        kwargs["max_tokens"] = body.max_tokens
    runtime = lookup_model(services, apply_persona(request, kwargs, body.model))
    kwargs.setdefault("max_tokens", body.max_tokens)
    task = Task(
        prompt=body.prompt_text,
        sampling=sampling_of(kwargs),
        max_tokens=kwargs.get("max_tokens"),
        stop=stops_of(kwargs),
        echo=body.echo,
        suffix=body.suffix,
        deadline=deadline_of(services),
        agent=agent_of(request, services),
    )
    if body.stream:
        return await start_stream(request, runtime, task, _TextChunks(runtime.id, body.include_usage))
    events = await run_to_completion(request, runtime, task)
    finish = finish_of(events)
    meta = _Chunks(runtime.id, "text_completion", "cmpl", False).meta
    choice = {"text": text_of(events), "index": 0, "logprobs": None, "finish_reason": _reason(finish)}
    return JSONResponse({**meta, "choices": [choice], "usage": _usage(finish)})


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
    cancel = threading.Event()
    async with AsyncExitStack() as stack:
        await enter_turn(stack, runtime, services.config.server.queue_limit)
        async with cancel_on_disconnect(request, cancel.set):
            try:
                raw = await runtime.embed(body.inputs, cancel)
            except Cancelled:
                raise ApiError(499, "client closed the request", code="client_closed") from None
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
    return JSONResponse({"object": "list", "data": data, "model": runtime.id, "usage": usage})


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
]

__all__ = ["ApiError", "routes"]
