"""The OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hal0.agents.request import GenerationRequest
from hal0.api.body import parse_json
from hal0.api.dialect import function_tool, reasoning_format_of
from hal0.api.errors import ApiError, bad_request
from hal0.api.generation import lookup_model, run_embeddings, run_to_completion, services_of, start_stream
from hal0.api.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from hal0.api.tasks import calls_of, finish_of, prepare, reasoning_of, text_of
from hal0.inference import (
    Event,
    Finish,
    GrammarOutput,
    JsonOutput,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    Tool,
    ToolCallDelta,
)


async def list_models(request: Request) -> JSONResponse:
    """Every configured model, loaded or not, with its lifecycle state (hal0's fields beside OpenAI's)."""
    services = services_of(request)
    data = [
        {
            "id": model.id,
            "object": "model",
            "created": int(model.since or services.started_at),
            "owned_by": "hal0",
            "default": model.id == services.lifecycle.default_id,
            **model.as_json(),
            "n_threads": services.lifecycle.runtime(model.id).n_threads,
            "tool_format": services.lifecycle.runtime(model.id).tool_format,
            "prompt_cache": services.metrics.prompt_cache(model.id),
        }
        for model in services.lifecycle.statuses()
    ]
    return JSONResponse({"object": "list", "data": data})


def _usage(finish: Finish) -> dict[str, Any]:
    usage = finish.usage
    counted: dict[str, Any] = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens, "total_tokens": usage.total_tokens}
    if usage.reasoning_tokens:
        counted["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return counted


class _Chunks:
    """Event -> wire chunks of one response (ids and timestamps shared by all its chunks)."""

    def __init__(self, model: str, object_name: str, prefix: str, include_usage: bool) -> None:
        self.meta = {"id": f"{prefix}-{uuid.uuid4()}", "object": object_name, "created": int(time.time()), "model": model}
        self.include_usage = include_usage

    def usage_chunk(self, finish: Finish) -> list[dict[str, Any]]:
        return [{**self.meta, "choices": [], "usage": _usage(finish)}] if self.include_usage else []


def _chat_logprob(item: TokenLogprob) -> dict[str, Any]:
    return {
        "token": item.token, "logprob": item.logprob, "bytes": list(item.bytes),
        "top_logprobs": [{"token": token, "logprob": logprob, "bytes": list(raw)} for token, raw, logprob in item.top],
    }


def _call_delta(event: ToolCallDelta) -> dict[str, Any]:
    if event.id is not None:  # the first delta of a call: id, type and name
        return {"index": event.index, "id": event.id, "type": "function", "function": {"name": event.name, "arguments": event.arguments}}
    return {"index": event.index, "function": {"arguments": event.arguments}}


class ChatChunks(_Chunks):
    def __init__(self, model: str, include_usage: bool, logprobs: bool) -> None:
        super().__init__(model, "chat.completion.chunk", "chatcmpl", include_usage)
        self.started = False
        self.logprobs = logprobs

    def __call__(self, event: Event) -> list[dict[str, Any]]:
        chunks: list[dict[str, Any]] = []
        if not self.started:
            self.started = True
            chunks.append(self._chunk({"role": "assistant", "content": ""}, None))
        if isinstance(event, TextDelta):
            if event.text or event.logprobs:
                logprobs = {"content": [_chat_logprob(item) for item in event.logprobs], "refusal": None} if self.logprobs else None
                chunks.append(self._chunk({"content": event.text}, None, logprobs))
        elif isinstance(event, ReasoningDelta):
            chunks.append(self._chunk({"reasoning_content": event.text}, None))
        elif isinstance(event, ToolCallDelta):
            chunks.append(self._chunk({"tool_calls": [_call_delta(event)]}, None))
        elif isinstance(event, Finish):
            chunks.append(self._chunk({}, _reason(event)))
            chunks.extend(self.usage_chunk(event))
        return chunks

    def _chunk(self, delta: dict[str, Any], reason: str | None, logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
        return {**self.meta, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": reason}]}


def _text_logprobs(items: list[TokenLogprob], offset: int) -> dict[str, Any]:
    """The completions API's (legacy) logprobs shape."""
    offsets = []
    for item in items:
        offsets.append(offset)
        offset += len(item.token)
    return {
        "tokens": [item.token for item in items],
        "token_logprobs": [item.logprob for item in items],
        "top_logprobs": [{token: logprob for token, _raw, logprob in item.top} for item in items],
        "text_offset": offsets,
    }


class TextChunks(_Chunks):
    def __init__(self, model: str, include_usage: bool, logprobs: bool) -> None:
        super().__init__(model, "text_completion", "cmpl", include_usage)
        self.logprobs = logprobs
        self.offset = 0

    def __call__(self, event: Event) -> list[dict[str, Any]]:
        if isinstance(event, TextDelta):
            if not (event.text or event.logprobs):
                return []
            logprobs = _text_logprobs(list(event.logprobs), self.offset) if self.logprobs else None
            self.offset += len(event.text)
            return [self._chunk(event.text, None, logprobs)]
        if isinstance(event, Finish):
            return [self._chunk("", _reason(event)), *self.usage_chunk(event)]
        return []

    def _chunk(self, text: str, reason: str | None, logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
        return {**self.meta, "choices": [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": reason}]}


def _reason(finish: Finish) -> str:
    return "stop" if finish.reason == "cancelled" else finish.reason


def _logprob_items(events: list[Event]) -> list[TokenLogprob]:
    return [item for event in events if isinstance(event, TextDelta) for item in event.logprobs]


def _tool_calls(events: list[Event]) -> list[dict[str, Any]]:
    """The calls assembled from their deltas, in OpenAI's message shape."""
    return [{"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}} for call in calls_of(events)]


def _tools(body: ChatCompletionRequest) -> tuple[Tool, ...]:
    return tuple(
        function_tool(tool.function.name, tool.function.description, tool.function.parameters, f"tools[{index}].function.parameters")
        for index, tool in enumerate(body.tools or ())
    )


def _output(body: ChatCompletionRequest) -> JsonOutput | GrammarOutput | None:
    if body.grammar is not None:
        return GrammarOutput(body.grammar)
    response_format = body.response_format
    if response_format is None or response_format.type == "text":
        return None
    return JsonOutput(response_format.schema_of, param="response_format.json_schema.schema")


def chat_request(body: ChatCompletionRequest) -> GenerationRequest:
    """A chat completions body as the request every dialect produces."""
    return GenerationRequest(
        model=body.model,
        messages=tuple(message.as_llama() for message in body.messages),
        max_tokens=body.token_limit,
        **body.sampling(),
        output=_output(body),
        tools=_tools(body),
        tool_choice=body.tool_choice_name,
        parallel_tool_calls=body.parallel_tool_calls,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        reasoning_format=reasoning_format_of(body.reasoning_format),
        chat_template_kwargs=body.chat_template_kwargs or {},
    )


def completion_request(body: CompletionRequest) -> GenerationRequest:
    """A completions body as the request every dialect produces. Its default max_tokens (16) applies only
    when neither the body nor the persona names one; an explicit null means until the context is full."""
    given = "max_tokens" in body.model_fields_set
    return GenerationRequest(
        model=body.model,
        prompt=body.prompt_text,
        max_tokens=body.max_tokens if given else None,
        default_max_tokens=None if given else body.max_tokens,
        **body.sampling(),
        echo=body.echo,
        suffix=body.suffix,
        output=GrammarOutput(body.grammar) if body.grammar is not None else None,
        logprobs=body.logprobs,
    )


async def chat_completions(request: Request) -> Response:
    services = services_of(request)
    body = await parse_json(request, ChatCompletionRequest, services.config.server.max_body_bytes)
    runtime, task = await prepare(request, chat_request(body))
    if body.stream:
        return await start_stream(request, runtime, task, ChatChunks(runtime.id, body.include_usage, bool(body.logprobs)))
    events = await run_to_completion(request, runtime, task)
    finish = finish_of(events)
    meta = _Chunks(runtime.id, "chat.completion", "chatcmpl", False).meta
    calls = _tool_calls(events)
    message: dict[str, Any] = {"role": "assistant", "content": None if calls else text_of(events), "refusal": None}
    if reasoning := reasoning_of(events):
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = calls
    logprobs = {"content": [_chat_logprob(item) for item in _logprob_items(events)], "refusal": None} if body.logprobs else None
    choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": _reason(finish)}
    return JSONResponse({**meta, "choices": [choice], "usage": _usage(finish)})


async def completions(request: Request) -> Response:
    services = services_of(request)
    body = await parse_json(request, CompletionRequest, services.config.server.max_body_bytes)
    runtime, task = await prepare(request, completion_request(body))
    if body.stream:
        return await start_stream(request, runtime, task, TextChunks(runtime.id, body.include_usage, body.logprobs is not None))
    events = await run_to_completion(request, runtime, task)
    finish = finish_of(events)
    meta = _Chunks(runtime.id, "text_completion", "cmpl", False).meta
    logprobs = _text_logprobs(_logprob_items(events), 0) if body.logprobs is not None else None
    choice = {"text": text_of(events), "index": 0, "logprobs": logprobs, "finish_reason": _reason(finish)}
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
    raw = await run_embeddings(request, runtime, body.inputs)
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
