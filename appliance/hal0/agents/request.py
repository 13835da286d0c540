"""The generation request every dialect produces: one typed value, whatever the wire called its fields.

Chat completions, completions, Responses and Messages each translate their body into a
`GenerationRequest` under chat completions' names (messages, max_tokens, stop, temperature, ...). The
persona is applied to it (agents.personas), the policy door answers its limits (tools.policy), and api/
turns it into an inference Task: each of those steps is written once, for every dialect.

A field left as None was not given: the persona's default, then the dialect's, applies. An empty `stop`
is given (no stop sequences), not absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from hal0.inference import GrammarOutput, JsonOutput, Sampling, Tool

ReasoningFormat = Literal["auto", "none"]


@dataclass(frozen=True)
class GenerationRequest:
    """One generation as a client asked for it. Exactly one of `messages` (chat) and `prompt` (a raw
    completion) is set, except for requests that only choose a model (the prompt endpoints)."""

    model: str | None = None
    messages: tuple[dict[str, Any], ...] | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    # The dialect's own max_tokens when neither the request nor the persona names one (completions: 16);
    # None: until the model stops or the context is full.
    default_max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repeat_penalty: float | None = None
    logit_bias: Mapping[int, float] | None = None
    echo: bool = False
    suffix: str | None = None
    output: JsonOutput | GrammarOutput | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: str = "auto"  # none, auto, required or the name of the tool that must be called
    parallel_tool_calls: bool = True
    logprobs: int | None = None  # None: off; else how many alternatives per token
    reasoning_format: ReasoningFormat | None = None  # None: the persona's default, else auto
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sampling(self) -> Sampling:
        """The sampling these fields set; unset ones keep llama-cpp-python's defaults."""
        names = ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty", "repeat_penalty")
        given: dict[str, Any] = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if self.logit_bias is not None:
            given["logit_bias"] = dict(self.logit_bias)
        return Sampling(**given)

    @property
    def token_limit(self) -> int | None:
        """The tokens the generation may produce: the request's (persona applied), else the dialect's default."""
        return self.max_tokens if self.max_tokens is not None else self.default_max_tokens
