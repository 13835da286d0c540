"""Native tool calls (inference/native_tools.py): the call syntax learned from the sdist's real chat
templates (build/llama-templates, made by image/llama-templates), the streaming parser on what
those families' models write, the call grammar on the tiny model's vocabulary, and the lazy
constraint that waits for a call to open."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hal0.inference.constraint import Constraints
from hal0.inference.native_tools import NativeParser, NotNative, after_reasoning, derive_syntax, native_grammar, parse_reply, tool_syntax
from hal0.inference.task import Task, TextDelta, Tool, ToolCallDelta
from hal0.inference.templates import JinjaTemplate, TemplateError, named_template

ROOT = Path(__file__).resolve().parents[2]

# Families whose calls are a name and one JSON object of arguments: hal0 speaks their syntax.
NATIVE = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": '<tool_call>\n{"name": "',
    "Qwen-Qwen3-0.6B.jinja": '<tool_call>\n{"name": "',
    "Qwen-QwQ-32B.jinja": '<tool_call>\n{"name": "',
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": '<tool_call>\n{"name": "',
    "meta-llama-Llama-3.1-8B-Instruct.jinja": '{"name": "',
    "meta-llama-Llama-3.3-70B-Instruct.jinja": '{"name": "',
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": '[TOOL_CALLS][{"name": "',
    "mistralai-Ministral-3-14B-Reasoning-2512.jinja": "[TOOL_CALLS]",
    "fireworks-ai-llama-3-firefunction-v2.jinja": 'functools[{"name": "',
    "ibm-granite-granite-4.0.jinja": '<tool_call>\n{"name": "',
    "llama-cpp-deepseek-r1.jinja": "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>",
    "deepseek-ai-DeepSeek-V3.1.jinja": "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>",
    "moonshotai-Kimi-K2.jinja": "<|tool_calls_section_begin|><|tool_call_begin|>functions.",
}
# And those that keep the generic format, with the reason.
GENERIC = {
    "Qwen3-Coder.jinja": "one JSON object",  # <parameter=...> XML
    "GLM-4.6.jinja": "one JSON object",  # <arg_key>/<arg_value>
    "google-gemma-4-31B-it.jinja": "one JSON object",  # call:name{key:<|"|>value<|"|>}
    "openai-gpt-oss-120b.jinja": "harmony",
    "google-gemma-2-2b-it.jinja": "does not render tool calls",
    "microsoft-Phi-3.5-mini-instruct.jinja": "drops the call's name",
}

WEATHER = Tool("get_weather", "Weather of a city", {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"]})
CLOCK = Tool("get_time", "Time in a zone", {"type": "object", "properties": {"tz": {"enum": ["CET", "UTC"]}}, "required": ["tz"]})


@pytest.fixture(scope="module")
def templates() -> Path:
    out = subprocess.run([str(ROOT / "image/llama-templates")], capture_output=True, text=True, timeout=900, check=True)
    return Path(out.stdout.strip())


def source(templates: Path, name: str) -> str:
    return (templates / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(NATIVE))
def test_syntax_is_learned_from_the_template(templates: Path, name: str) -> None:
    syntax = derive_syntax(JinjaTemplate(source(templates, name)))
    assert syntax.open == NATIVE[name]
    assert syntax.trigger.text  # something opens a call


@pytest.mark.parametrize("name", sorted(GENERIC))
def test_templates_without_a_name_and_json_syntax_keep_the_generic_format(templates: Path, name: str) -> None:
    render = JinjaTemplate(source(templates, name))
    with pytest.raises(NotNative, match=GENERIC[name]):
        derive_syntax(render)
    assert tool_syntax(render, None) is None  # the default falls back to generic
    with pytest.raises(TemplateError, match="tool_format is native"):
        tool_syntax(render, "native")  # asked for explicitly, it is refused at load, naming the field


def test_generic_on_request_and_named_formats(templates: Path) -> None:
    qwen = JinjaTemplate(source(templates, "Qwen-Qwen2.5-7B-Instruct.jinja"))
    assert tool_syntax(qwen, "generic") is None
    assert tool_syntax(qwen, None) is not None
    with pytest.raises(TemplateError, match="named chat_format"):
        tool_syntax(named_template("chatml"), "native")


def test_single_call_templates_and_parallel_ones(templates: Path) -> None:
    assert derive_syntax(JinjaTemplate(source(templates, "meta-llama-Llama-3.1-8B-Instruct.jinja"))).between is None  # it raises on two
    qwen = derive_syntax(JinjaTemplate(source(templates, "Qwen-Qwen2.5-7B-Instruct.jinja")))
    assert qwen.between == '}\n</tool_call>\n<tool_call>\n{"name": "'
    assert qwen.close == "}\n</tool_call>"


def events_of(parser: NativeParser, pieces: list[str]) -> list[TextDelta | ToolCallDelta]:
    out: list[TextDelta | ToolCallDelta] = []
    for piece in pieces:
        out.extend(parser.feed(piece))
    out.extend(parser.flush())
    return out


def summary(events: list[TextDelta | ToolCallDelta]) -> dict[str, Any]:
    content, calls = "", []
    for event in events:
        if isinstance(event, TextDelta):
            content += event.text
        elif event.name is not None:
            assert event.arguments == "" and event.id
            calls.append([event.name, ""])
        else:
            calls[event.index][1] += event.arguments
    return {"content": content, "calls": [(name, json.loads(arguments)) for name, arguments in calls]}


QWEN_CASES = [
    ("Paris is sunny.", {"content": "Paris is sunny.", "calls": []}),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>', {"content": "", "calls": [("get_weather", {"city": "Paris"})]}),
    (
        'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>',
        {"content": "Checking.\n", "calls": [("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]},  # as llama-server
    ),
    ('<tool_call>{"name":"get_weather","arguments":{"city":"a}b\\"c"}}</tool_call>', {"content": "", "calls": [("get_weather", {"city": 'a}b"c'})]}),
    # Opened, then not a call: nothing is lost, it is text.
    ("<tool_call> is how I would call a tool", {"content": "<tool_call> is how I would call a tool", "calls": []}),
    ('<tool_call>\n{"name": "get_wea', {"content": '<tool_call>\n{"name": "get_wea', "calls": []}),
]


@pytest.mark.parametrize(("text", "expected"), QWEN_CASES)
def test_parser_reads_the_same_however_the_text_is_split(templates: Path, text: str, expected: dict[str, Any]) -> None:
    syntax = derive_syntax(JinjaTemplate(source(templates, "Qwen-Qwen2.5-7B-Instruct.jinja")))
    whole = summary(events_of(NativeParser(syntax), [text]))
    by_char = summary(events_of(NativeParser(syntax), list(text)))
    assert whole == by_char == expected


def test_streamed_call_names_come_first_then_argument_fragments(templates: Path) -> None:
    syntax = derive_syntax(JinjaTemplate(source(templates, "Qwen-Qwen2.5-7B-Instruct.jinja")))
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    events = events_of(NativeParser(syntax), list(text))
    calls = [event for event in events if isinstance(event, ToolCallDelta)]
    assert calls[0].name == "get_weather" and calls[0].arguments == ""
    assert len(calls) > 5 and all(call.name is None and call.index == 0 for call in calls[1:])  # fragments, as they came
    assert not [event for event in events if isinstance(event, TextDelta)]


def test_llama3_bare_json_call(templates: Path) -> None:
    llama3 = source(templates, "meta-llama-Llama-3.1-8B-Instruct.jinja")
    call = parse_reply(llama3, [], '{"name": "get_weather", "parameters": {"city": "Paris"}}')
    assert call["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris"}}] and call["content"] == ""
    after_text = parse_reply(llama3, [], 'Use {"name": "x", "parameters": {}}')  # as llama-server: text, then a call
    assert after_text["content"] == "Use " and after_text["tool_calls"] == [{"name": "x", "arguments": {}}]
    assert parse_reply(llama3, [], '{"a": 1}') == {"content": '{"a": 1}', "reasoning_content": "", "tool_calls": []}


def test_reasoning_before_a_call_is_split_out(templates: Path) -> None:
    qwen3 = source(templates, "Qwen-Qwen3-0.6B.jinja")
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    reply = parse_reply(qwen3, [], f"<think>\nThe user wants weather.\n</think>\n\n{call}")
    assert reply == {"content": "", "reasoning_content": "The user wants weather.\n", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}


def test_mistral_ids_and_parallel_calls(templates: Path) -> None:
    nemo = source(templates, "mistralai-Mistral-Nemo-Instruct-2407.jinja")
    text = ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}, "id": "a1b2c3d4e"}, '
            '{"name": "get_time", "arguments": {"tz": "UTC"}, "id": "z9y8x7w6v"}]')
    expected = [{"name": "get_weather", "arguments": {"city": "Rome"}}, {"name": "get_time", "arguments": {"tz": "UTC"}}]
    assert parse_reply(nemo, [], text)["tool_calls"] == expected


# ---------------------------------------------------------------------------------------------
# The grammar and the lazy constraint on the tiny model's vocabulary.



# The tiny vocabulary has a token per byte (id 5 + byte), and these bytes also as whole-word pieces,
# which llguidance takes as their canonical tokens.
WORD_PIECES = {ord(" "): 261, ord("0"): 265, ord("e"): 269, ord("t"): 270, ord("o"): 271, ord("n"): 272}


def byte_tokens(text: str) -> list[int]:
    return [WORD_PIECES.get(byte, 5 + byte) for byte in text.encode()]


def allowed(constraint: Any, n_vocab: int) -> set[int]:
    import numpy

    logits = numpy.zeros(n_vocab, dtype=numpy.float32)
    constraint.mask(logits)
    return {int(token) for token in numpy.flatnonzero(logits == 0)}


def test_required_grammar_admits_a_valid_call_and_nothing_else(templates: Path, constraints: Constraints) -> None:
    syntax = derive_syntax(JinjaTemplate(source(templates, "Qwen-Qwen2.5-7B-Instruct.jinja")))
    task = Task(messages=({"role": "user", "content": "hi"},), tools=(WEATHER, CLOCK), tool_choice="required")
    grammar = native_grammar(syntax, task, constraints.specials())
    good = '<tool_call>\n{"name": "get_time", "arguments": {"tz": "CET"}}\n</tool_call>'
    constraint = constraints.start(grammar)
    for token in byte_tokens(good):
        assert token in allowed(constraint, constraints.n_vocab)
        constraint.accept(token)
    assert constraint.finished or constraint.accepting
    for bad in ('<tool_call>\n{"name": "get_time", "arguments": {"tz": "PST"}}', '<tool_call>\n{"name": "rm_rf"', "Sure"):
        constraint = constraints.start(grammar)
        tokens = byte_tokens(bad)
        refused = False
        for token in tokens:
            if token not in allowed(constraint, constraints.n_vocab):
                refused = True
                break
            constraint.accept(token)
        assert refused, bad


def test_named_tool_allows_only_that_tool(templates: Path, constraints: Constraints) -> None:
    syntax = derive_syntax(JinjaTemplate(source(templates, "Qwen-Qwen2.5-7B-Instruct.jinja")))
    task = Task(messages=({"role": "user", "content": "hi"},), tools=(WEATHER, CLOCK), tool_choice="get_weather")
    constraint = constraints.start(native_grammar(syntax, task, constraints.specials()))
    for token in byte_tokens('<tool_call>\n{"name": "get_'):
        constraint.accept(token)
    assert allowed(constraint, constraints.n_vocab) == set(byte_tokens("w"))


def test_lazy_constraint_is_free_until_a_call_opens(templates: Path, constraints: Constraints) -> None:
    syntax = derive_syntax(JinjaTemplate(source(templates, "Qwen-Qwen2.5-7B-Instruct.jinja")))
    task = Task(messages=({"role": "user", "content": "hi"},), tools=(WEATHER, CLOCK))
    lazy = constraints.lazy(native_grammar(syntax, task, constraints.specials()), syntax.trigger.find_bytes, after_reasoning(None))
    for token in byte_tokens("Let me look <tool"):
        assert len(allowed(lazy, constraints.n_vocab)) == constraints.n_vocab  # free text: nothing masked
        lazy.accept(token)
    for token in byte_tokens("_call>\n"):
        lazy.accept(token)
    assert lazy.state == "active"
    assert allowed(lazy, constraints.n_vocab) == set(byte_tokens("{"))  # the template's call, from here on
    for token in byte_tokens('{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'):
        assert token in allowed(lazy, constraints.n_vocab)
        lazy.accept(token)
    assert lazy.accepting


def test_lazy_constraint_ignores_a_call_inside_the_reasoning(templates: Path, constraints: Constraints) -> None:
    syntax = derive_syntax(JinjaTemplate(source(templates, "Qwen-Qwen3-0.6B.jinja")))
    task = Task(messages=({"role": "user", "content": "hi"},), tools=(WEATHER,))
    lazy = constraints.lazy(native_grammar(syntax, task, constraints.specials()), syntax.trigger.find_bytes, after_reasoning(None))
    for token in byte_tokens("<think>maybe <tool_call> here</think>"):
        lazy.accept(token)
    assert lazy.state == "waiting"
    for token in byte_tokens("\n<tool_call>"):
        lazy.accept(token)
    assert lazy.state == "active"


def test_lazy_constraint_that_cannot_follow_the_opening_stays_free(templates: Path, constraints: Constraints) -> None:
    syntax = derive_syntax(JinjaTemplate(source(templates, "meta-llama-Llama-3.1-8B-Instruct.jinja")))
    task = Task(messages=({"role": "user", "content": "hi"},), tools=(WEATHER,))
    grammar = native_grammar(syntax, task, constraints.specials())
    spaced = constraints.lazy(grammar, syntax.trigger.find_bytes, after_reasoning(None))
    for token in byte_tokens('{ "name"'):  # a call by its JSON, but not as the template writes it
        spaced.accept(token)
    assert spaced.state == "free"  # left free (the parser reads the reply), never a failed generation
    exact = constraints.lazy(grammar, syntax.trigger.find_bytes, after_reasoning(None))
    for token in byte_tokens('{"name"'):
        exact.accept(token)
    assert exact.state == "active"
    late = constraints.lazy(grammar, syntax.trigger.find_bytes, after_reasoning(None))
    for token in byte_tokens('Use {"na'):
        late.accept(token)
    assert late.state == "waiting"
    for token in byte_tokens('me"'):  # after text too, as llama-server parses it
        late.accept(token)
    assert late.state == "active"


def test_required_after_a_reasoning_block_the_prompt_opened(templates: Path, constraints: Constraints) -> None:
    """DeepSeek-R1's generation prompt opens <think>: a forced call comes after the model's thought."""
    syntax = derive_syntax(JinjaTemplate(source(templates, "Qwen-Qwen2.5-7B-Instruct.jinja")))
    task = Task(messages=({"role": "user", "content": "hi"},), tools=(WEATHER,), tool_choice="required")
    constraint = constraints.start(native_grammar(syntax, task, constraints.specials(), reasoning="</think>"))
    for token in byte_tokens("Paris <b>, hmm</think>\n"):
        assert token in allowed(constraint, constraints.n_vocab)
        constraint.accept(token)
    after = allowed(constraint, constraints.n_vocab)
    assert set(byte_tokens("<")) <= after <= set(byte_tokens("< \t\r\n")) | {5 + ord(" ")}  # then the call, and only the call
