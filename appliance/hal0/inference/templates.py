"""Chat templates: messages (and tools) to the prompt text a model was trained on.

A model's template is its own Jinja template (the GGUF's, or models[].chat_template_file) or a
named llama-cpp-python format. A Jinja template is rendered here, in Jinja's immutable sandbox,
with what templates expect from Hugging Face transformers and llama.cpp's server: `messages` with
`tool_calls` and `tool` turns, `tools` (OpenAI function format), `add_generation_prompt`,
`bos_token`/`eos_token`, `raise_exception`, `strftime_now`, `tojson` as Hugging Face defines it and
the request's `chat_template_kwargs` (`enable_thinking`, `reasoning_effort`, ...). What llama.cpp's
server does around the template is done alike (capabilities probed by rendering, a system turn
folded into the next for templates without one, call arguments as objects where the template reads
them so, the few per-family message adjustments), so that hal0's prompt is llama-server's prompt:
tests/integration/test_template_differential.py holds them to that.

Either way the system prompt must reach the model: llama-cpp-python's `gemma` format drops system
messages without a word, so hal0 renders gemma itself and folds the system text into the first
user turn, as Gemma's own template does. A template that still loses the system text is refused at
load (and by `hal0 config validate`), never silently used.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from hal0.inference.backend import model_of

_PROBE = "hal0-system-probe-7c1f"

# llama-server's default chat_template_kwargs (common/arg.cpp): earlier turns keep their reasoning
# where the template can drop it or keep it.
DEFAULT_KWARGS: Mapping[str, Any] = {"preserve_reasoning": True}

# Names a request's chat_template_kwargs may not set: hal0 sets them from the request itself.
RESERVED_KWARGS = frozenset({"messages", "tools", "add_generation_prompt", "bos_token", "eos_token"})


class TemplateError(ValueError):
    """The configured chat template cannot be used (unknown, unparsable, or it drops the system prompt)."""


class RenderError(ValueError):
    """The template refused these messages (its raise_exception, or an error while rendering): a 400."""


@dataclass(frozen=True)
class Rendered:
    prompt: str
    stop: tuple[str, ...]
    added_special: bool  # the text already holds BOS: tokenize without adding one


class Formatter(Protocol):
    """A chat template: messages (OpenAI-shaped dicts) to the prompt."""

    def __call__(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        add_generation_prompt: bool = True,
    ) -> Rendered: ...


def _text(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def render_gemma(messages: list[dict[str, Any]], **_options: Any) -> Rendered:
    """Gemma's turn format; system text opens the first user turn (Gemma's own template does this)."""
    system = "\n\n".join(_text(m) for m in messages if m["role"] == "system")
    turns: list[str] = []
    pending = system + "\n\n" if system else ""
    for message in messages:
        if message["role"] == "system":
            continue
        role = "model" if message["role"] == "assistant" else "user"
        text = _text(message)
        if role == "user" and pending:
            text, pending = pending + text, ""
        turns.append(f"<start_of_turn>{role}\n{text}<end_of_turn>\n")
    if pending:  # a system prompt with no user turn yet still reaches the model
        turns.append(f"<start_of_turn>user\n{pending.rstrip()}<end_of_turn>\n")
    return Rendered("".join(turns) + "<start_of_turn>model\n", ("<end_of_turn>",), False)


_OWN: dict[str, Formatter] = {"gemma": render_gemma}


def _named(name: str) -> Formatter:
    from llama_cpp import llama_chat_format

    if name in _OWN:
        return _OWN[name]
    function = None
    for candidate in (name.replace("-", "_"), name.replace("-", ""), name.replace("-", "_").replace(".", "_")):
        function = getattr(llama_chat_format, f"format_{candidate}", None)
        if function is not None:
            break
    if function is None:
        raise TemplateError(f"chat_format {name!r} is not a chat format hal0 can render")

    def render(messages: list[dict[str, Any]], **_options: Any) -> Rendered:
        # llama-cpp-python's named formats know neither tools nor template kwargs.
        result = function(messages=[{**message, "content": _text(message)} for message in messages])
        stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        return Rendered(result.prompt, tuple(stop), bool(result.added_special))

    return render


# ---------------------------------------------------------------------------------------------
# The Jinja environment: Hugging Face's (transformers' chat_template_utils), which llama.cpp's own
# engine follows: trim_blocks, lstrip_blocks, loop controls, {% generation %}, tojson, globals.


def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False) -> str:
    """Hugging Face's tojson: json.dumps, non-ASCII kept, no HTML escaping. What Jinja's filters
    leave as iterators (`tools | map(attribute='function')`) is a list, as in llama.cpp's engine."""
    if _NOW.probe is not None:
        _NOW.probe.use(value, deep=True)
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys, default=_listed)


def _listed(value: Any) -> Any:
    import jinja2

    if isinstance(value, Iterator):
        return list(value)
    if isinstance(value, jinja2.Undefined):  # as llama.cpp's engine writes it
        return None
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class _Rendering(threading.local):
    """This thread's rendering: the capability probe watching it (if one is), and the ids of the
    lists and dicts hal0 handed the template."""

    probe: _Probe | None = None
    inputs: frozenset[int] = frozenset()


_NOW = _Rendering()


def _containers(value: Any) -> Iterator[int]:
    if isinstance(value, dict):
        yield id(value)
        for item in value.values():
            yield from _containers(item)
    elif isinstance(value, list):
        yield id(value)
        for item in value:
            yield from _containers(item)


def raise_exception(message: str) -> None:
    raise RenderError(message)


def strftime_now(format: str) -> str:
    return datetime.datetime.now().strftime(format)


def _environment() -> Any:
    import jinja2
    import jinja2.ext
    from jinja2 import nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment, modifies_known_mutable

    class Generation(jinja2.ext.Extension):
        """{% generation %}...{% endgeneration %}: Hugging Face marks assistant text with it; rendered as is."""

        tags: ClassVar[set[str]] = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Callable[[], str]) -> str:
            return caller()

    class Sandbox(ImmutableSandboxedEnvironment):
        """What hal0 hands a template is immutable; the lists and dicts the template makes itself are
        its own to change (Kimi K2's templates append to theirs; llama.cpp's engine lets them)."""

        def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
            if not SandboxedEnvironment.is_safe_attribute(self, obj, attr, value):
                return False
            return not modifies_known_mutable(obj, attr) or id(obj) not in _NOW.inputs

    class Undefined(jinja2.ChainableUndefined):
        """As in llama.cpp's engine: an undefined value's attributes are undefined too
        (`spec.additionalProperties.type`), and text + undefined is the text."""

        def __add__(self, other: Any) -> Any:
            return other if isinstance(other, str) else super().__add__(other)

        def __radd__(self, other: Any) -> Any:
            return other if isinstance(other, str) else super().__radd__(other)

    env = Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols], undefined=Undefined)
    env.filters["tojson"] = tojson
    # Nothing in a chat template is HTML: `"..." | safe + text` must not escape the text (Jinja's Markup
    # would; llama.cpp's engine does not).
    env.filters["safe"] = str
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    # Probing (below) watches which filters and tests a template applies to the probe's values.
    for table, prefix in ((env.filters, ""), (env.tests, "test_is_")):
        for name, function in list(table.items()):
            if name != "tojson":
                table[name] = _watched(function, prefix + name)
    return env


# ---------------------------------------------------------------------------------------------
# Capabilities, probed as llama.cpp's jinja/caps.cpp does: render sample conversations and see
# which of their values the template reads. The probe's values are marked copies (below).


@dataclass
class Caps:
    string_content: bool = True
    typed_content: bool = False
    system_role: bool = True
    tool_calls: bool = True
    object_arguments: bool = False


class _Probe:
    """Which probe values a rendering read, and how (llama.cpp's value stats)."""

    def __init__(self) -> None:
        self.used: set[int] = set()
        self.ops: dict[int, set[str]] = {}

    def use(self, value: Any, op: str | None = None, deep: bool = False) -> None:
        if isinstance(value, _Marked):
            self.used.add(id(value))
            if op is not None:
                self.ops.setdefault(id(value), set()).add(op)
        if deep:
            items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
            for item in items:
                self.use(item, deep=True)

    def was_used(self, value: Any) -> bool:
        return id(value) in self.used

    def did(self, value: Any, *ops: str) -> bool:
        return bool(self.ops.get(id(value), set()) & set(ops))


class _Marked:
    """A probe value: reading it (a key, an item, its text) tells the running probe."""


def _tell(value: Any, op: str | None = None) -> None:
    if _NOW.probe is not None:
        _NOW.probe.use(value, op)


class _MDict(dict, _Marked):  # type: ignore[type-arg]
    def __getitem__(self, key: Any) -> Any:
        value = dict.__getitem__(self, key)
        _tell(self, "object_access")
        _tell(value)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 - through __getitem__, which tells the probe


class _MList(list, _Marked):  # type: ignore[type-arg]
    def __getitem__(self, index: Any) -> Any:
        value = list.__getitem__(self, index)
        _tell(self, "array_access")
        _tell(value)
        return value

    def __iter__(self) -> Any:
        _tell(self, "array_access")
        return list.__iter__(self)


class _MStr(str, _Marked):
    def __getitem__(self, index: Any) -> Any:
        _tell(self, "array_access")
        return str.__getitem__(self, index)

    def __iter__(self) -> Any:
        # llama.cpp's engine cannot loop over a string: a template that does takes content as a list.
        _tell(self, "array_access")
        raise TypeError("a string is not iterable in a chat template")

    def __str__(self) -> str:
        _tell(self)
        return str.__str__(self)

    def __add__(self, other: Any) -> Any:
        _tell(self)
        return str.__add__(self, other)

    def __radd__(self, other: Any) -> Any:
        _tell(self)
        return str(other) + str.__str__(self)


def _mark(value: Any) -> Any:
    if isinstance(value, dict):
        return _MDict({key: _mark(item) for key, item in value.items()})
    if isinstance(value, list):
        return _MList(_mark(item) for item in value)
    if isinstance(value, str):
        return _MStr(value)
    return value


def _watched(function: Callable[..., Any], op: str) -> Callable[..., Any]:
    import functools

    # functools.wraps copies the function's __dict__, so filters that take the environment or
    # context first keep their jinja_pass_arg mark.
    @functools.wraps(function)
    def watched(*args: Any, **kwargs: Any) -> Any:
        if _NOW.probe is not None:
            for arg in args[:2]:  # the value filtered or tested (after an environment or context)
                if isinstance(arg, _Marked):
                    _NOW.probe.use(arg, op, deep=op == "string")
                    break
        return function(*args, **kwargs)

    return watched


_TOOL = {
    "name": "tool",
    "type": "function",
    "function": {
        "name": "tool1",
        "description": "Tool description",
        "parameters": {
            "type": "object",
            "properties": {"arg": {"type": "string", "description": "Arg description"}},
            "required": ["arg"],
        },
    },
}


def _tool_conversation(arguments: Any, calls: int = 1) -> list[dict[str, Any]]:
    call = [{"id": f"call0000{n + 1}", "type": "function", "function": {"name": "tool1", "arguments": arguments}} for n in range(calls)]
    return [
        {"role": "user", "content": "User message"},
        {"role": "assistant", "content": "", "tool_calls": call},
        {"role": "tool", "content": "Tool response", "tool_call_id": "call00001"},
        {"role": "assistant", "content": "The tool response was 'tool response'"},
        {"role": "user", "content": "User message"},
    ]


def probe_caps(program: Any) -> Caps:
    """What the template does with content, system turns, tool calls and their arguments."""
    caps = Caps()

    def attempt(messages: list[dict[str, Any]], tools: list[Any] | None = None) -> tuple[_Probe, Any, Any, bool, str]:
        marked_messages, marked_tools = _mark(messages), _mark(tools or [])
        probe = _Probe()
        _NOW.probe = probe
        _NOW.inputs = frozenset((*_containers(marked_messages), *_containers(marked_tools)))
        try:
            text = program.render(messages=marked_messages, tools=marked_tools, bos_token="", eos_token="", add_generation_prompt=True)
            ok = True
        except Exception:  # noqa: BLE001 - a probe that fails tells what the template cannot take
            text, ok = "", False
        finally:
            _NOW.probe = None
            _NOW.inputs = frozenset()
        return probe, marked_messages, marked_tools, ok, text

    marker = "STRING_MARKER"
    probe, messages, _tools, ok, text = attempt([{"role": "user", "content": marker}])
    content = dict.__getitem__(messages[0], "content")  # read unmarked: the probe is over
    as_array = probe.did(content, "selectattr", "array_access")
    caps.typed_content = as_array
    if not ok or (as_array and marker not in text):
        caps.string_content = False
    if probe.did(content, "test_is_string"):
        probe, messages, _tools, ok, _text_out = attempt([{"role": "user", "content": []}])
        if ok and probe.did(dict.__getitem__(messages[0], "content"), "selectattr", "array_access"):
            caps.typed_content = True

    probe, messages, _tools, ok, _text_out = attempt([{"role": "system", "content": "System message"}, {"role": "user", "content": "User message"}])
    if not probe.was_used(dict.__getitem__(messages[0], "content")):
        caps.system_role = False

    probe, messages, _tools, ok, _text_out = attempt(_tool_conversation({"arg": "value"}), [_TOOL])
    if ok:
        calls = dict.__getitem__(messages[1], "tool_calls")
        if not probe.was_used(calls):
            caps.tool_calls = False
            return caps
        arguments = dict.__getitem__(dict.__getitem__(list.__getitem__(calls, 0), "function"), "arguments")
        caps.object_arguments = probe.was_used(dict.__getitem__(arguments, "arg"))
    if not caps.object_arguments:
        probe, messages, _tools, ok, _text_out = attempt(_tool_conversation('{"arg": "value"}'), [_TOOL])
        if not ok or not probe.was_used(dict.__getitem__(messages[1], "tool_calls")):
            caps.tool_calls = False
    return caps


# ---------------------------------------------------------------------------------------------
# Messages as llama.cpp's server hands them to a template (common_chat_msg::to_json_oaicompat).


def _arguments_text(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))


def template_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """One OpenAI-shaped message in the shape templates get: content always present ("" for
    none), reasoning, name and call id when set, calls with their arguments as JSON text."""
    out: dict[str, Any] = {"role": message["role"]}
    content = message.get("content")
    if isinstance(content, list):
        out["content"] = [{"type": "text", "text": part.get("text", "")} for part in content if part.get("type", "text") == "text"] or ""
    else:
        out["content"] = content or ""
    for key in ("reasoning_content", "name", "tool_call_id"):
        if message.get(key):
            out[key] = message[key]
    calls = message.get("tool_calls") or []
    if calls:
        out["tool_calls"] = []
        for call in calls:
            function = call.get("function", {})
            arguments = _arguments_text(function.get("arguments", ""))
            entry: dict[str, Any] = {"type": "function", "function": {"name": function.get("name", ""), "arguments": arguments}}
            if call.get("id"):
                entry["id"] = call["id"]
            out["tool_calls"].append(entry)
    return out


def template_tools(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tools in OpenAI's function format, as llama.cpp's server hands them to a template."""
    return [
        {"type": "function", "function": {"name": tool["name"], "description": tool.get("description") or "", "parameters": tool.get("parameters") or {}}}
        for tool in tools
    ]


def _join_parts(parts: list[dict[str, Any]]) -> str:
    return "\n".join(part.get("text", "") for part in parts)


class Family:
    """Per-family message adjustments llama.cpp's server makes before rendering (common/chat.cpp
    and common/parsers/): chosen by markers in the template's source, in llama.cpp's order."""

    NONE, MINISTRAL3, GPT_OSS, LFM2, DEEPSEEK_V4, GEMMA4_OLD = "none", "ministral3", "gpt-oss", "lfm2", "deepseek-v4", "gemma4-old"

    @staticmethod
    def of(source: str) -> str:
        if "[SYSTEM_PROMPT]" in source and "[TOOL_CALLS]" in source and "[ARGS]" in source and "[CALL_ID]" not in source:
            return Family.MINISTRAL3
        if "<|channel|>" in source:
            return Family.GPT_OSS
        if ("<|tool_list_start|>" in source and "<|tool_list_end|>" in source) or (
            "List of tools: [" in source and "<|tool_list_start|>" not in source
        ):
            return Family.LFM2
        if "dsml_token" in source and "DSML" in source and "function_calls" not in source and "tool_calls" in source:
            return Family.DEEPSEEK_V4
        if "'<|tool_call>call:'" in source and "{#- OpenAI Chat Completions:" not in source:
            return Family.GEMMA4_OLD  # Gemma 4's first templates: tool results ride on the model's turn
        return Family.NONE


def _adjust(family: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if family == Family.GPT_OSS:  # reasoning goes in "thinking"; a call's turn carries no content
        for message in messages:
            if isinstance(message.get("reasoning_content"), str):
                message["thinking"] = message["reasoning_content"]
                if message.get("tool_calls"):
                    message.pop("content", None)
    elif family == Family.LFM2:
        for message in messages:
            if isinstance(message.get("reasoning_content"), str):
                message["thinking"] = message["reasoning_content"]
    elif family == Family.MINISTRAL3:  # system and assistant content as blocks, reasoning a "thinking" block
        for message in messages:
            if message["role"] not in ("system", "assistant"):
                continue
            blocks: list[Any] = []
            if isinstance(message.get("reasoning_content"), str):
                blocks.append({"type": "thinking", "thinking": message.pop("reasoning_content")})
            content = message.get("content")
            if isinstance(content, str):
                blocks.append({"type": "text", "text": content})
            elif isinstance(content, list):
                blocks.extend(content)
            message["content"] = blocks
    elif family == Family.DEEPSEEK_V4:
        _sort_tool_results(messages)
    elif family == Family.GEMMA4_OLD:
        return _gemma4_turns(messages)
    return messages


def _gemma4_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """An assistant turn with calls, the tool results after it and a plain answer after them become
    one assistant turn with `tool_responses` (llama.cpp's convert_tool_responses_gemma4)."""
    out: list[dict[str, Any]] = []
    index = 0
    while index < len(messages):
        message = messages[index]
        if message["role"] != "assistant" or not message.get("tool_calls"):
            out.append(message)
            index += 1
            continue
        calls = list(message["tool_calls"])
        reasoning = message.get("reasoning_content") if isinstance(message.get("reasoning_content"), str) else None
        index += 1
        responses = []
        while index < len(messages) and messages[index]["role"] == "tool":
            result = messages[index]
            content = result.get("content")
            if isinstance(content, str):
                with contextlib.suppress(json.JSONDecodeError):  # a result that is not JSON stays text
                    content = json.loads(content)
            name = calls[len(responses)]["function"].get("name", "") if len(responses) < len(calls) else ""
            responses.append({"name": name or result.get("tool_call_id", ""), "response": content})
            index += 1
        answer = None
        if index < len(messages) and messages[index]["role"] == "assistant" and not messages[index].get("tool_calls") and messages[index].get("content"):
            answer = messages[index]["content"]
            index += 1
        turn: dict[str, Any] = {"role": "assistant", "tool_calls": calls}
        if responses:
            turn["tool_responses"] = responses
        if answer is not None:
            turn["content"] = answer
        if reasoning is not None:
            turn["reasoning_content"] = reasoning
        out.append(turn)
    return out


def _sort_tool_results(messages: list[dict[str, Any]]) -> None:
    """DeepSeek V4 renders a run of tool results in the order of the calls they answer."""
    order: dict[str, int] = {}
    index = 0
    while index < len(messages):
        message = messages[index]
        if message["role"] == "assistant" and message.get("tool_calls"):
            order = {call["id"]: n for n, call in enumerate(message["tool_calls"]) if call.get("id")}
            index += 1
            continue
        if message["role"] not in ("user", "tool"):
            index += 1
            continue
        end = index
        positions = []
        while end < len(messages) and messages[end]["role"] in ("user", "tool"):
            if messages[end]["role"] == "tool":
                positions.append(end)
            end += 1
        if len(positions) > 1 and order:
            results = sorted((messages[p] for p in positions), key=lambda m: order.get(m.get("tool_call_id", ""), 0))
            for position, result in zip(positions, results, strict=True):
                messages[position] = result
        index = end


def _trim_contents(messages: list[dict[str, Any]]) -> None:
    for message in messages:
        if isinstance(message.get("content"), str):
            message["content"] = message["content"].strip()
        elif isinstance(message.get("content"), list):
            for part in message["content"]:
                part["text"] = part.get("text", "").strip()
        if isinstance(message.get("reasoning_content"), str):
            message["reasoning_content"] = message["reasoning_content"].strip()


def _patched(source: str) -> str:
    """llama.cpp's two source patches (a check GPT-OSS's and Mistral's templates fail on its own requests)."""
    if "<|channel|>" in source and "in message.content or" in source:
        source = source.replace(
            '{%- if "<|channel|>analysis<|message|>" in message.content or "<|channel|>final<|message|>" in message.content %}',
            "{%- if false %}",
        )
    if "[TOOL_CALLS]" in source and "if (message['content'] is none or" in source:
        source = source.replace(
            "{%- if (message['content'] is none or message['content'] == '' or message['content']|length == 0) and "
            "(message['tool_calls'] is not defined or message['tool_calls'] is none or message['tool_calls']|length == 0) %}",
            "{%- if false %}",
        )
    return source


@dataclass
class JinjaTemplate:
    """A Jinja chat template, rendered in the sandbox as llama.cpp's server renders it."""

    source: str
    bos_token: str = ""
    eos_token: str = ""
    add_bos: bool = False  # the tokenizer adds BOS: a BOS the template writes first is dropped
    add_eos: bool = False
    caps: Caps = field(init=False)
    family: str = field(init=False)

    def __post_init__(self) -> None:
        import jinja2

        self.source = _patched(self.source)
        try:
            self._program = _environment().from_string(self.source)
        except jinja2.TemplateError as error:
            raise TemplateError(f"the chat template does not parse: {error}") from None
        self.caps = probe_caps(self._program)
        self.family = Family.of(self.source)

    def messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The messages as this template gets them (llama.cpp's workarounds applied)."""
        out = [template_message(message) for message in messages]
        if "You have access to the following functions in JSONSchema format" in self.source:
            _trim_contents(out)  # StepFun: leftover whitespace sends it into reasoning loops
        only_string = self.caps.string_content and not self.caps.typed_content
        only_typed = self.caps.typed_content and not self.caps.string_content
        for message in out:
            if only_string and isinstance(message["content"], list):
                message["content"] = _join_parts(message["content"])
            elif only_typed and isinstance(message["content"], str):
                message["content"] = [{"type": "text", "text": message["content"]}]
        if self.family != Family.GPT_OSS:  # GPT-OSS has a developer role of its own
            for message in out:
                if message["role"] == "developer":
                    message["role"] = "system"
        if not self.caps.system_role and out and out[0]["role"] == "system":
            system = out.pop(0)
            if out:  # folded into the next turn, so the system prompt still reaches the model
                out[0]["content"] = f"{_flat(system['content'])}\n{_flat(out[0]['content'])}"
        if self.caps.object_arguments:
            for message in out:
                for call in message.get("tool_calls", ()):
                    call["function"]["arguments"] = _parsed_arguments(call["function"]["arguments"])
        return _adjust(self.family, out)

    def context(self, tools: Sequence[Mapping[str, Any]] | None, kwargs: Mapping[str, Any] | None, add_generation_prompt: bool) -> dict[str, Any]:
        """The template's variables besides `messages`."""
        kwargs = {**DEFAULT_KWARGS, **(kwargs or {})}
        thinking = kwargs.get("enable_thinking", True)
        if not isinstance(thinking, bool):
            raise RenderError(f"chat_template_kwargs.enable_thinking must be a boolean, got {json.dumps(thinking)}")
        now = datetime.datetime.now()
        context: dict[str, Any] = {"bos_token": self.bos_token, "eos_token": self.eos_token, "enable_thinking": thinking}
        if tools:
            context["tools"] = template_tools(tools)
        context.update(datetime=now.strftime("%b %d %Y"), date_string=now.strftime("%d %b %Y"))
        context.update(kwargs)
        if add_generation_prompt:
            context["add_generation_prompt"] = True
        effort = context.get("reasoning_effort")
        if isinstance(effort, str) and effort:
            context["reasoning_strength"] = effort
        preserve = context.get("preserve_reasoning")
        if isinstance(preserve, bool):
            context.update(preserve_thinking=preserve, clear_thinking=not preserve, truncate_history_thinking=not preserve, drop_thinking=not preserve)
        return context

    def __call__(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        add_generation_prompt: bool = True,
    ) -> Rendered:
        context = self.context(tools, kwargs, add_generation_prompt)
        prepared = self.messages(messages)
        _NOW.inputs = frozenset((*_containers(prepared), *_containers(context)))
        try:
            prompt = self._program.render(messages=prepared, **context)
        except RenderError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever a template does wrong is the request's 400, named
            raise RenderError(f"{type(error).__name__}: {error}") from None
        finally:
            _NOW.inputs = frozenset()
        if self.family == Family.GPT_OSS and not add_generation_prompt:
            head, found, tail = prompt.rpartition("<|return|>")
            prompt = head + "<|end|>" + tail if found else prompt
        if self.add_bos and self.bos_token and prompt.startswith(self.bos_token):
            prompt = prompt[len(self.bos_token) :]
        if self.add_eos and self.eos_token and prompt.endswith(self.eos_token):
            prompt = prompt[: -len(self.eos_token)]
        return Rendered(prompt, (self.eos_token,) if self.eos_token else (), False)


def _flat(content: Any) -> str:
    return content if isinstance(content, str) else _join_parts(content)


def _parsed_arguments(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except json.JSONDecodeError as error:
        raise RenderError(f"tool call arguments are not JSON: {error}") from None


def check_system(render: Formatter, name: str) -> None:
    """Refuse a template that renders a system message to nothing."""
    try:
        text = render([{"role": "system", "content": _PROBE}, {"role": "user", "content": "hi"}]).prompt
    except Exception as error:  # noqa: BLE001 - a template that raises on a system turn cannot carry one
        raise TemplateError(f"chat format {name!r} cannot carry a system prompt: {error}") from None
    if _PROBE not in text:
        raise TemplateError(f"chat format {name!r} drops the system prompt; set models[].chat_format to one that carries it")


def named_template(name: str) -> Formatter:
    """A named chat format, checked to carry the system prompt (no model file needed)."""
    render = _named(name)
    check_system(render, name)
    return render


def template_file(path: str) -> str:
    """A models[].chat_template_file's text (TemplateError when it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as error:
        raise TemplateError(f"chat_template_file {path!r} cannot be read: {error}") from None


def file_template(path: str) -> Formatter:
    """A models[].chat_template_file checked to parse and carry the system prompt (no model file needed)."""
    render = JinjaTemplate(template_file(path))
    check_system(render, path)
    return render


def template_for(llama: Any, template_path: str | None = None) -> Formatter:
    """The template of a loaded Llama: models[].chat_template_file when set, else its resolved
    chat_format (a name, or one of its GGUF's templates)."""
    name = llama.chat_format or "llama-2"
    render: Formatter
    if template_path is not None or name.startswith("chat_template."):
        model = model_of(llama)
        if template_path is not None:
            source, name = template_file(template_path), template_path
        else:
            key = "tokenizer.chat_template" if name == "chat_template.default" else f"tokenizer.{name}"
            source = llama.metadata[key]
        eos, bos = model.token_eos(), model.token_bos()
        render = JinjaTemplate(
            source,
            bos_token=model.token_get_text(bos) if bos != -1 else "",
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            add_bos=model.add_bos_token(),
            add_eos=model.add_eos_token(),
        )
    else:
        render = _named(name)
    check_system(render, name)
    return render


def template_stops(rendered: Rendered, extra: Sequence[str]) -> list[str]:
    """The stop strings of a rendered prompt: its template's end-of-turn strings, then the request's."""
    return [text for text in (*rendered.stop, *extra) if text]


__all__ = [
    "RESERVED_KWARGS",
    "Caps",
    "Formatter",
    "JinjaTemplate",
    "RenderError",
    "Rendered",
    "TemplateError",
    "check_system",
    "file_template",
    "named_template",
    "template_for",
]
