"""Request bodies of the OpenAI-compatible API.

Unknown arguments are refused (400 naming them) as OpenAI does, so a misspelt parameter is never
silently ignored. Parameters clients commonly send with their default value are accepted.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from hal0.api.dialect import Body, ChatTemplateKwargs, ReasoningFormatField, ToolName, check_tool_choice, tool_choice_mode

_TOKEN_ID = re.compile(r"[0-9]{1,10}")

Stop = str | Annotated[list[str], Field(max_length=16)] | None


class TextPart(Body):
    type: Literal["text"]
    text: str


class FunctionCall(Body):
    name: ToolName
    arguments: str = Field(description="The arguments as a JSON string.")


class ToolCall(Body):
    id: str = Field(max_length=128)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, max_length=64)
    tool_calls: list[ToolCall] | None = Field(None, max_length=128, description="An assistant turn's calls (content may be null).")
    tool_call_id: str | None = Field(None, max_length=128, description="The call a role: tool message answers.")
    refusal: str | None = None
    reasoning_content: str | None = Field(None, description="An assistant turn's reasoning, for templates that show earlier reasoning.")

    def as_llama(self) -> dict[str, Any]:
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        role = "system" if self.role == "developer" else self.role
        message: dict[str, Any] = {"role": role, "content": content or ""}
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        for name in ("name", "reasoning_content"):  # handed to the chat template as llama-server does
            if getattr(self, name):
                message[name] = getattr(self, name)
        return message


class FunctionDefinition(Body):
    name: ToolName
    description: str | None = Field(None, max_length=8192)
    parameters: dict[str, Any] | None = Field(None, description="JSON schema of the arguments (hal0's supported subset; see the README).")
    strict: bool | None = None


class FunctionTool(Body):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(Body):
    name: ToolName


class NamedToolChoice(Body):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(Body):
    name: str = Field(max_length=64)
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema", description="json_object with a schema (llama-server's form).")

    @model_validator(mode="after")
    def _schema_for_json_schema(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("json_schema is required when type is 'json_schema'")
        return self

    @property
    def schema_of(self) -> dict[str, Any] | None:
        if self.json_schema is not None:
            return self.json_schema.schema_ if self.json_schema.schema_ is not None else {}
        return self.schema_


class StreamOptions(Body):
    include_usage: bool = False


class _GenerationRequest(Body):
    """What chat and text completions share: the model, sampling, streaming and the end user."""

    model: str | None = Field(None, max_length=128)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=1000)
    min_p: float | None = Field(None, ge=0, le=1)
    stop: Stop = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repeat_penalty: float | None = Field(None, gt=0, le=10)
    n: Literal[1] = 1
    user: str | None = Field(None, max_length=256)
    logit_bias: dict[str, float] | None = None
    grammar: str | None = Field(None, min_length=1, description="A grammar the reply must match: GBNF, as llama-server's `grammar` "
                                "takes it, or llguidance's Lark. Not with tools or a response_format.")

    def sampling(self) -> dict[str, Any]:
        """The GenerationRequest fields these set: sampling (None: not given), stop as a tuple, logit_bias by token id."""
        params: dict[str, Any] = {
            name: getattr(self, name)
            for name in ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty", "repeat_penalty")
        }
        params["stop"] = (self.stop,) if isinstance(self.stop, str) else None if self.stop is None else tuple(self.stop)
        params["logit_bias"] = {int(token): bias for token, bias in self.logit_bias.items()} if self.logit_bias else None
        return params

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            # ASCII digits only (str.isdigit() accepts "²", which int() refuses), short enough to be an id.
            if not _TOKEN_ID.fullmatch(token):
                raise ValueError(f"keys must be token ids (non-negative integers), got {token!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"bias for token {token} must be between -100 and 100")
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[FunctionTool] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    reasoning_format: ReasoningFormatField = None
    chat_template_kwargs: ChatTemplateKwargs = None

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def tool_choice_name(self) -> str:
        """tool_choice as inference takes it: none/auto/required or the named tool."""
        return tool_choice_mode(*self._choice, bool(self.tools))

    @property
    def _choice(self) -> tuple[str | None, str | None]:
        """tool_choice as sent (None when absent, `function` when it names a tool) and the tool it names."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return "function", self.tool_choice.function.name
        return self.tool_choice, None

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.grammar is not None and ((self.response_format is not None and self.response_format.type != "text") or self.tools):
            raise ValueError("grammar cannot be combined with a response_format or tools")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        check_tool_choice([tool.function.name for tool in self.tools or ()], *self._choice, distinct="tools must have distinct function names")
        return self


class ApplyTemplateRequest(ChatCompletionRequest):
    """POST /apply-template: a chat request, and llama-server's add_generation_prompt."""

    add_generation_prompt: bool = True


class TokenizeRequest(Body):
    """POST /tokenize, as llama-server takes it."""

    model: str | None = Field(None, max_length=128)
    content: str | Annotated[list[str | int], Field(max_length=65536)] = ""
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(Body):
    """POST /detokenize, as llama-server takes it."""

    model: str | None = Field(None, max_length=128)
    tokens: Annotated[list[int], Field(max_length=1_048_576)] = []  # noqa: RUF012 - pydantic copies a default per instance


class CompletionRequest(_GenerationRequest):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: int | None = Field(16, ge=1)
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = Field(None, ge=0, le=20, description="Log-probabilities of this many most likely tokens per position.")

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class EmbeddingRequest(Body):
    model: str | None = Field(None, max_length=128)
    input: str | Annotated[list[str], Field(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = Field(None, max_length=256)

    @property
    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)
