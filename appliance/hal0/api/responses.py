"""OpenAI's Responses API, stateless: POST /v1/responses onto the same Task as chat completions.

Nothing is stored (`store: false` semantics): a request carries the whole conversation in
`input`, and `previous_response_id` is refused rather than silently starting a new conversation.
The streamed events and the non-streamed response come from one encoder, so they cannot differ.
"""

from __future__ import annotations

import copy
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hal0.agents.request import GenerationRequest
from hal0.api.body import parse_json
from hal0.api.dialect import Body, ChatTemplateKwargs, ReasoningFormatField, ToolName, check_tool_choice, function_tool, reasoning_format_of, tool_choice_mode
from hal0.api.errors import bad_request
from hal0.api.generation import Wire, named_sse, run_to_completion, services_of, start_stream
from hal0.api.tasks import prepare
from hal0.inference import Event, Finish, JsonOutput, ReasoningDelta, Task, TextDelta, Tool, ToolCallDelta


class ResponsesTextContent(Body):
    """A text part: `input_text` in requests, `output_text` when a client sends a reply back."""

    type: Literal["input_text", "output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class ResponsesMessageItem(Body):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ResponsesTextContent]
    id: str | None = Field(None, max_length=128)
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ResponsesFunctionCallItem(Body):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=128)
    name: ToolName
    arguments: str = Field(description="The arguments as a JSON string.")
    id: str | None = Field(None, max_length=128)
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class ResponsesFunctionCallOutputItem(Body):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=128)
    output: str | list[ResponsesTextContent]
    id: str | None = Field(None, max_length=128)
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    @property
    def text(self) -> str:
        return self.output if isinstance(self.output, str) else "".join(part.text for part in self.output)


class ResponsesSummaryText(Body):
    type: Literal["summary_text", "reasoning_text"]
    text: str


class ResponsesReasoningItem(Body):
    """A reasoning item sent back (as hal0 returned it): its text is the next assistant turn's reasoning,
    which the model's template shows or drops as it was trained. Encrypted content cannot be read here."""

    type: Literal["reasoning"]
    id: str | None = Field(None, max_length=128)
    summary: list[ResponsesSummaryText] = Field(default_factory=list)
    content: list[ResponsesSummaryText] | None = None
    encrypted_content: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    @property
    def text(self) -> str:
        return "".join(part.text for part in self.content or self.summary)


def _item_type(value: Any) -> str | None:
    # A message may leave out its type (the API's "easy input message").
    if isinstance(value, dict):
        return value.get("type", "message")
    return getattr(value, "type", None)


InputItem = Annotated[
    Annotated[ResponsesMessageItem, Tag("message")]
    | Annotated[ResponsesFunctionCallItem, Tag("function_call")]
    | Annotated[ResponsesFunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ResponsesReasoningItem, Tag("reasoning")],
    Discriminator(_item_type),
]


class ResponsesFunctionTool(Body):
    type: Literal["function"]
    name: ToolName
    description: str | None = Field(None, max_length=8192)
    parameters: dict[str, Any] | None = Field(None, description="JSON schema of the arguments (hal0's supported subset; see the README).")
    strict: bool | None = None


class ResponsesNamedFunction(Body):
    type: Literal["function"]
    name: ToolName


class ResponsesTextFormat(Body):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(None, max_length=64)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None

    @model_validator(mode="after")
    def _schema_for_json_schema(self) -> ResponsesTextFormat:
        if self.type == "json_schema" and (self.schema_ is None or self.name is None):
            raise ValueError("json_schema needs name and schema")
        return self


class ResponsesTextConfig(Body):
    format: ResponsesTextFormat | None = None


class ResponsesReasoning(Body):
    """`reasoning`: effort reaches the template as reasoning_effort (GPT-OSS's); `none` turns thinking off
    where the template allows it, as llama-server maps reasoning_effort none."""

    effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesRequest(Body):
    model: str | None = Field(None, max_length=128)
    input: str | Annotated[list[InputItem], Field(min_length=1, max_length=1024)]
    instructions: str | None = None
    tools: list[ResponsesFunctionTool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | ResponsesNamedFunction | None = None
    parallel_tool_calls: bool = True
    text: ResponsesTextConfig | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    store: bool | None = Field(None, description="Accepted, but hal0 never stores a response (the reply says store: false).")
    previous_response_id: str | None = Field(None, description="Refused: responses are not stored; send the whole conversation in input.")
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    user: str | None = Field(None, max_length=256)
    truncation: Literal["disabled"] | None = None
    include: list[str] | None = Field(None, max_length=0, description="No extra output data is available: empty or absent.")
    reasoning: ResponsesReasoning | None = None
    reasoning_format: ReasoningFormatField = None
    chat_template_kwargs: ChatTemplateKwargs = None

    @field_validator("previous_response_id")
    @classmethod
    def _stateless(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError("hal0 does not store responses (stateless, store: false), so there is no previous response "
                             "to continue; send the whole conversation in input")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ResponsesRequest:
        check_tool_choice([tool.name for tool in self.tools or ()], *self._choice)
        return self

    @property
    def _choice(self) -> tuple[str | None, str | None]:
        """tool_choice as sent (None when absent, `function` when it names a tool) and the tool it names."""
        if isinstance(self.tool_choice, ResponsesNamedFunction):
            return "function", self.tool_choice.name
        return self.tool_choice, None

    @property
    def items(self) -> list[ResponsesMessageItem | ResponsesFunctionCallItem | ResponsesFunctionCallOutputItem | ResponsesReasoningItem]:
        return [ResponsesMessageItem(role="user", content=self.input)] if isinstance(self.input, str) else list(self.input)

    @property
    def tool_choice_name(self) -> str:
        """tool_choice as inference takes it: none/auto/required or the named tool."""
        return tool_choice_mode(*self._choice, bool(self.tools))


def chat_messages(body: ResponsesRequest) -> list[dict[str, Any]]:
    """Input items as the chat messages a Task holds: consecutive function calls join one
    assistant turn (as a chat client would have sent them), outputs become tool turns."""
    messages: list[dict[str, Any]] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    thought = ""  # a reasoning item's text, for the assistant turn that follows it
    for item in body.items:
        if isinstance(item, ResponsesReasoningItem):
            thought += item.text
        elif isinstance(item, ResponsesMessageItem):
            message = {"role": "system" if item.role == "developer" else item.role, "content": item.text}
            if item.role == "assistant" and thought:
                message["reasoning_content"], thought = thought, ""
            messages.append(message)
        elif isinstance(item, ResponsesFunctionCallItem):
            call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and not thought:
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call], **({"reasoning_content": thought} if thought else {})})
                thought = ""
        else:
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text})
    return messages


def _output(body: ResponsesRequest) -> JsonOutput | None:
    fmt = body.text.format if body.text else None
    if fmt is None or fmt.type == "text":
        return None
    return JsonOutput(fmt.schema_, param="text.format.schema")


def _tools(body: ResponsesRequest) -> tuple[Tool, ...]:
    return tuple(function_tool(tool.name, tool.description, tool.parameters, f"tools[{index}].parameters") for index, tool in enumerate(body.tools or ()))


def _usage(finish: Finish) -> dict[str, Any]:
    usage = finish.usage
    return {
        "input_tokens": usage.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _echo(body: ResponsesRequest, model: str, task: Task) -> dict[str, Any]:
    """The request's settings as a response object repeats them."""
    fmt = body.text.format if body.text and body.text.format else ResponsesTextFormat(type="text")
    return {
        "model": model,
        "instructions": body.instructions,
        "max_output_tokens": task.max_tokens,
        "parallel_tool_calls": body.parallel_tool_calls,
        "temperature": task.sampling.temperature,
        "top_p": task.sampling.top_p,
        "tool_choice": body.tool_choice.model_dump() if isinstance(body.tool_choice, ResponsesNamedFunction) else body.tool_choice or "auto",
        "tools": [tool.model_dump(exclude_none=True) for tool in body.tools or ()],
        "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True)},
        "truncation": "disabled",
        "store": False,
        "previous_response_id": None,
        "reasoning": None,
        "metadata": body.metadata or {},
        "user": body.user,
        "background": False,
        "error": None,
    }


class ResponseEvents:
    """Events -> the Responses API's stream events, building the final response as it goes.

    Sequence: response.created, response.in_progress, then per output item output_item.added,
    (content_part.added, output_text.delta..., output_text.done, content_part.done) or
    (function_call_arguments.delta..., function_call_arguments.done) or, for a thinking model's
    reasoning, a `reasoning` item (reasoning_summary_part.added, reasoning_summary_text.delta...,
    reasoning_summary_text.done, reasoning_summary_part.done), output_item.done, and last
    response.completed (response.incomplete when max_output_tokens cut it short).
    """

    def __init__(self, echo: dict[str, Any]) -> None:
        self.response: dict[str, Any] = {
            "id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
            "status": "in_progress", "incomplete_details": None, **echo, "output": [], "usage": None,
        }
        self._sequence = 0
        self._open: dict[str, Any] | None = None  # the output item being produced
        self._calls: dict[int, dict[str, Any]] = {}  # tool-call index -> its item

    def __call__(self, event: Event) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._sequence == 0:
            out += [self._event("response.created", response=self._snapshot()), self._event("response.in_progress", response=self._snapshot())]
        if isinstance(event, TextDelta) and event.text:
            if self._open is None or self._open["type"] != "message":
                out += self._close()
                out += self._open_message()
            self._open["content"][0]["text"] += event.text
            out.append(self._event("response.output_text.delta", item_id=self._open["id"], output_index=self._index,
                                   content_index=0, delta=event.text, logprobs=[]))
        elif isinstance(event, ReasoningDelta) and event.text:
            if self._open is None or self._open["type"] != "reasoning":
                out += self._close()
                out += self._open_reasoning()
            self._open["summary"][0]["text"] += event.text
            out.append(self._event("response.reasoning_summary_text.delta", item_id=self._open["id"], output_index=self._index,
                                   summary_index=0, delta=event.text))
        elif isinstance(event, ToolCallDelta):
            if event.id is not None:
                out += self._close()
                item = {"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": event.id, "name": event.name or "",
                        "arguments": "", "status": "in_progress"}
                self._calls[event.index] = item
                out += self._add(item)
            item = self._calls[event.index]
            if event.arguments:
                item["arguments"] += event.arguments
                out.append(self._event("response.function_call_arguments.delta", item_id=item["id"], output_index=self._index,
                                       delta=event.arguments))
        elif isinstance(event, Finish):
            incomplete = event.reason == "length"
            if not any(item["type"] != "reasoning" for item in self.response["output"]):
                out += self._close()
                out += self._open_message()  # an empty reply is still one (empty) message
            out += self._close("incomplete" if incomplete else "completed")
            self.response["status"] = "incomplete" if incomplete else "completed"
            self.response["incomplete_details"] = {"reason": "max_output_tokens"} if incomplete else None
            self.response["usage"] = _usage(event)
            out.append(self._event("response.incomplete" if incomplete else "response.completed", response=self._snapshot()))
        return out

    @property
    def _index(self) -> int:
        return len(self.response["output"]) - 1

    def _snapshot(self) -> dict[str, Any]:
        return self.response

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        # A deep copy: the items keep growing after their event is framed.
        event = {"type": kind, "sequence_number": self._sequence, **copy.deepcopy(fields)}
        self._sequence += 1
        return event

    def _add(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        self.response["output"].append(item)
        self._open = item
        return [self._event("response.output_item.added", output_index=self._index, item=item)]

    def _open_message(self) -> list[dict[str, Any]]:
        item = {"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "in_progress", "role": "assistant", "content": []}
        out = self._add(item)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        item["content"].append(part)
        out.append(self._event("response.content_part.added", item_id=item["id"], output_index=self._index, content_index=0,
                               part=part))
        return out

    def _open_reasoning(self) -> list[dict[str, Any]]:
        item = {"type": "reasoning", "id": f"rs_{uuid.uuid4().hex}", "status": "in_progress", "summary": []}
        out = self._add(item)
        part = {"type": "summary_text", "text": ""}
        item["summary"].append(part)
        out.append(self._event("response.reasoning_summary_part.added", item_id=item["id"], output_index=self._index, summary_index=0,
                               part=part))
        return out

    def _close(self, status: str = "completed") -> list[dict[str, Any]]:
        item, self._open = self._open, None
        if item is None:
            return []
        out: list[dict[str, Any]] = []
        index = self.response["output"].index(item)
        if item["type"] == "reasoning":
            part = item["summary"][0]
            out.append(self._event("response.reasoning_summary_text.done", item_id=item["id"], output_index=index, summary_index=0,
                                   text=part["text"]))
            out.append(self._event("response.reasoning_summary_part.done", item_id=item["id"], output_index=index, summary_index=0,
                                   part=part))
        elif item["type"] == "message":
            part = item["content"][0]
            out.append(self._event("response.output_text.done", item_id=item["id"], output_index=index, content_index=0,
                                   text=part["text"], logprobs=[]))
            out.append(self._event("response.content_part.done", item_id=item["id"], output_index=index, content_index=0,
                                   part=part))
        else:
            out.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                   name=item["name"], arguments=item["arguments"]))
        item["status"] = status
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out


def _stream_error(message: str) -> dict[str, Any]:
    return {"type": "error", "code": "generation_failed", "message": message, "param": None}


WIRE = Wire(frame=named_sse, done="", error=_stream_error)


def responses_request(body: ResponsesRequest) -> GenerationRequest:
    """A Responses body as the request every dialect produces (400 when its input holds no messages)."""
    messages = chat_messages(body)
    if not messages:
        raise bad_request("input holds no messages", param="input")
    return GenerationRequest(
        model=body.model,
        messages=tuple(messages),
        max_tokens=body.max_output_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        output=_output(body),
        tools=_tools(body),
        tool_choice=body.tool_choice_name,
        parallel_tool_calls=body.parallel_tool_calls,
        reasoning_format=reasoning_format_of(body.reasoning_format),
        chat_template_kwargs=_template_kwargs(body),
    )


def _template_kwargs(body: ResponsesRequest) -> dict[str, Any]:
    """The request's chat_template_kwargs, with `reasoning.effort` as llama-server takes reasoning_effort."""
    kwargs = dict(body.chat_template_kwargs or {})
    effort = body.reasoning.effort if body.reasoning else None
    if effort == "none":
        kwargs.setdefault("enable_thinking", False)
    elif effort is not None:
        kwargs.setdefault("reasoning_effort", effort)
    return kwargs


async def create_response(request: Request) -> Response:
    services = services_of(request)
    body = await parse_json(request, ResponsesRequest, services.config.server.max_body_bytes)
    runtime, task = await prepare(request, responses_request(body))
    encode = ResponseEvents(_echo(body, runtime.id, task))
    if body.stream:
        return await start_stream(request, runtime, task, encode, WIRE)
    for event in await run_to_completion(request, runtime, task):
        encode(event)
    return JSONResponse(encode.response)


routes = [Route("/v1/responses", create_response, methods=["POST"])]
