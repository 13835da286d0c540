"""Anthropic's Messages API: POST /v1/messages and /v1/messages/count_tokens, onto the same Task.

Anthropic's shapes throughout: content blocks (text, tool_use, tool_result), tools with
`input_schema`, its SSE events, and its error body `{"type": "error", "error": {"type",
"message"}}` with its status codes (an overloaded queue is 529, as Anthropic's own servers say).
The streamed events and the non-streamed message come from one encoder, so they cannot differ.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hal0.agents.request import GenerationRequest
from hal0.api.body import parse_json
from hal0.api.dialect import Body, ChatTemplateKwargs, ToolName, check_tool_choice, function_tool, tool_choice_mode
from hal0.api.errors import ApiError, bad_request, unavailable
from hal0.api.generation import Wire, named_sse, run_to_completion, services_of, start_stream
from hal0.api.tasks import generation_task, prepare
from hal0.inference import Event, Finish, InvalidTask, ModelUnavailable, ReasoningDelta, Task, TextDelta, Tool, ToolCallDelta
from hal0.inference.text import well_formed


class AnthropicCacheControl(Body):
    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class AnthropicTextBlock(Body):
    type: Literal["text"]
    text: str
    cache_control: AnthropicCacheControl | None = Field(None, description="Accepted; hal0 reuses prompt prefixes by itself.")


class AnthropicToolUseBlock(Body):
    type: Literal["tool_use"]
    id: str = Field(min_length=1, max_length=128)
    name: ToolName
    input: dict[str, Any]
    cache_control: AnthropicCacheControl | None = None


class AnthropicToolResultBlock(Body):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1, max_length=128)
    content: str | list[AnthropicTextBlock] = ""
    is_error: bool = False
    cache_control: AnthropicCacheControl | None = None

    @property
    def text(self) -> str:
        text = self.content if isinstance(self.content, str) else "".join(block.text for block in self.content)
        # The chat turn has no error flag, so the model is told in words.
        return f"Error: {text}" if self.is_error else text


class AnthropicThinkingBlock(Body):
    """A thinking block sent back in an assistant turn: its text is that turn's reasoning, which the
    model's template shows or drops as it was trained (hal0 signs nothing, so any signature is taken)."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class AnthropicRedactedThinkingBlock(Body):
    """Reasoning another service encrypted: hal0 cannot read it, so it is left out of the prompt."""

    type: Literal["redacted_thinking"]
    data: str


def _block_type(value: Any) -> str | None:
    return value.get("type") if isinstance(value, dict) else getattr(value, "type", None)


Block = Annotated[
    Annotated[AnthropicTextBlock, Tag("text")] | Annotated[AnthropicToolUseBlock, Tag("tool_use")] | Annotated[AnthropicToolResultBlock, Tag("tool_result")]
    | Annotated[AnthropicThinkingBlock, Tag("thinking")] | Annotated[AnthropicRedactedThinkingBlock, Tag("redacted_thinking")],
    Discriminator(_block_type),
]


class AnthropicMessage(Body):
    role: Literal["user", "assistant"]
    content: str | Annotated[list[Block], Field(max_length=1024)]

    @model_validator(mode="after")
    def _blocks_for_role(self) -> AnthropicMessage:
        # As Anthropic: the model's calls come in assistant turns, their results in user turns.
        kinds = {block.type for block in self.content} if isinstance(self.content, list) else set()
        if self.role == "user" and "tool_use" in kinds:
            raise ValueError("tool_use blocks belong in assistant messages")
        if self.role == "assistant" and "tool_result" in kinds:
            raise ValueError("tool_result blocks belong in user messages")
        if self.role == "user" and kinds & {"thinking", "redacted_thinking"}:
            raise ValueError("thinking blocks belong in assistant messages")
        return self


class AnthropicToolDefinition(Body):
    name: ToolName
    description: str | None = Field(None, max_length=8192)
    input_schema: dict[str, Any] = Field(description="JSON schema of the input (hal0's supported subset; see the README).")
    type: Literal["custom"] | None = None
    cache_control: AnthropicCacheControl | None = None


class AnthropicToolChoice(Body):
    type: Literal["auto", "any", "tool", "none"]
    name: ToolName | None = None
    disable_parallel_tool_use: bool | None = None

    @model_validator(mode="after")
    def _name_for_tool(self) -> AnthropicToolChoice:
        if (self.type == "tool") != (self.name is not None):
            raise ValueError("name is required with type 'tool', and only then")
        return self


class AnthropicMetadata(Body):
    user_id: str | None = Field(None, max_length=256)


class AnthropicThinking(Body):
    """`thinking`: enabled, a thinking model's reasoning comes back as thinking blocks; disabled (the
    default), it is left out of the reply. hal0 does not cap the reasoning by budget_tokens: max_tokens
    bounds the whole reply."""

    type: Literal["enabled", "disabled"]
    budget_tokens: int | None = Field(None, ge=1)


class CountTokensRequest(Body):
    model: str | None = Field(None, max_length=128)
    messages: list[AnthropicMessage] = Field(min_length=1, max_length=1024)
    system: str | list[AnthropicTextBlock] | None = None
    tools: list[AnthropicToolDefinition] | None = Field(None, max_length=128)
    tool_choice: AnthropicToolChoice | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CountTokensRequest:
        choice = self.tool_choice
        check_tool_choice([tool.name for tool in self.tools or ()], choice and choice.type, choice and choice.name)
        return self

    @property
    def tool_choice_name(self) -> str:
        """tool_choice as inference takes it: auto -> auto, any -> required, tool -> its name, none."""
        choice = self.tool_choice
        if choice is None:
            return tool_choice_mode(None, None, bool(self.tools))
        return tool_choice_mode("required" if choice.type == "any" else choice.type, choice.name, bool(self.tools))


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1, description="Required, as Anthropic requires it.")
    stop_sequences: list[str] | None = Field(None, max_length=16)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=1000)
    metadata: AnthropicMetadata | None = None
    thinking: AnthropicThinking | None = None
    chat_template_kwargs: ChatTemplateKwargs = None

    @property
    def thinks(self) -> bool:
        return self.thinking is not None and self.thinking.type == "enabled"


def chat_messages(body: CountTokensRequest) -> list[dict[str, Any]]:
    """Anthropic's turns as the chat messages a Task holds: tool_use blocks are an assistant
    turn's tool_calls, each tool_result a tool turn (before the user text it came with)."""
    messages: list[dict[str, Any]] = []
    if body.system:
        system = body.system if isinstance(body.system, str) else "".join(block.text for block in body.system)
        messages.append({"role": "system", "content": system})
    for message in body.messages:
        if isinstance(message.content, str):
            messages.append({"role": message.role, "content": message.content})
            continue
        text = "".join(block.text for block in message.content if isinstance(block, AnthropicTextBlock))
        if message.role == "assistant":
            calls = [{"id": block.id, "type": "function", "function": {"name": block.name, "arguments": json.dumps(block.input)}}
                     for block in message.content if isinstance(block, AnthropicToolUseBlock)]
            thought = "".join(block.thinking for block in message.content if isinstance(block, AnthropicThinkingBlock))
            messages.append({"role": "assistant", "content": text, **({"tool_calls": calls} if calls else {}),
                             **({"reasoning_content": thought} if thought else {})})
            continue
        results = [block for block in message.content if isinstance(block, AnthropicToolResultBlock)]
        messages.extend({"role": "tool", "tool_call_id": block.tool_use_id, "content": block.text} for block in results)
        if text or not results:
            messages.append({"role": "user", "content": text})
    return messages


def _tools(body: CountTokensRequest) -> tuple[Tool, ...]:
    return tuple(function_tool(tool.name, tool.description, tool.input_schema, f"tools[{index}].input_schema") for index, tool in enumerate(body.tools or ()))


def count_request(body: CountTokensRequest) -> GenerationRequest:
    """What a count_tokens body asks: the prompt of its messages and tools."""
    parallel = not (body.tool_choice is not None and body.tool_choice.disable_parallel_tool_use)
    return GenerationRequest(
        model=body.model, messages=tuple(chat_messages(body)), tools=_tools(body), tool_choice=body.tool_choice_name, parallel_tool_calls=parallel,
    )


def messages_request(body: MessagesRequest) -> GenerationRequest:
    """A Messages body as the request every dialect produces."""
    return dataclasses.replace(
        count_request(body),
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        stop=tuple(body.stop_sequences) if body.stop_sequences else None,  # none or empty: the persona's default
        chat_template_kwargs=_template_kwargs(body),
    )


def _template_kwargs(body: MessagesRequest) -> dict[str, Any]:
    """The request's chat_template_kwargs; `thinking: disabled` turns thinking off in the templates that
    allow it (Qwen3's enable_thinking), unless the kwargs say otherwise."""
    kwargs = dict(body.chat_template_kwargs or {})
    if body.thinking is not None and body.thinking.type == "disabled":
        kwargs.setdefault("enable_thinking", False)
    return kwargs


def _stop_reason(finish: Finish, stops: list[str]) -> tuple[str, str | None]:
    if finish.reason == "tool_calls":
        return "tool_use", None
    if finish.reason == "length":
        return "max_tokens", None
    if finish.stop_sequence is not None and finish.stop_sequence in stops:
        return "stop_sequence", finish.stop_sequence
    return "end_turn", None  # the model's end of turn (or the template's stop string)


class MessageEvents:
    """Events -> Anthropic's stream events, building the final message as it goes.

    message_start, then per content block content_block_start, content_block_delta (text_delta,
    input_json_delta, or thinking_delta then an empty signature_delta)..., content_block_stop, then
    message_delta (stop_reason, usage) and message_stop. Reasoning becomes a thinking block only when
    the request enabled thinking.
    """

    def __init__(self, model: str, input_tokens: int, stops: list[str], thinking: bool = False) -> None:
        self._thinking = thinking
        self.message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex}", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }
        self._stops = stops
        self._started = False
        self._open: dict[str, Any] | None = None
        self._arguments: dict[int, str] = {}  # block index -> the call's JSON text so far

    def __call__(self, event: Event) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not self._started:
            self._started = True
            out.append(self._event("message_start", message=self.message))
        if isinstance(event, TextDelta) and event.text:
            if self._open is None or self._open["type"] != "text":
                out += self._close()
                out += self._add({"type": "text", "text": ""})
            self._open["text"] += event.text
            out.append(self._event("content_block_delta", index=self._index, delta={"type": "text_delta", "text": event.text}))
        elif isinstance(event, ReasoningDelta) and event.text and self._thinking:
            if self._open is None or self._open["type"] != "thinking":
                out += self._close()
                out += self._add({"type": "thinking", "thinking": "", "signature": ""})
            self._open["thinking"] += event.text
            out.append(self._event("content_block_delta", index=self._index, delta={"type": "thinking_delta", "thinking": event.text}))
        elif isinstance(event, ToolCallDelta):
            if event.id is not None:
                out += self._close()
                out += self._add({"type": "tool_use", "id": event.id, "name": event.name or "", "input": {}})
                self._arguments[self._index] = ""
            if event.arguments:
                self._arguments[self._index] += event.arguments
                out.append(self._event("content_block_delta", index=self._index,
                                       delta={"type": "input_json_delta", "partial_json": event.arguments}))
        elif isinstance(event, Finish):
            out += self._close()
            reason, stop = _stop_reason(event, self._stops)
            usage = self.message["usage"]
            usage.update(input_tokens=event.usage.prompt_tokens, output_tokens=event.usage.completion_tokens)
            self.message.update(stop_reason=reason, stop_sequence=stop)
            out.append(self._event("message_delta", delta={"stop_reason": reason, "stop_sequence": stop}, usage=usage))
            out.append(self._event("message_stop"))
        return out

    @property
    def _index(self) -> int:
        return len(self.message["content"]) - 1

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, **copy.deepcopy(fields)}  # a copy: the blocks keep growing after their event

    def _add(self, block: dict[str, Any]) -> list[dict[str, Any]]:
        self.message["content"].append(block)
        self._open = block
        start = {**block, "text": ""} if block["type"] == "text" else {**block, "thinking": ""} if block["type"] == "thinking" else block
        return [self._event("content_block_start", index=self._index, content_block=start)]

    def _close(self) -> list[dict[str, Any]]:
        block, self._open = self._open, None
        if block is None:
            return []
        index = self.message["content"].index(block)
        if block["type"] == "thinking":  # hal0 signs nothing: the signature is empty, as the stream says
            return [self._event("content_block_delta", index=index, delta={"type": "signature_delta", "signature": ""}),
                    self._event("content_block_stop", index=index)]
        if block["type"] == "tool_use":
            block["input"] = tool_input(self._arguments.get(index, ""))
        return [self._event("content_block_stop", index=index)]


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool_use block's input from the call's JSON text. The grammar makes a finished call an object,
    but max_tokens can cut one inside its arguments: that call's input is {} (its partial JSON went out
    as input_json_delta, and stop_reason `max_tokens` says it was cut), never half an object to act on.
    A lone surrogate escape the model wrote is U+FFFD, which the response can encode."""
    try:
        value = json.loads(arguments)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(value, dict):
        return {}
    return json.loads(well_formed(json.dumps(value, ensure_ascii=False)))


# ---- errors in Anthropic's shape ----------------------------------------------------------------

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}


def anthropic_error(error: ApiError) -> JSONResponse:
    # A full queue is Anthropic's 529 overloaded_error (its SDK retries it); other 5xx are api_error.
    status = 529 if error.code == "overloaded" else error.status
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": kind, "message": error.message}}
    return JSONResponse(body, status_code=status, headers=error.headers)


def _anthropic_errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Every error of `handler` (bad body, persona limit, busy queue, ...) in Anthropic's shape."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as error:
            return anthropic_error(error)

    return wrapped


def _stream_error(message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": "api_error", "message": message}}


WIRE = Wire(frame=named_sse, done="", error=_stream_error)


async def _count(runtime: Any, task: Task) -> int:
    try:
        return await runtime.count_tokens(task)
    except ModelUnavailable as error:
        raise unavailable(str(error)) from None
    except InvalidTask as error:  # the chat template refused the messages
        raise bad_request(str(error), param=error.param) from None


@_anthropic_errors
async def create_message(request: Request) -> Response:
    services = services_of(request)
    body = await parse_json(request, MessagesRequest, services.config.server.max_body_bytes)
    runtime, task = await prepare(request, messages_request(body))
    if body.stream:
        # message_start carries the input tokens, before the first token is generated.
        encode = MessageEvents(runtime.id, await _count(runtime, task), list(task.stop), body.thinks)
        return await start_stream(request, runtime, task, encode, WIRE)
    encode = MessageEvents(runtime.id, 0, list(task.stop), body.thinks)
    for event in await run_to_completion(request, runtime, task):
        encode(event)
    return JSONResponse(encode.message)


@_anthropic_errors
async def count_tokens(request: Request) -> Response:
    services = services_of(request)
    body = await parse_json(request, CountTokensRequest, services.config.server.max_body_bytes)
    runtime, task = generation_task(request, count_request(body))
    if not task.messages:
        raise bad_request("messages must not be empty", param="messages")
    return JSONResponse({"input_tokens": await _count(runtime, task)})


routes = [
    Route("/v1/messages", create_message, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
