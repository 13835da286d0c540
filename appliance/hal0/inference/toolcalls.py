"""Tool calling in hal0's generic format, for every chat template.

The tools are described in the system turn and the reply is constrained JSON (constraint.py): either
{"content": "..."} (a text answer, `auto` only) or {"tool_calls": [{"name": ..., "arguments": {...}}]}
where each call's arguments match that tool's parameters schema. With a response format too, the
text answer is {"content": <JSON matching it>}, and its JSON is the answer. The reply is parsed as
it is generated, so a stream carries the text, or each call's name and then its argument fragments.

Earlier turns are rendered in the same format so a whole tool loop can be sent back: an assistant
turn with tool_calls becomes that JSON, a tool result a user turn naming its call.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from hal0.inference.constraint import Grammar, embedded_schema, lark_grammar, schema_grammar
from hal0.inference.task import InvalidTask, JsonOutput, Task, TextDelta, Tool, ToolCallDelta
from hal0.inference.text import JsonNesting, well_formed

_CALLS = '{"tool_calls":['
_CONTENT = '{"content":'


def tool_messages(task: Task) -> list[dict[str, Any]]:
    """The task's messages with the tools described and tool turns in the generic format."""
    messages = [_plain(message) for message in task.messages or ()]
    if task.tool_choice == "none" or not task.tools:
        return messages
    described = "\n".join(
        f"- {tool.name}: {tool.description or '(no description)'} Arguments (JSON schema): {json.dumps(tool.parameters, separators=(',', ':'))}"
        for tool in task.tools
    )
    if task.tool_choice == "auto":
        how = 'Reply with JSON only: {"content": "<your answer>"} to answer, or {"tool_calls": [{"name": "<tool>", "arguments": {...}}]} to call tools.'
    else:
        how = 'Reply with JSON only: {"tool_calls": [{"name": "<tool>", "arguments": {...}}]}.'
    text = f"You can call these tools:\n{described}\n{how}"
    if messages and messages[0]["role"] == "system":
        messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{text}"}
    else:
        messages.insert(0, {"role": "system", "content": text})
    return messages


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    if message["role"] == "assistant" and message.get("tool_calls"):
        calls = [{"name": call["function"]["name"], "arguments": _arguments(call["function"].get("arguments"))} for call in message["tool_calls"]]
        return {"role": "assistant", "content": json.dumps({"tool_calls": calls}, separators=(",", ":"))}
    if message["role"] == "tool":
        return {"role": "user", "content": f"Result of tool call {message.get('tool_call_id', '')}: {message.get('content') or ''}"}
    return {"role": message["role"], "content": message.get("content") or ""}


def _arguments(raw: Any) -> Any:
    """A call's arguments as JSON values when its text parses, else the text as sent back: a client's
    arguments may be anything (50,000 `[` exhaust the recursion limit, 5,000 digits exceed int())."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            return raw
    return raw


def chosen_tools(task: Task) -> tuple[Tool, ...]:
    """The tools the reply may call under the task's tool_choice."""
    if task.tool_choice in ("auto", "required", "none"):
        return task.tools
    tools = tuple(tool for tool in task.tools if tool.name == task.tool_choice)
    if not tools:
        raise InvalidTask(f"tool_choice names {task.tool_choice!r}, which is not in tools", param="tool_choice")
    return tools


def tools_grammar(task: Task) -> Grammar:
    """The grammar of a reply under the task's tool_choice (and its response format, if any), as a
    Lark grammar embedding each tool's parameters schema."""
    rules = []
    for index, tool in enumerate(chosen_tools(task)):
        enforced = schema_grammar(tool.parameters, tool.param)  # a refusal names the tool's own param and path
        head = f'{{"name":{json.dumps(tool.name)},"arguments":'
        rules.append(f"call_{index}: {json.dumps(head)} args_{index} \"}}\"")
        rules.append(f"args_{index}: %json {embedded_schema(enforced.schema)}")
    call = " | ".join(f"call_{index}" for index in range(len(rules) // 2))
    many = task.parallel_tool_calls and task.tool_choice in ("auto", "required")
    lines = [f'calls: {json.dumps(_CALLS)} call ("," call)* "]}}"' if many else f'calls: {json.dumps(_CALLS)} call "]}}"', f"call: {call}", *rules]
    if task.tool_choice == "auto":
        answer: Any = {"type": "string"}
        if isinstance(task.output, JsonOutput):
            answer = schema_grammar(task.output.schema if task.output.schema is not None else {"type": "object"}, task.output.param).schema
        lines = ["start: calls | content", *lines, f'content: {json.dumps(_CONTENT)} answer "}}"', f"answer: %json {embedded_schema(answer)}"]
    else:
        lines = ["start: calls", *lines]
    return lark_grammar("\n".join(lines), "tools")


class ReplyParser:
    """Constrained reply text in, TextDelta / ToolCallDelta out, as the characters arrive."""

    def __init__(self, json_answer: bool = False) -> None:
        # json_answer: a response format holds the text answer, {"content": <its JSON>}; else a string
        self._json_answer = json_answer
        self._head = ""  # text before the reply's kind is known
        self._mode = "start"
        self._call = -1
        self._pending = ""  # the current call's head, or an escape sequence in content
        self._json = JsonNesting()  # within the answer's JSON or a call's arguments
        self.calls = 0

    def feed(self, text: str) -> Iterator[TextDelta | ToolCallDelta]:
        for char in text:
            yield from self._char(char)

    def _char(self, char: str) -> Iterator[TextDelta | ToolCallDelta]:
        if self._mode == "start":
            self._head += char
            if self._head == _CALLS:
                self._mode = "head"
            elif self._json_answer and self._head == _CONTENT:
                self._mode = "answer"
            elif self._head == _CONTENT + '"':
                self._mode = "content"
            return
        if self._mode == "content":
            yield from self._content(char)
        elif self._mode == "answer":
            if not self._json.in_string and self._json.depth == 0 and char == "}":
                self._mode = "done"  # the wrapper closed: the answer's JSON is whole
                return
            self._json.feed(char)
            yield TextDelta(char)
        elif self._mode == "head":
            self._pending += char
            if self._pending.endswith('"arguments":'):
                name = self._pending[len('{"name":"') : -len('","arguments":')]
                self._call += 1
                self.calls += 1
                self._mode, self._pending, self._json = "args", "", JsonNesting()
                yield ToolCallDelta(self._call, id=f"call_{uuid.uuid4().hex[:24]}", name=name)
        elif self._mode == "args":
            if not self._json.in_string and self._json.depth == 0 and char == "}":
                self._mode = "between"  # the call object closed
                return
            self._json.feed(char)
            yield ToolCallDelta(self._call, arguments=char)
        elif self._mode == "between":
            if char == ",":
                self._mode, self._pending = "head", ""
            elif char == "]":
                self._mode = "done"

    def _content(self, char: str) -> Iterator[TextDelta]:
        if self._pending or char == "\\":
            self._pending += char
            end = _complete_escape(self._pending)
            if end:
                yield TextDelta(_unescape(self._pending[:end]))
                rest, self._pending = self._pending[end:], ""
                for later in rest:  # what followed a lone high surrogate is read on its own
                    yield from self._content(later)
        elif char == '"':
            self._mode = "done"
        else:
            yield TextDelta(char)


def _hex(text: str) -> int | None:
    return int(text, 16) if len(text) == 4 and all(c in "0123456789abcdefABCDEF" for c in text) else None


def _complete_escape(sequence: str) -> int:
    """The length of the complete escape `sequence` starts with, or 0 while it needs more characters.
    A high surrogate waits for its low half; followed by anything else it is an escape of its own."""
    if len(sequence) < 2:
        return 0
    if sequence[1] != "u":
        return 2
    if len(sequence) < 6:
        return 0
    code = _hex(sequence[2:6])
    if code is None or not 0xD800 <= code <= 0xDBFF:
        return 6
    for at, expected in ((6, "\\"), (7, "u")):
        if len(sequence) == at:
            return 0
        if sequence[at] != expected:
            return 6
    if len(sequence) < 12:
        return 0
    low = _hex(sequence[8:12])
    return 12 if low is not None and 0xDC00 <= low <= 0xDFFF else 6


def _unescape(sequence: str) -> str:
    """One JSON escape as text; a lone surrogate (`\\udc80`, which a logit_bias can steer a model to)
    becomes U+FFFD, since no response can encode it."""
    try:
        return well_formed(json.loads(f'"{sequence}"'))
    except ValueError:
        return well_formed(sequence)
