"""The message converters, in process: Responses input items and Anthropic turns -> the chat messages a Task
holds, and a Task's chat messages -> what the chat template sees (tools described, tool turns in hal0's
generic format)."""

from __future__ import annotations

import json

from hal0.api import messages, responses
from hal0.inference.task import Task, Tool
from hal0.inference.templates import render_gemma
from hal0.inference.toolcalls import tool_messages

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}}


# ---- Responses input -> chat messages ----------------------------------------------------------

def test_responses_string_input_is_one_user_turn_after_the_instructions() -> None:
    body = responses.ResponsesRequest(input="hi", instructions="Be brief.")
    assert responses.chat_messages(body) == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def test_responses_items_become_chat_turns() -> None:
    body = responses.ResponsesRequest.model_validate({"input": [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in "}, {"type": "input_text", "text": "Oslo?"}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city":"Bergen"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "rain"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "output_text", "text": "sun"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Rain and sun."}]},
    ]})
    assert responses.chat_messages(body) == [
        {"role": "system", "content": "Use tools."},  # developer is the chat system role
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [  # consecutive calls join one assistant turn
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Bergen"}'}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "rain"},
        {"role": "tool", "tool_call_id": "c2", "content": "sun"},
        {"role": "assistant", "content": "Rain and sun."},
    ]


def test_responses_a_call_after_assistant_text_joins_that_turn() -> None:
    body = responses.ResponsesRequest.model_validate({"input": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "Checking."},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
    ]})
    assert responses.chat_messages(body)[1] == {
        "role": "assistant", "content": "Checking.", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }


# ---- Anthropic messages -> chat messages -------------------------------------------------------

def test_anthropic_turns_become_chat_turns() -> None:
    body = messages.CountTokensRequest.model_validate({
        "system": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "t2", "name": "get_weather", "input": {"city": "Bergen"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "rain"},
                {"type": "tool_result", "tool_use_id": "t2", "content": [{"type": "text", "text": "no data"}], "is_error": True},
                {"type": "text", "text": "And tomorrow?"},
            ]},
        ],
    })
    assert messages.chat_messages(body) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": "Oslo"})}},
            {"id": "t2", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": "Bergen"})}},
        ]},
        {"role": "tool", "tool_call_id": "t1", "content": "rain"},
        {"role": "tool", "tool_call_id": "t2", "content": "Error: no data"},  # the chat turn has no error flag: told in words
        {"role": "user", "content": "And tomorrow?"},  # the user's text after the results it came with
    ]


def test_anthropic_results_alone_make_no_empty_user_turn_and_blocks_alone_still_a_turn() -> None:
    body = messages.CountTokensRequest.model_validate({"messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        {"role": "user", "content": []},
    ]})
    assert messages.chat_messages(body) == [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": ""},
        {"role": "user", "content": ""},
    ]


# ---- chat messages -> what the template sees -----------------------------------------------------

LOOP = (
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
        {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": "not json"}},
    ]},
    {"role": "tool", "tool_call_id": "c1", "content": "rain"},
)


def test_without_tools_the_template_sees_plain_turns() -> None:
    seen = tool_messages(Task(messages=LOOP))
    assert seen == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Oslo"}},{"name":"get_weather","arguments":"not json"}]}'},
        {"role": "user", "content": "Result of tool call c1: rain"},
    ]


def test_tools_are_described_in_the_system_turn_worded_by_tool_choice() -> None:
    tools = (Tool("get_weather", "Weather now.", WEATHER),)
    auto = tool_messages(Task(messages=LOOP, tools=tools, tool_choice="auto"))
    assert auto[0]["content"].startswith("Be brief.\n\nYou can call these tools:\n- get_weather: Weather now. Arguments (JSON schema): "
                                         '{"type":"object","properties":{"city":{"type":"string"}}}\n')
    assert '{"content": "<your answer>"}' in auto[0]["content"]
    required = tool_messages(Task(messages=LOOP[1:], tools=tools, tool_choice="required"))
    assert required[0]["role"] == "system" and required[1] == {"role": "user", "content": "Weather?"}  # a system turn of its own
    assert '"content"' not in required[0]["content"] and '{"tool_calls": [' in required[0]["content"]
    assert tool_messages(Task(messages=LOOP, tools=tools, tool_choice="none")) == tool_messages(Task(messages=LOOP))


def test_gemma_puts_the_system_text_in_the_first_user_turn() -> None:
    rendered = render_gemma(tool_messages(Task(messages=LOOP[:3])))
    assert rendered.prompt.startswith("<start_of_turn>user\nBe brief.\n\nWeather?<end_of_turn>\n<start_of_turn>model\n{\"tool_calls\"")
    assert rendered.prompt.endswith("<start_of_turn>model\n") and rendered.stop == ("<end_of_turn>",)
    assert render_gemma([{"role": "system", "content": "S"}]).prompt == "<start_of_turn>user\nS<end_of_turn>\n<start_of_turn>model\n"
