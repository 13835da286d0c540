"""Running a Task on a loaded model: the one generation path both engines share.

prompt or messages -> tokens (chat template) -> checks (context, bias ids) -> grammar -> the
engine's tokens -> text (UTF-8, stop strings), logprobs, tool calls -> events. Runs on a worker
thread of the model's runtime; the engine decides how tokens are decoded.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from hal0.config.models import PromptCacheScope
from hal0.inference.backend import model_of
from hal0.inference.constraint import Constraints, Grammar, schema_grammar, text_grammar
from hal0.inference.engines import Engine
from hal0.inference.job import Constraint, Sampled, TokenJob
from hal0.inference.native_tools import CallSyntax, NativeParser, after_reasoning, lazy, native_grammar
from hal0.inference.prompt_cache import SHARED, CacheKey, as_tokens, common_prefix
from hal0.inference.reasoning import ReasoningSplitter, opened_by
from hal0.inference.task import Event, Finish, FinishReason, GenerationFailed, GrammarOutput, InvalidTask, JsonOutput, Task, TextDelta, TokenLogprob, Usage
from hal0.inference.templates import Formatter, JinjaTemplate, Rendered, RenderError, template_stops
from hal0.inference.text import TextStream
from hal0.inference.toolcalls import ReplyParser, tool_messages, tools_grammar


@dataclass(frozen=True)
class LoadedModel:
    """What a run needs of a loaded model: its Llama (tokenizer, vocabulary), template, engine and
    constraint engine (built with it: its vocabulary is read once, on a thread of its own)."""

    llama: Any
    template: Formatter
    engine: Engine
    cache_scope: PromptCacheScope = PromptCacheScope.AGENT
    tool_syntax: CallSyntax | None = None  # the template's own call syntax (models[].tool_format), or the generic format
    constraints: Constraints = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "constraints", Constraints(model_of(self.llama)))


def prompt_tokens(llama: Any, prompt: str) -> list[int]:
    # As llama-cpp-python's _create_completion: text gets the model's BOS (and EOS) when its
    # tokenizer says so.
    model = model_of(llama)
    tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True) if prompt else []
    bos = model.token_cls() if model.token_cls() != -1 else model.token_bos()
    if model.add_bos_token() and bos != -1:
        tokens = [bos, *tokens]
    sep = model.token_sep()
    if model.add_eos_token() or sep != -1:
        tokens.append(sep if sep != -1 else model.token_eos())
    return tokens or [model.token_bos()]


def _check_bias(task: Task, n_vocab: int) -> None:
    outside = sorted(token for token in task.sampling.logit_bias or {} if not 0 <= token < n_vocab)
    if outside:
        raise InvalidTask(
            f"logit_bias token ids {', '.join(map(str, outside))} are not in the vocabulary (0-{n_vocab - 1})",
            param="logit_bias",
        )


def calls_tools(task: Task) -> bool:
    return bool(task.tools) and task.tool_choice != "none" and task.messages is not None


def constraint_grammar(task: Task) -> Grammar | None:
    """The grammar the reply is held to: tool calls (with the response format for a text answer),
    a JSON schema, any JSON object, the request's own grammar, or none. Raises SchemaError (a 400)
    for what cannot be enforced; cached, so the dialects' check before admission makes the run's
    call free."""
    if isinstance(task.output, GrammarOutput):
        if calls_tools(task):
            raise InvalidTask(f"{task.output.param} cannot be combined with tools", param=task.output.param)
        return text_grammar(task.output.text, task.output.param)
    if calls_tools(task):
        return tools_grammar(task)
    if task.output is None:
        return None
    return schema_grammar(task.output.schema if task.output.schema is not None else {"type": "object"}, task.output.param)


def check_task(task: Task, model: LoadedModel | None = None) -> None:
    """What can be checked of a task before it runs: its constraint compiles (SchemaError, a 400,
    if not; cached), and on a loaded model that speaks its own call syntax, the grammar of its calls
    too, so the run finds it cached. Runs on a thread: a large schema takes a fraction of a second."""
    constraint_grammar(task)
    if model is not None and model.tool_syntax is not None and calls_tools(task):
        with contextlib.suppress(GenerationFailed):  # unloaded meanwhile: the run says so, or loads it again
            native_grammar(model.tool_syntax, task, model.constraints.specials())


def chat_prompt(template: Formatter, task: Task, add_generation_prompt: bool = True, native: bool = False) -> Rendered:
    """A chat task's prompt text. A Jinja template gets the messages and tools as they are, as
    llama-server renders them, unless the reply may call tools in hal0's generic format (`native`
    false: the template has no call syntax of its own, or models[].tool_format says generic); then,
    and for named formats (which know no tools), the tools and earlier calls are in the generic
    format (toolcalls.py). A template that refuses them is an InvalidTask (400)."""
    try:
        if (calls_tools(task) and not native) or not isinstance(template, JinjaTemplate):
            return template(tool_messages(task), kwargs=task.chat_template_kwargs, add_generation_prompt=add_generation_prompt)
        tools = [{"name": tool.name, "description": tool.description, "parameters": tool.parameters} for tool in task.tools]
        return template(list(task.messages or ()), tools=tools, kwargs=task.chat_template_kwargs, add_generation_prompt=add_generation_prompt)
    except RenderError as error:
        raise InvalidTask(f"the model's chat template failed on these messages: {error}", param="messages", code="template_error") from None


def task_prompt(model: LoadedModel, task: Task) -> tuple[list[int], list[str]]:
    """The prompt tokens the model sees for `task` (chat template applied, tools described) and its stop strings."""
    llama = model.llama
    if task.messages is not None:
        rendered = chat_prompt(model.template, task, native=model.tool_syntax is not None)
        tokens = llama.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)
        return tokens, template_stops(rendered, task.stop)
    return prompt_tokens(llama, task.prompt or ""), list(task.stop)


def _rendered_tokens(model: LoadedModel, messages: list[dict[str, Any]]) -> tuple[list[int], Rendered]:
    rendered = model.template(messages)
    return model.llama.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True), rendered


# Two user turns that differ from their first character: what their renderings share is the template's
# and the public messages' alone, whatever the template puts around a turn.
_PROBES = ("0", "1")


def public_prefix(model: LoadedModel, task: Task, tokens: list[int]) -> int:
    """How many of the prompt's leading `tokens` are the task's public messages (its persona's system
    prompt) as the template renders them: the tokens two renderings of those messages with different
    user turns share, as far as the prompt agrees with them. Nothing the caller wrote is counted."""
    if not task.public_messages or task.messages is None:
        return 0
    public = [{"role": message["role"], "content": message.get("content") or ""} for message in task.messages[: task.public_messages]]
    first, second = (as_tokens(_rendered_tokens(model, [*public, {"role": "user", "content": probe}])[0]) for probe in _PROBES)
    return common_prefix(as_tokens(tokens), first[: common_prefix(first, second)])


def cache_key(model: LoadedModel, task: Task, tokens: list[int]) -> CacheKey:
    """Whose cached KV the task may reuse, after the model's prompt_cache_scope. Owners are named
    by kind, so an agent and a persona of the same id never share a key."""
    scope = model.cache_scope
    if scope is PromptCacheScope.SHARED:
        return SHARED
    if scope is PromptCacheScope.PERSONA and task.persona is not None:
        return CacheKey(owner=f"persona:{task.persona}")
    # The agent scope, and the persona scope for an agent without a persona (it has no peers).
    group = None if task.persona is None else f"persona:{task.persona}"
    return CacheKey(owner=f"agent:{task.agent or ''}", group=group, public=public_prefix(model, task, tokens) if group else 0)


def run(model: LoadedModel, task: Task, cancel: threading.Event, started: float) -> Iterator[Event]:
    """The task's events. Raises InvalidTask before the first event when the task cannot run."""
    llama, engine = model.llama, model.engine
    grammar = constraint_grammar(task)  # an unsupported schema is refused before anything runs
    tokens, stops = task_prompt(model, task)
    if not tokens:
        raise InvalidTask("the prompt is empty", param="prompt")
    room = engine.context - len(tokens)
    if room <= 0:
        raise InvalidTask(
            f"Requested tokens ({len(tokens)}) exceed context window of {engine.context}", code="context_length_exceeded"
        )
    _check_bias(task, llama.n_vocab())
    syntax = model.tool_syntax if calls_tools(task) else None
    opened = None
    if task.messages is not None and task.reasoning_format != "none" and not isinstance(task.output, JsonOutput):
        # The generation prompt may open the reasoning block itself (DeepSeek-R1's, Qwen3's with thinking on).
        opened = opened_by(llama.detokenize(tokens[-16:], special=True).decode("utf-8", "replace"))
    constraint: Constraint | None = None
    if syntax is not None:
        native = native_grammar(syntax, task, model.constraints.specials(), reasoning=opened[1] if opened and not lazy(task) else None)
        constraint = model.constraints.lazy(native, syntax.trigger.find_bytes, after_reasoning(opened)) if lazy(task) else model.constraints.start(native)
    elif grammar is not None:
        constraint = model.constraints.start(grammar)
    job = TokenJob(
        prompt=tokens,
        max_tokens=room if task.max_tokens is None else min(task.max_tokens, room),
        sampling=task.sampling,
        cancel=cancel,
        deadline=task.deadline,
        constraint=constraint,
        top_logprobs=task.logprobs,
        agent=task.agent,
        cache_key=cache_key(model, task, tokens),
    )
    events: Iterator[Event] = _text_events(llama, task, job, engine, stops, started, len(tokens))
    if syntax is not None:
        if task.messages is not None and task.reasoning_format != "none" and not isinstance(task.output, JsonOutput):
            events = _reasoning_events(llama, events, opened)
        yield from _native_events(events, syntax, json_answer=isinstance(task.output, JsonOutput))
    elif calls_tools(task):
        yield from _tool_events(events, json_answer=isinstance(task.output, JsonOutput))
    elif task.messages is not None and not isinstance(task.output, JsonOutput) and task.reasoning_format != "none":
        yield from _reasoning_events(llama, events, opened)
    else:
        yield from events


def _reasoning_events(llama: Any, events: Iterator[Event], opened: tuple[str, str] | None) -> Iterator[Event]:
    """A thinking model's reasoning block as ReasoningDelta, its answer as TextDelta; the Finish counts
    the reasoning's tokens."""
    splitter = ReasoningSplitter(opened)
    for event in events:
        if isinstance(event, TextDelta):
            yield from splitter.feed(event)
            continue
        yield from splitter.flush()
        if splitter.reasoning:
            counted = len(llama.tokenize(splitter.reasoning.encode("utf-8"), add_bos=False, special=True))
            event = replace(event, usage=replace(event.usage, reasoning_tokens=min(counted, event.usage.completion_tokens)))
        yield event


def _native_events(events: Iterator[Event], syntax: CallSyntax, json_answer: bool) -> Iterator[Event]:
    """The reply in the model's own call syntax as text, reasoning and tool-call deltas; a reply with
    calls finishes "tool_calls"."""
    parser = NativeParser(syntax, json_answer)
    for event in events:
        if isinstance(event, TextDelta):
            yield from parser.feed(event.text)
        elif isinstance(event, Finish):
            yield from parser.flush()
            if parser.calls and event.reason in (FinishReason.STOP, FinishReason.LENGTH) and not event.timed_out:
                event = replace(event, reason=FinishReason.TOOL_CALLS) if event.reason == FinishReason.STOP else event
            yield event
        else:
            yield event


def _tool_events(events: Iterator[TextDelta | Finish], json_answer: bool) -> Iterator[Event]:
    """The constrained reply as text or tool-call deltas; a reply with calls finishes "tool_calls"."""
    parser = ReplyParser(json_answer)
    for event in events:
        if isinstance(event, TextDelta):
            yield from parser.feed(event.text)
        elif parser.calls and event.reason == FinishReason.STOP and not event.timed_out:
            yield Finish(FinishReason.TOOL_CALLS, event.usage, event.ttft, event.timed_out)
        else:
            yield event


def _text_events(
    llama: Any, task: Task, job: TokenJob, engine: Engine, stops: list[str], started: float, n_prompt: int
) -> Iterator[TextDelta | Finish]:
    text = TextStream(llama, stops)
    generated = 0
    stopped = False
    pending: list[TokenLogprob] = []
    if task.echo and task.prompt:
        yield TextDelta(task.prompt)
    tokens = engine.generate(job)
    try:
        for sampled in tokens:
            generated += 1
            if job.top_logprobs is not None:
                pending.append(_logprob(llama, sampled))
            piece, stopped = text.feed(sampled.token)
            if piece or (pending and stopped):
                yield TextDelta(piece, tuple(pending))
                pending = []
            if stopped:
                break
    finally:
        tokens.close()  # ends the job at once (frees its slot), whoever stops reading
    reason = FinishReason.STOP if stopped or job.finish in (FinishReason.STOP, FinishReason.TIMEOUT) else job.finish
    if reason != FinishReason.CANCELLED:
        rest = text.flush() + (task.suffix or "")
        if rest or pending:
            yield TextDelta(rest, tuple(pending))
    ttft = None if job.first_token_at is None else job.first_token_at - started
    yield Finish(reason, Usage(n_prompt, generated), ttft, timed_out=job.finish == FinishReason.TIMEOUT, stop_sequence=text.matched)


def _logprob(llama: Any, sampled: Sampled) -> TokenLogprob:
    def piece(token: int) -> tuple[str, bytes]:
        raw = llama.detokenize([token], special=False)
        return raw.decode("utf-8", "replace"), raw

    text, raw = piece(sampled.token)
    top = tuple((*piece(token), logprob) for token, logprob in sampled.top)
    return TokenLogprob(text, raw, sampled.logprob if sampled.logprob is not None else 0.0, top)


