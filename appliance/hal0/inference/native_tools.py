"""Tool calls in the model's own syntax, derived from its chat template.

A model trained for tools writes its calls in its family's syntax: Qwen and Hermes
`<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`, Mistral `[TOOL_CALLS][{...}]` or
`[TOOL_CALLS]name[ARGS]{...}`, Llama 3.x a bare `{"name": ..., "parameters": ...}`, DeepSeek its
special tokens around a fenced JSON block, and so on. Rather than a parser per family, hal0 learns
the syntax from the template itself, as llama.cpp's chat-diff analyzer does: it renders an assistant
turn with one call, with two calls and with text, and reads what the template wrote around the
call's name and its JSON arguments (`CallSyntax`). That covers every template whose calls carry
their arguments as one JSON object; templates that write arguments another way (XML parameters,
Python calls, harmony channels) or ignore calls keep hal0's generic format (toolcalls.py).

The syntax then drives three things, all here:
- the grammar of a call section (`native_grammar`), for the constraint engine: with `tool_choice:
  auto` it applies lazily, from the moment the model opens a call (constraint.LazyConstraint);
  with `required` or a named tool from the first token;
- the trigger that says a call has opened (`Trigger`);
- the streaming parser (`NativeParser`): text before a call is the answer, a call is its name
  then its argument fragments, as they arrive.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hal0.inference.constraint import Grammar, embedded_schema, lark_grammar, schema_grammar
from hal0.inference.reasoning import MARKERS
from hal0.inference.task import JsonOutput, Task, TextDelta, ToolCallDelta
from hal0.inference.text import JsonNesting
from hal0.inference.toolcalls import chosen_tools

# What the probes put in a call, chosen to appear nowhere else in a rendering.
_NAME_A, _NAME_B = "hal0_fn_a", "hal0_fn_b"
_ID_A, _ID_B = "hal0Call1", "hal0Call2"  # nine alphanumerics: Mistral's templates insist
_ARGS = {"hal0_key": "hal0_val"}
_CONTENT = "HAL0CONTENT"
_ID = "\x00id\x00"  # where a piece carries the call's id (Mistral, Solar)
_NUM = "\x00n\x00"  # where a piece carries the call's index (Kimi's `functions.name:0`)
_SLOTS = re.compile("(\x00id\x00|\x00n\x00)")
_ID_PATTERN = r"[A-Za-z0-9]{9}"
_NAME_CHARS = re.compile(r"[A-Za-z0-9_.\-]")
_PROBE_TOOLS = [
    {"name": name, "description": "probe", "parameters": {"type": "object", "properties": {"hal0_key": {"type": "string"}}}}
    for name in (_NAME_A, _NAME_B)
]


@dataclass(frozen=True)
class Trigger:
    """What opens a call section in free text: a tag (`<tool_call>`, `[TOOL_CALLS]`), or, for formats
    whose call is a bare JSON object, that object's opening up to its first key (`{"name"`, any
    spacing). `at_start`: only at the start of the reply (a reply that is a JSON answer or a call)."""

    text: str
    json: bool = False
    at_start: bool = False

    def _pattern(self) -> re.Pattern[str]:
        body = r"\s*".join(re.escape(char) for char in self.text) if self.json else re.escape(self.text)
        return re.compile(r"\s*" + body if self.at_start else body)

    def find(self, text: str, start: int = 0) -> int | None:
        """Where the section begins in `text` (searched from `start`), once the trigger is whole."""
        pattern = self._pattern()
        found = pattern.match(text, start) if self.at_start else pattern.search(text, start)
        if found is None:
            return None
        return found.start() + len(found.group(0)) - len(found.group(0).lstrip()) if self.at_start else found.start()

    def find_bytes(self, data: bytes, start: int) -> int | None:
        """`find` over a reply's bytes from `start` (what the lazy constraint watches)."""
        if not self.json and not self.at_start:
            at = data.find(self.text.encode("utf-8"), start)
            return None if at < 0 else at
        head = data[:start].decode("utf-8", "ignore")
        found = self.find(head + data[start:].decode("utf-8", "ignore"), len(head))
        return None if found is None else len(data[:start]) + len(data[start:].decode("utf-8", "ignore")[: found - len(head)].encode("utf-8"))

    def held(self, text: str) -> int:
        """How many trailing characters of `text` may still become the trigger (held back from the answer)."""
        if self.at_start:
            return len(text) if self._could_open(text.lstrip()) else 0
        if self.json:
            brace = text.rfind(self.text[0])
            return len(text) - brace if brace >= 0 and self._could_open(text[brace:]) else 0
        for size in range(min(len(self.text) - 1, len(text)), 0, -1):
            if self.text.startswith(text[-size:]):
                return size
        return 0

    def _could_open(self, text: str) -> bool:
        return self.text.startswith(_compact(text) if self.json else text)


def _compact(text: str) -> str:
    """JSON text without the whitespace between its tokens (outside strings): `{ "name"` -> `{"name"`."""
    out, in_string, escape = [], False, False
    for char in text:
        if in_string:
            out.append(char)
            escape = not escape and char == "\\"
            in_string = escape or char != '"'
        elif char == '"':
            in_string = True
            out.append(char)
        elif not char.isspace():
            out.append(char)
    return "".join(out)


@dataclass(frozen=True)
class CallSyntax:
    """How a template writes an assistant turn's calls: `open` name `name_end` arguments, then
    `between` name `name_end` arguments for each further call, then `close`. `_ID` in a piece
    stands for the call's id."""

    open: str
    name_end: str
    close: str
    between: str | None  # None: the template renders one call per turn only
    trigger: Trigger
    separators: tuple[str, str] = (", ", ": ")  # how the template writes the arguments' JSON (item, key)

    @property
    def parallel(self) -> bool:
        return self.between is not None


class NotNative(ValueError):
    """The template's calls cannot be described by a CallSyntax (the reason says why)."""


def _json_after(text: str, start: int) -> tuple[int, int] | None:
    """The span of the probe's arguments object in `text`, searched from `start`."""
    key = text.find('"hal0_key"', start)
    if key < 0:
        return None
    brace = text.rfind("{", start, key)
    if brace < 0:
        return None
    try:
        value, end = json.JSONDecoder().raw_decode(text, brace)
    except ValueError:
        return None
    return (brace, end) if value == _ARGS else None


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _common_suffix(a: str, b: str, limit: int) -> int:
    n = 0
    while n < limit and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def _without_reasoning(text: str) -> str:
    """`text` without the (empty) reasoning block, or the end of one, that a template writes before
    a call: the reasoning is split off before the calls are parsed."""
    stripped = text.lstrip()
    for start, end in MARKERS:
        if stripped.startswith(start) and end in stripped:
            return stripped[stripped.index(end) + len(end) :].lstrip()
        if stripped.startswith(end):
            return stripped[len(end) :].lstrip()
    return stripped


def derive_syntax(render: Any) -> CallSyntax:
    """The call syntax of a Jinja template (templates.JinjaTemplate), learned by rendering it.
    Raises NotNative with the reason when the template does not write calls as name + JSON."""
    from hal0.inference.templates import RenderError

    if not render.caps.tool_calls:
        raise NotNative("the template does not render tool calls")

    def turn(**assistant: Any) -> str:
        messages = [{"role": "user", "content": "hal0_user"}, {"role": "assistant", **assistant}]
        return str(render(messages, tools=_PROBE_TOOLS, add_generation_prompt=False).prompt)

    def call(name: str, call_id: str) -> dict[str, Any]:
        return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(_ARGS)}}

    try:
        text = turn(content=_CONTENT)
        one = turn(content="", tool_calls=[call(_NAME_A, _ID_A)])
        prompt = str(render([{"role": "user", "content": "hal0_user"}], tools=_PROBE_TOOLS).prompt)
    except RenderError as error:
        raise NotNative(f"the template fails on a tool call: {error}") from None
    if "<|channel|>" in render.source:
        raise NotNative("harmony channels (GPT-OSS) are not a name + JSON syntax")
    # The reply starts where the generation prompt ends (or, for a template that renders history
    # otherwise, where a text turn and a call turn part).
    begin = len(prompt) if one.startswith(prompt) else _common_prefix(text, one)
    tag = one.rfind("<", 0, begin)
    if tag >= 0 and ">" not in one[tag:begin]:
        begin = tag  # the turns part inside a special token (<|START_TEXT|> / <|START_ACTION|>): it is the call's
    name = one.find(_NAME_A, begin)
    if name < 0:
        raise NotNative("the template drops the call's name")
    span = _json_after(one, name + len(_NAME_A))
    if span is None:
        raise NotNative("the template does not write the call's arguments as one JSON object")
    args_start, args_end = span
    tail = _common_suffix(text, one, min(len(text) - begin, len(one) - args_end))
    opening = _without_reasoning(one[begin:name])
    name_end = one[name + len(_NAME_A) : args_start]
    close_end = len(one) - tail
    tag = one.rfind("<", args_end, close_end)
    if tag >= 0 and ">" not in one[tag:close_end] and one.find(">", close_end) >= 0:
        close_end = one.find(">", close_end) + 1  # the turns part inside a special token (<|END_TEXT|> / <|END_ACTION|>)
    close = one[args_end:close_end]
    if render.eos_token and render.eos_token in close:
        close = close[: close.index(render.eos_token)]  # generation ends at the end-of-sequence token itself
    if not opening and not name_end.strip():
        raise NotNative("the template writes a call with nothing around its name")
    between: str | None
    try:
        two = turn(content="", tool_calls=[call(_NAME_A, _ID_A), call(_NAME_B, _ID_B)])
        first = two.find(_NAME_A, begin)
        second = two.find(_NAME_B, first)
        span_a = _json_after(two, first)
        span_b = _json_after(two, second)
        between = None
        if first >= 0 and second >= 0 and span_a is not None and span_b is not None:
            candidate = two[span_a[1] : second]
            second_end = two[second + len(_NAME_B) : span_b[0]]
            expected = two[: first] + _NAME_A + name_end + two[span_a[0] : span_a[1]] + candidate + _NAME_B + second_end
            if second_end == name_end.replace(_ID_A, _ID_B) and expected == two[: span_b[0]]:
                between = candidate.replace(_ID_A, _ID).replace(_ID_B, _ID)
            elif _counted(second_end) == _counted(name_end) != name_end and expected == two[: span_b[0]]:
                # The calls differ only by their index (`:0`, `:1`): the index is a number the parser skips.
                name_end, between = _counted(name_end), _counted(candidate)
    except RenderError:
        between = None  # Llama 3.x: "This model only supports single tool-calls at once!"
    opening, name_end, close = (piece.replace(_ID_A, _ID) for piece in (opening, name_end, close))
    written = one[args_start:args_end]
    separators = (", " if ": " in written else ",", ": " if ": " in written else ":")
    return CallSyntax(opening, name_end, close, between, _trigger(opening), separators)


def _counted(piece: str) -> str:
    """`piece` with its numbers as index slots."""
    return re.sub(r"[0-9]+", _NUM, piece)


def tool_syntax(render: Any, tool_format: str | None) -> CallSyntax | None:
    """The call syntax a model's replies use under models[].tool_format: its template's own when it
    has one (native; the default), else None (hal0's generic format). `native` asked of a template
    that has none is a TemplateError, naming why."""
    from hal0.inference.templates import JinjaTemplate, TemplateError

    if tool_format == "generic":
        return None
    if not isinstance(render, JinjaTemplate):
        if tool_format == "native":
            raise TemplateError("models[].tool_format is native, but a named chat_format has no tool-call syntax of its own; use generic")
        return None
    try:
        return derive_syntax(render)
    except NotNative as error:
        if tool_format == "native":
            raise TemplateError(f"models[].tool_format is native, but {error}; use generic") from None
        return None


def _trigger(opening: str) -> Trigger:
    """The shortest text that says a call has opened: the opening up to its first space, quote or
    brace (`<tool_call>`, `[TOOL_CALLS]`, `functools[`); for a bare JSON object, its first key."""
    cut = re.search(r"[\s\"{]", opening)
    text = opening[: cut.start()] if cut else opening
    slot = _SLOTS.search(text)
    if slot:
        text = text[: slot.start()]
    if text:
        return Trigger(text)
    compact = _compact(opening)
    key = re.match(r'\{"[^"]*"', compact)
    return Trigger(key.group(0) if key else compact, json=True)


# ---------------------------------------------------------------------------------------------
# The grammar of a call section.


def _literal(piece: str, specials: Mapping[str, int]) -> str:
    """A Lark expression for template text: whitespace as written, the call id as nine
    alphanumerics, and each special token of the model either as that token or spelled out."""
    if not piece:
        return ""
    parts: list[str] = []
    for chunk in _SLOTS.split(piece):
        if chunk in (_ID, _NUM):
            parts.append(f"/{_ID_PATTERN}/" if chunk == _ID else "/[0-9]+/")
            continue
        while chunk:
            found = min(
                ((chunk.find(text), text) for text in specials if text and text in chunk),
                default=None,
                key=lambda pair: (pair[0], -len(pair[1])),
            )
            if found is None:
                parts.extend(_lexemes(chunk))
                break
            at, text = found
            if at:
                parts.extend(_lexemes(chunk[:at]))
            parts.append(f"(<[{specials[text]}]> | {json.dumps(text)})")
            chunk = chunk[at + len(text) :]
    return " ".join(parts)


def _lexemes(text: str) -> list[str]:
    """Template text as Lark literals, JSON punctuation on its own: a literal `{"name": "` would be one
    lexeme, and the lexer, taking the longest, could then never start the `{` of a JSON answer beside it."""
    return [json.dumps(part) for part in re.split(r"([{}\[\],:]|\s+)", text) if part]


def native_grammar(syntax: CallSyntax, task: Task, specials: Mapping[str, int], reasoning: str | None = None) -> Grammar:
    """The call section's grammar for the task's tools and tool_choice, from the first character
    of the opening (the trigger) to the close. With a response format under `auto`, the grammar
    is the whole reply: that JSON, or the section. `reasoning`: the generation prompt opened a
    reasoning block that this end marker closes; the model finishes its thought first."""
    rules = []
    tools = chosen_tools(task)
    for index, tool in enumerate(tools):
        enforced = schema_grammar(tool.parameters, tool.param)  # a refusal names the tool's own param and path
        rules.append(f"call_{index}: {json.dumps(tool.name)} {_literal(syntax.name_end, specials)} args_{index}")
        rules.append(f"args_{index}: %json {embedded_schema(enforced.schema, syntax.separators)}")
    many = syntax.parallel and task.parallel_tool_calls and task.tool_choice in ("auto", "required") and len(tools) > 0
    more = f" ({_literal(syntax.between or '', specials)} call)*" if many else ""
    section = f"section: {_literal(syntax.open, specials)} call{more} {_literal(syntax.close, specials)}".rstrip()
    call = "call: " + " | ".join(f"call_{index}" for index in range(len(tools)))
    lines = [section, call, *rules]
    if task.tool_choice == "auto" and isinstance(task.output, JsonOutput):
        schema = task.output.schema if task.output.schema is not None else {"type": "object"}
        answer = schema_grammar(schema, task.output.param).schema
        lines = ["start: answer | section", *lines, f"answer: %json {embedded_schema(answer)}"]
    elif reasoning is not None and reasoning in specials:  # the model ends its thought with that token
        lines = [f"start: THOUGHT <[{specials[reasoning]}]> /[ \\t\\r\\n]*/ section", "THOUGHT: /(.|\\n)*/", *lines]
    elif reasoning is not None:  # ... or with that text (a stop: a greedy lexeme would run past it)
        lines = ["start: thought /[ \\t\\r\\n]*/ section", f"thought[stop={json.dumps(reasoning)}]: /(.|\\n)*/", *lines]
    else:
        lines = ["start: section", *lines]
    return lark_grammar("\n".join(lines), "tools")


def after_reasoning(opened: tuple[str, str] | None) -> Callable[[bytes], int | None]:
    """Where a reply's call may begin: after its reasoning block (the prompt's own, `opened`, or one
    the reply opens), never inside it; None while the block is still open."""
    markers = [(start.encode(), end.encode()) for start, end in MARKERS]

    def skip(data: bytes) -> int | None:
        end = opened[1].encode() if opened else None
        if end is None:
            stripped = data.lstrip()
            for start, close in markers:
                if stripped.startswith(start):
                    end = close
                    break
                if start.startswith(stripped):
                    return None  # may still open one
            if end is None:
                return 0
        at = data.find(end)
        return None if at < 0 else at + len(end)

    return skip


def lazy(task: Task) -> bool:
    """Whether the call grammar waits for the model to open a call (free text until then)."""
    return task.tool_choice == "auto" and not isinstance(task.output, JsonOutput)


# ---------------------------------------------------------------------------------------------
# Parsing a reply, as it streams.


_NEED, _FAIL = -2, -1  # _Piece.match: more text needed; no match here


class _Piece:
    """Template text matched leniently: any whitespace between its non-space runs, an id where the
    template put one."""

    def __init__(self, text: str) -> None:
        self.chunks: list[str] = []  # literal runs, and _ID / _NUM slots
        for part in _SLOTS.split(text):
            self.chunks.extend([part] if part in (_ID, _NUM) else part.split())

    def match(self, text: str, at: int, final: bool) -> int:
        """The end of the piece matched at `at`, or _FAIL, or _NEED while more text may decide."""
        for chunk in self.chunks:
            while at < len(text) and text[at].isspace():
                at += 1
            if at == len(text):
                return _FAIL if final else _NEED
            if chunk in (_ID, _NUM):
                run = re.match(r"[A-Za-z0-9]+" if chunk == _ID else r"[0-9]+", text[at:])
                if run is None:
                    return _FAIL
                if at + run.end() == len(text) and not final:
                    return _NEED
                at += run.end()
                continue
            seen = text[at : at + len(chunk)]
            if not chunk.startswith(seen):
                return _FAIL
            if len(seen) < len(chunk):
                return _FAIL if final else _NEED
            at += len(chunk)
        return at


class NativeParser:
    """A reply's text in, TextDelta / ToolCallDelta out: the answer until the trigger, then each
    call's name (announced whole) and its argument fragments as they arrive. Text that does not
    follow the syntax (an unconstrained reply that opened a call and did not write one) comes back
    as text: nothing is lost."""

    def __init__(self, syntax: CallSyntax, json_answer: bool = False) -> None:
        self._syntax = syntax
        self._pieces = {"open": _Piece(syntax.open), "name_end": _Piece(syntax.name_end)}
        self._close = _Piece(syntax.close)
        self._between = _Piece(syntax.between) if syntax.between is not None else None
        self._text = ""  # everything fed
        self._sent = 0  # how much of it has been sent as answer text
        self._section = 0  # where the call section starts
        self._at = 0  # the parse position within the section
        # With a response format the reply is either that JSON or calls, so a call opens only at its start.
        self._trigger = Trigger(syntax.trigger.text, syntax.trigger.json, at_start=True) if json_answer else syntax.trigger
        self._state = "text"
        self._json = JsonNesting()  # within a call's arguments
        self._name = ""
        self.calls = 0

    def feed(self, text: str) -> Iterator[TextDelta | ToolCallDelta]:
        self._text += text
        return self._advance(final=False)

    def flush(self) -> Iterator[TextDelta | ToolCallDelta]:
        return self._advance(final=True)

    def _advance(self, final: bool) -> Iterator[TextDelta | ToolCallDelta]:
        while True:
            before = (self._state, self._at, self._sent)
            yield from self._step(final)
            if (self._state, self._at, self._sent) == before:
                return

    def _step(self, final: bool) -> Iterator[TextDelta | ToolCallDelta]:
        state = self._state
        if state == "after":  # what follows the calls (its spaces held until more comes)
            rest = self._text[self._sent :]
            if rest.strip():
                self._sent = len(self._text)
                yield TextDelta(rest)
            elif final:
                self._sent = len(self._text)
        elif state == "text":
            yield from self._free_text(final)
        elif state in self._pieces:
            end = self._pieces[state].match(self._text, self._at, final)
            if end == _FAIL:
                yield from self._malformed()
            elif end != _NEED:
                self._at = end
                if state == "open":
                    self._state = "name"
                else:
                    self._state = "args"
                    self._json = JsonNesting()
                    self.calls += 1
                    yield ToolCallDelta(self.calls - 1, id=f"call_{uuid.uuid4().hex[:24]}", name=self._name)
        elif state == "name":
            start = at = self._at
            while at < len(self._text) and _NAME_CHARS.match(self._text[at]):
                at += 1
            if at == len(self._text) and not final:
                return  # the name may go on
            if at == start:
                yield from self._malformed()
                return
            self._name, self._at, self._state = self._text[start:at], at, "name_end"
        elif state == "args":
            yield from self._arguments(final)
        elif state == "next":
            self._next(final)

    def _free_text(self, final: bool) -> Iterator[TextDelta]:
        trigger, text = self._trigger, self._text
        # A reply that may open with a call only, and did not: it is all text.
        at = None if trigger.at_start and self._sent else trigger.find(text, self._sent)
        if at is not None:
            if text[: at].strip() and at > self._sent:  # the text before a call, as written (llama-server keeps its trailing space)
                yield TextDelta(text[self._sent : at])
            self._sent, self._section, self._at, self._state = at, at, at, "open"
            return
        end = len(text)
        if not final and not (trigger.at_start and self._sent):
            end -= trigger.held(text[self._sent :])
            # whitespace is held too: it may turn out to precede a call
            end = self._sent + len(text[self._sent : end].rstrip()) if text[self._sent : end].strip() else self._sent
        if end > self._sent:
            yield TextDelta(text[self._sent : end])
            self._sent = end

    def _arguments(self, final: bool) -> Iterator[TextDelta | ToolCallDelta]:
        start = at = self._at
        if self._json.depth == 0:  # before the arguments' first character
            while at < len(self._text) and self._text[at].isspace():
                at += 1
            if at == len(self._text):
                return
            if self._text[at] not in "{[":
                self._at = at
                yield from self._malformed()
                return
            start = at
        while at < len(self._text):
            char = self._text[at]
            at += 1
            self._json.feed(char)
            if self._json.depth == 0 and not self._json.in_string:
                self._state = "next"
                break
        self._at = at
        if at > start:
            yield ToolCallDelta(self.calls - 1, arguments=self._text[start:at])

    def _next(self, final: bool) -> None:
        """After a call's arguments: another call (`between`) or the close, once the text decides. A
        reply that ends inside either (an end token cut the template's close short) is closed."""
        closing = self._close.match(self._text, self._at, False)
        following = self._between.match(self._text, self._at, False) if self._between is not None else _FAIL
        if following >= 0 and (closing < 0 or following > closing):
            self._at, self._state = following, "name"
        elif not final and (closing == _NEED or following == _NEED):
            return  # more text decides
        elif closing >= 0:
            self._state, self._sent = "after", closing
        elif _NEED in (closing, following):
            self._state, self._sent = "after", len(self._text)
        else:
            self._state, self._sent = "after", self._at  # what follows is text

    def _malformed(self) -> Iterator[TextDelta]:
        """The section stopped following the syntax: with no call yet, the section is text; after
        a call, what follows it is."""
        if self.calls == 0:
            rest = self._text[self._section :]
            self._state, self._sent = "after", len(self._text)
            if rest:
                yield TextDelta(rest)
        else:
            self._state, self._sent = "after", self._at


def parse_reply(template_source: str, tools: Sequence[Mapping[str, Any]], text: str) -> dict[str, Any]:
    """A whole reply parsed as hal0 parses a streamed one (reasoning split, then calls): the
    differential tests compare this with llama.cpp's parse of the same text."""
    from hal0.inference.reasoning import ReasoningSplitter, opened_by
    from hal0.inference.task import ReasoningDelta
    from hal0.inference.templates import JinjaTemplate

    template = JinjaTemplate(template_source)
    syntax = derive_syntax(template)
    prompt = template([{"role": "user", "content": "hi"}], tools=[_tool_json(tool) for tool in tools] or None).prompt
    splitter, parser = ReasoningSplitter(opened_by(prompt)), NativeParser(syntax)
    content, reasoning, calls = "", "", []
    events = [*splitter.feed(TextDelta(text)), *splitter.flush()]
    deltas: list[Any] = []
    for event in events:
        if isinstance(event, ReasoningDelta):
            reasoning += event.text
        else:
            deltas.extend(parser.feed(event.text))
    deltas.extend(parser.flush())
    for delta in deltas:
        if isinstance(delta, TextDelta):
            content += delta.text
        elif delta.name is not None:
            calls.append({"name": delta.name, "arguments": ""})
        else:
            calls[delta.index]["arguments"] += delta.arguments
    return {
        "content": content,
        "reasoning_content": reasoning,
        "tool_calls": [{"name": call["name"], "arguments": _loaded(call["arguments"])} for call in calls],
    }


def _tool_json(tool: Mapping[str, Any]) -> dict[str, Any]:
    function = tool.get("function", tool)
    return {"name": function.get("name", ""), "description": function.get("description", ""), "parameters": function.get("parameters", {})}


def _loaded(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments
