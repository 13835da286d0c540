"""Native tool-call outputs per model family, and what llama-server reports for each (issue 26's parse proof).

Each case is a chat template of the llama-cpp-python sdist hal0 runs (image/llama-templates), the tools
of the request, and a text as that family's model writes it after the generation prompt: one call, two
parallel calls, text then a call, reasoning then a call (thinking families), malformed output, plain
text, and a few family extras. The texts follow the syntax each template renders for an assistant turn
with tool calls (checked by rendering it: image/llama-chat-parse with add_generation_prompt false) and
the one llama.cpp's parsers expect (common/chat.cpp, chat-auto-parser*, parsers/).

What llama-server reports for the text is recorded in native_parse_expected.json by running
image/llama-chat-parse, which makes the calls the server makes (common_chat_templates_init,
common_chat_templates_apply with the request's tools, then common_chat_parse on the text, not partial,
not streamed, tool_choice "auto", reasoning_format the server's default). llama-server itself cannot be made to produce a given
text: it refuses a `grammar` together with tools. Re-record after changing a case with
`python tests/tools/record_native_parse.py`; test_native_parse.py checks the recording still holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPECTED_PATH = Path(__file__).with_name("native_parse_expected.json")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a time zone.",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}
TOOLS = [WEATHER, TIME]

# The arguments every call case uses, written by each family in its own way.
PARIS = {"city": "Paris", "unit": "celsius"}
TOKYO = {"zone": "Asia/Tokyo"}
THOUGHT = "The user wants the weather in Paris. I should call get_weather with city Paris."
ANSWER = "Paris is the capital of France."


def _j(value: Any) -> str:
    return json.dumps(value)


@dataclass(frozen=True)
class Case:
    family: str
    kind: str
    template: str  # a file name in image/llama-templates' folder
    text: str
    tools: list[dict[str, Any]] = field(default_factory=lambda: TOOLS)

    @property
    def id(self) -> str:
        return f"{self.family}/{self.kind}"


def _family(family: str, template: str, texts: dict[str, str]) -> list[Case]:
    return [Case(family, kind, template, text) for kind, text in texts.items()]


def _tool_call_tags(name: str, args: dict[str, Any]) -> str:
    # Qwen 2.5 / Qwen 3 / Hermes: a JSON object in <tool_call> tags, name first (their templates' order)
    return f'<tool_call>\n{{"name": "{name}", "arguments": {_j(args)}}}\n</tool_call>'


_QWEN_CALL = _tool_call_tags("get_weather", PARIS)
_QWEN_TIME = _tool_call_tags("get_time", TOKYO)


def _tagged_family(family: str, template: str) -> list[Case]:
    return _family(family, template, {
        "one_call": _QWEN_CALL,
        "parallel_calls": f"{_QWEN_CALL}\n{_QWEN_TIME}",
        "text_then_call": f"Let me check the weather for you.\n{_QWEN_CALL}",
        "malformed": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"\n</tool_call>',
        "plain_text": ANSWER,
        "unknown_tool": _tool_call_tags("get_stock_price", {"ticker": "ACME"}),
    })


def _llama3_call(name: str, args: dict[str, Any]) -> str:
    # Llama 3.1/3.2/3.3 with custom tools: a bare JSON object with "parameters" (the template's own words)
    return f'{{"name": "{name}", "parameters": {_j(args)}}}'


def _llama3_family(family: str, template: str) -> list[Case]:
    call = _llama3_call("get_weather", PARIS)
    return _family(family, template, {
        "one_call": call,
        # the template refuses several calls in one turn; a model that makes them writes one per line
        "parallel_calls": f"{call}\n{_llama3_call('get_time', TOKYO)}",
        "text_then_call": f"Let me check the weather for you.\n{call}",
        "malformed": '{"name": "get_weather", "parameters": {"city": "Paris"',
        "plain_text": ANSWER,
        "python_tag_call": f"<|python_tag|>{call}",
    })


def _nemo_call(name: str, args: dict[str, Any], call_id: str) -> str:
    # Mistral Nemo renders the function object then a 9-character id
    return f'{{"name": "{name}", "arguments": {_j(args)}, "id": "{call_id}"}}'


_NEMO_ONE = _nemo_call("get_weather", PARIS, "a1b2c3d4e")
_NEMO_TWO = _nemo_call("get_time", TOKYO, "f5g6h7i8j")

_FIRE_ONE = f'{{"name": "get_weather", "arguments": {_j(PARIS)}}}'
_FIRE_TWO = f'{{"name": "get_time", "arguments": {_j(TOKYO)}}}'

_GRANITE_ONE = f'<|tool_call|>[{_FIRE_ONE}]'


def _r1_call(name: str, args: dict[str, Any], first: bool) -> str:
    # DeepSeek R1 (distills): the template's own markers, arguments in a ```json block
    begin = "<｜tool▁calls▁begin｜>" if first else "\n"
    return f"{begin}<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{_j(args)}\n```<｜tool▁call▁end｜>"


_R1_ONE = _r1_call("get_weather", PARIS, True) + "<｜tool▁calls▁end｜>"
_R1_TWO = _r1_call("get_weather", PARIS, True) + _r1_call("get_time", TOKYO, False) + "<｜tool▁calls▁end｜>"


def _r1_family(family: str, template: str) -> list[Case]:
    # The generation prompt ends in "<think>\n": the model's text starts inside its reasoning.
    return _family(family, template, {
        "one_call": f"\n</think>\n\n{_R1_ONE}",
        "parallel_calls": f"\n</think>\n\n{_R1_TWO}",
        "text_then_call": f"\n</think>\n\nLet me check the weather for you.{_R1_ONE}",
        "reasoning_then_call": f"{THOUGHT}\n</think>\n\n{_R1_ONE}",
        "malformed": f"{THOUGHT}\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
                     '{"city": "Paris"\n```',
        "plain_text": f"{THOUGHT}\n</think>\n\n{ANSWER}",
    })


_QWEN3 = "Qwen-Qwen3-0.6B.jinja"

CASES: list[Case] = [
    *_tagged_family("qwen2.5", "Qwen-Qwen2.5-7B-Instruct.jinja"),
    *_tagged_family("qwen3", _QWEN3),
    *_family("qwen3", _QWEN3, {
        "reasoning_then_call": f"<think>\n{THOUGHT}\n</think>\n\n{_QWEN_CALL}",
        "reasoning_then_parallel": f"<think>\n{THOUGHT}\n</think>\n\n{_QWEN_CALL}\n{_QWEN_TIME}",
        "reasoning_then_text": f"<think>\n{THOUGHT}\n</think>\n\n{ANSWER}",
        "empty_reasoning_then_call": f"<think>\n\n</think>\n\n{_QWEN_CALL}",
        "unclosed_reasoning": f"<think>\n{THOUGHT}",
    }),
    *_tagged_family("hermes-2-pro", "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja"),
    *_tagged_family("hermes-3", "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja"),
    *_llama3_family("llama-3.1", "meta-llama-Llama-3.1-8B-Instruct.jinja"),
    *_llama3_family("llama-3.2", "meta-llama-Llama-3.2-3B-Instruct.jinja"),
    *_llama3_family("llama-3.3", "meta-llama-Llama-3.3-70B-Instruct.jinja"),
    *_family("mistral-nemo", "mistralai-Mistral-Nemo-Instruct-2407.jinja", {
        "one_call": f"[TOOL_CALLS][{_NEMO_ONE}]",
        "parallel_calls": f"[TOOL_CALLS][{_NEMO_ONE}, {_NEMO_TWO}]",
        "text_then_call": f"Let me check the weather for you.[TOOL_CALLS][{_NEMO_ONE}]",
        "malformed": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}',
        "plain_text": ANSWER,
        "call_without_id": f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {_j(PARIS)}}}]',
    }),
    *_family("firefunction-v2", "fireworks-ai-llama-3-firefunction-v2.jinja", {
        "one_call": f" functools[{_FIRE_ONE}]",
        "parallel_calls": f" functools[{_FIRE_ONE}, {_FIRE_TWO}]",
        "text_then_call": f"Let me check the weather for you. functools[{_FIRE_ONE}]",
        "malformed": ' functools[{"name": "get_weather", "arguments": {"city": "Paris"}',
        "plain_text": ANSWER,
    }),
    *_family("granite-3.3", "ibm-granite-granite-3.3-2B-Instruct.jinja", {
        "one_call": _GRANITE_ONE,
        "parallel_calls": f"<|tool_call|>[{_FIRE_ONE}, {_FIRE_TWO}]",
        "text_then_call": f"Let me check the weather for you.{_GRANITE_ONE}",
        "reasoning_then_call": f"<think>{THOUGHT}</think>{_GRANITE_ONE}",
        "reasoning_then_text": f"<think>{THOUGHT}</think><response>{ANSWER}</response>",
        "malformed": '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}',
        "plain_text": ANSWER,
    }),
    *_r1_family("deepseek-r1-distill-qwen", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"),
    *_r1_family("deepseek-r1-distill-llama", "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja"),
]


# Family extras with llama.cpp's dedicated parsers (common/parsers/) or their own markers.
_CODER_ONE = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>"
_CODER_TWO = "<tool_call>\n<function=get_time>\n<parameter=zone>\nAsia/Tokyo\n</parameter>\n</function>\n</tool_call>"
# gpt-oss (harmony): the generation prompt is "<|start|>assistant"; a call names its recipient
_OSS_ONE = f"<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{_j(PARIS)}<|call|>"
_OSS_THINK = f"<|channel|>analysis<|message|>{THOUGHT}<|end|><|start|>assistant"
_SMALL_ONE = f"[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{_j(PARIS)}"
_SMALL_TWO = f"[TOOL_CALLS]get_time[CALL_ID]f5g6h7i8j[ARGS]{_j(TOKYO)}"
_MINISTRAL_ONE = f"[TOOL_CALLS]get_weather[ARGS]{_j(PARIS)}"
_V31_ONE = f"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{_j(PARIS)}<｜tool▁call▁end｜><｜tool▁calls▁end｜>"
_V31_TWO = (f"<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{_j(PARIS)}<｜tool▁call▁end｜>"
            f"<｜tool▁call▁begin｜>get_time<｜tool▁sep｜>{_j(TOKYO)}<｜tool▁call▁end｜><｜tool▁calls▁end｜>")
_KIMI_ONE = (f"<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{_j(PARIS)}<|tool_call_end|>"
             "<|tool_calls_section_end|>")
_KIMI_TWO = (f"<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{_j(PARIS)}<|tool_call_end|>"
             f"<|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>{_j(TOKYO)}<|tool_call_end|><|tool_calls_section_end|>")

EXTRA_CASES: list[Case] = [
    *_family("qwen3-coder", "Qwen3-Coder.jinja", {
        "one_call": _CODER_ONE,
        "parallel_calls": f"{_CODER_ONE}\n{_CODER_TWO}",
        "text_then_call": f"Let me check the weather for you.\n{_CODER_ONE}",
        "malformed": "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</function>\n</tool_call>",
        "plain_text": ANSWER,
    }),
    *_family("gpt-oss", "openai-gpt-oss-120b.jinja", {
        "one_call": _OSS_ONE,
        "parallel_calls": f"{_OSS_ONE}<|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{_j(TOKYO)}<|call|>",
        "text_then_call": f"<|channel|>commentary<|message|>Let me check the weather for you.<|end|><|start|>assistant{_OSS_ONE}",
        "reasoning_then_call": f"{_OSS_THINK}{_OSS_ONE}",
        "reasoning_then_text": f"{_OSS_THINK}<|channel|>final<|message|>{ANSWER}",
        "malformed": f"{_OSS_THINK}<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{{\"city\": \"Paris\"",
        "plain_text": f"<|channel|>final<|message|>{ANSWER}",
    }),
    *_family("mistral-small-3.2", "Mistral-Small-3.2-24B-Instruct-2506.jinja", {
        "one_call": _SMALL_ONE,
        "parallel_calls": f"{_SMALL_ONE}{_SMALL_TWO}",
        "text_then_call": f"Let me check the weather for you.{_SMALL_ONE}",
        "malformed": '[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]{"city": "Paris"',
        "plain_text": ANSWER,
    }),
    *_family("ministral-3-reasoning", "mistralai-Ministral-3-14B-Reasoning-2512.jinja", {
        "one_call": _MINISTRAL_ONE,
        "parallel_calls": f"{_MINISTRAL_ONE}[TOOL_CALLS]get_time[ARGS]{_j(TOKYO)}",
        "text_then_call": f"Let me check the weather for you.{_MINISTRAL_ONE}",
        "reasoning_then_call": f"[THINK]{THOUGHT}[/THINK]{_MINISTRAL_ONE}",
        "reasoning_then_text": f"[THINK]{THOUGHT}[/THINK]{ANSWER}",
        "malformed": '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"',
        "plain_text": ANSWER,
    }),
    # functionary v3.2: the generation prompt ends in ">>>"; the model names the recipient (a tool or "all")
    *_family("functionary-v3.2", "meetkai-functionary-medium-v3.2.jinja", {
        "one_call": f"get_weather\n{_j(PARIS)}",
        "parallel_calls": f"get_weather\n{_j(PARIS)}>>>get_time\n{_j(TOKYO)}",
        "text_then_call": f"all\nLet me check the weather for you.>>>get_weather\n{_j(PARIS)}",
        "malformed": 'get_weather\n{"city": "Paris"',
        "plain_text": f"all\n{ANSWER}",
    }),
    # DeepSeek V3.1 thinking: the generation prompt ends in "<think>"
    *_family("deepseek-v3.1", "deepseek-ai-DeepSeek-V3.1.jinja", {
        "one_call": f"</think>{_V31_ONE}",
        "parallel_calls": f"</think>{_V31_TWO}",
        "text_then_call": f"</think>Let me check the weather for you.{_V31_ONE}",
        "reasoning_then_call": f"{THOUGHT}</think>{_V31_ONE}",
        "malformed": f"{THOUGHT}</think><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{{\"city\": \"Paris\"",
        "plain_text": f"{THOUGHT}</think>{ANSWER}",
    }),
    *_family("kimi-k2", "moonshotai-Kimi-K2.jinja", {
        "one_call": _KIMI_ONE,
        "parallel_calls": _KIMI_TWO,
        "text_then_call": f"Let me check the weather for you.{_KIMI_ONE}",
        "malformed": '<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris"',
        "plain_text": ANSWER,
    }),
]
CASES += EXTRA_CASES


def expected() -> dict[str, Any]:
    """The recorded reference result per case id (see the module doc)."""
    if not EXPECTED_PATH.exists():
        return {}
    return json.loads(EXPECTED_PATH.read_text(encoding="utf-8"))


def run_reference(binary: Path, templates: Path, cases: list[Case], timeout: float = 300) -> dict[str, dict[str, Any]]:
    """What image/llama-chat-parse reports for each case, by case id: its "format" and "result", or "error"."""
    import subprocess

    requests = [json.dumps({"template": (templates / case.template).read_text(encoding="utf-8"), "tools": case.tools, "text": case.text}) for case in cases]
    done = subprocess.run([str(binary)], input="\n".join(requests) + "\n", capture_output=True, text=True, timeout=timeout, check=True)
    lines = done.stdout.splitlines()
    assert len(lines) == len(cases), f"{binary} answered {len(lines)} lines for {len(cases)} cases:\n{done.stderr[-3000:]}"
    return {case.id: json.loads(line) for case, line in zip(cases, lines, strict=True)}


def recorded_form(report: dict[str, Any]) -> dict[str, Any]:
    """The part of the reference's report a case records: the parse, or the error llama-server fails the request with."""
    if "error" in report:
        return {"format": report.get("format"), "error": report["error"], "stage": report["stage"]}
    return {"format": report["format"], **report["result"]}


def template_form(report: dict[str, Any]) -> dict[str, Any]:
    """What the reference says of a template with the tools: the lead's data for lazy grammars and markers."""
    keys = ("format", "generation_prompt", "grammar_lazy", "grammar_triggers", "preserved_tokens", "additional_stops",
            "supports_thinking", "thinking_start_tag", "thinking_end_tags")
    return {key: report[key] for key in keys if key in report}
