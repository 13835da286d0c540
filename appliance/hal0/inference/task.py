"""The task API: what inference accepts (a Task) and what it gives back (a stream of events).

A dialect (chat completions, completions, later Responses or Messages) builds a Task from its
request body and translates the events back into its own wire format; it never touches
llama-cpp-python. The task is plain data: prompt or messages, sampling, limits, output
constraints and tools. Events come in this order: any number of TextDelta / ToolCallDelta, then
exactly one Finish (unless the run raises InvalidTask or GenerationFailed before any event).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from hal0.inference.sampling import Sampling


class FinishReason(enum.StrEnum):
    """Why a generation ended. Engines end a job with STOP, LENGTH, CANCELLED or TIMEOUT; a task's
    Finish event carries STOP (a timeout too, with `timed_out`), LENGTH, TOOL_CALLS or CANCELLED.
    A StrEnum: each dialect maps it to its own words, and it equals its value as a string."""

    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Tool:
    """A function the model may call; `parameters` is the JSON schema its arguments must match."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    param: str = "parameters"  # where the request held `parameters`, in its dialect's words (errors name it)


@dataclass(frozen=True)
class JsonOutput:
    """The reply must be JSON; with a schema, JSON that validates against it."""

    schema: dict[str, Any] | None = None
    param: str = "schema"  # where the request held `schema`, in its dialect's words (errors name it)


@dataclass(frozen=True)
class GrammarOutput:
    """The reply must match a grammar: GBNF (llama.cpp's, as llama-server's `grammar` field takes it)
    or llguidance's Lark."""

    text: str
    param: str = "grammar"


@dataclass(frozen=True)
class Task:
    """One generation. Exactly one of `prompt` (raw completion) and `messages` (chat) is set.

    `messages` are OpenAI-shaped dicts: role system/user/assistant/tool, content, and for
    assistant turns `tool_calls`, for tool turns `tool_call_id`.
    `tool_choice` is "none", "auto", "required" or a tool name (that tool must be called).
    `logprobs` is None (off) or how many alternatives to report per token (0-20).
    `deadline` is on the time.perf_counter() clock; reaching it ends the run like a stop.
    `chat_template_kwargs` are extra variables for the model's chat template (`enable_thinking`, ...).
    """

    prompt: str | None = None
    messages: tuple[dict[str, Any], ...] | None = None
    sampling: Sampling = field(default_factory=Sampling)
    max_tokens: int | None = None  # None: until the model stops or the context is full
    stop: tuple[str, ...] = ()
    echo: bool = False
    suffix: str | None = None
    output: JsonOutput | GrammarOutput | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: str = "auto"
    parallel_tool_calls: bool = True
    logprobs: int | None = None
    deadline: float = float("inf")
    agent: str | None = None
    # "auto": a thinking model's reasoning block comes back as ReasoningDelta events (reasoning.py);
    # "none": the reply as the model wrote it, markers and all (llama-server's --reasoning-format).
    reasoning_format: str = "auto"
    # The persona the agent runs under, and how many leading `messages` are its configured system
    # prompt: config, not the caller's words, so the persona's other agents may reuse its cached KV.
    persona: str | None = None
    public_messages: int = 0
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its text, bytes, log-probability and the top alternatives'."""

    token: str
    bytes: bytes
    logprob: float
    top: tuple[tuple[str, bytes, float], ...] = ()


@dataclass(frozen=True)
class TextDelta:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ReasoningDelta:
    """A piece of the model's reasoning (a thinking model's block before its answer)."""

    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of tool call `index`: the first carries id and name, later ones argument fragments."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0  # of completion_tokens, those of the reasoning block

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Finish:
    reason: FinishReason
    usage: Usage
    ttft: float | None = None  # seconds from the start of the run to the first token
    timed_out: bool = False
    stop_sequence: str | None = None  # the stop string that ended the run, if one did


Event = TextDelta | ReasoningDelta | ToolCallDelta | Finish


class InvalidTask(ValueError):
    """The task cannot run as asked (prompt over the context, bad bias, unsupported schema): a 4xx."""

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class GenerationFailed(RuntimeError):
    """llama.cpp failed while running this task (e.g. llama_decode returned an error)."""
