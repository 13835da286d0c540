"""Tool use and JSON-schema outputs in the Responses and Messages dialects, with the real
`openai`, `openai-agents` and `anthropic` clients over real HTTP on the tiny model.

They run on issue 15's tool calling (grammar-constrained calls): a call's arguments always match
its tool's schema, whatever the (random) model would have written.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any, Literal

import anthropic
import jsonschema
import openai
import pytest

from tests.conftest import Server
from tests.integration.dialect_server import start_dialect_server

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Oslo", "Lima"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
ANSWER = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 12}}, "required": ["answer"],
          "additionalProperties": False}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_dialect_server(tmp_path_factory.mktemp("dialect-tools"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def claude(server: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)


FUNCTION = {"type": "function", "name": "get_weather", "description": "The forecast for a city.", "parameters": WEATHER}


# ---- Responses ----------------------------------------------------------------------------------

def test_function_call_and_its_output_sent_back(client: openai.OpenAI) -> None:
    question = {"role": "user", "content": "Weather in Oslo?"}
    first = client.responses.create(model="tiny", input=[question], tools=[FUNCTION], tool_choice="required", max_output_tokens=96,
                                    temperature=0)
    assert first.status == "completed"
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and all(call.name == "get_weather" and call.call_id for call in calls)
    for call in calls:
        jsonschema.validate(json.loads(call.arguments), WEATHER)
    outputs = [{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"} for call in calls]
    sent_back = [question, *(call.model_dump(exclude_none=True) for call in calls), *outputs]
    second = client.responses.create(model="tiny", input=sent_back, tools=[FUNCTION], tool_choice="none", max_output_tokens=4,
                                     temperature=0)
    assert [item.type for item in second.output] == ["message"]
    alone = client.responses.create(model="tiny", input=[question], tools=[FUNCTION], tool_choice="none", max_output_tokens=1)
    assert second.usage.input_tokens > alone.usage.input_tokens  # the call and its output reached the prompt


def test_named_tool_choice_streams_function_call_events(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": "tiny", "input": "Lima, please", "tools": [FUNCTION],
                              "tool_choice": {"type": "function", "name": "get_weather"}, "max_output_tokens": 96, "temperature": 0}
    whole = client.responses.create(**kwargs)
    events = list(client.responses.create(**kwargs, stream=True))
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    added = [event.item for event in events if event.type == "response.output_item.added"]
    assert [item.type for item in added] == [item.type for item in whole.output]
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    streamed = "".join(event.delta for event in events if event.type == "response.function_call_arguments.delta")
    assert streamed == "".join(item.arguments for item in whole.output if item.type == "function_call")
    done = [event.item for event in events if event.type == "response.output_item.done" and event.item.type == "function_call"]
    assert [json.loads(item.arguments) for item in done] == [json.loads(item.arguments) for item in events[-1].response.output
                                                            if item.type == "function_call"]


def test_json_schema_text_format(client: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "name": "answer", "schema": ANSWER, "strict": True}
    response = client.responses.create(model="tiny", input="Answer in JSON.", text={"format": fmt}, max_output_tokens=64, temperature=0)
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), ANSWER)
    assert response.text.format.type == "json_schema"


def test_agents_sdk_function_tool_and_output_type(server: Server) -> None:
    """The Agents SDK's default OpenAIResponsesModel: a function tool it runs, and a pydantic output_type."""
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI
    from pydantic import BaseModel

    set_tracing_disabled(True)
    model = OpenAIResponsesModel(model="tiny", openai_client=AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0))
    seen: list[str] = []

    @function_tool
    def get_weather(city: Literal["Oslo", "Lima"]) -> str:
        """The forecast for a city."""
        seen.append(city)
        return f"sunny in {city}"

    caller = Agent(name="caller", instructions="Use the tool.", model=model, tools=[get_weather], tool_use_behavior="stop_on_first_tool",
                   model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=256))

    class Answer(BaseModel):
        answer: Literal["yes", "no"]  # bounded: the tiny model's free strings can run past max_tokens

    typed = Agent(name="typed", instructions="Answer.", model=model, output_type=Answer, model_settings=ModelSettings(temperature=0, max_tokens=256))

    async def run_both() -> tuple[Any, Any]:
        return (await Runner.run(caller, "Weather?", max_turns=2)), (await Runner.run(typed, "hi", max_turns=1))

    called, answered = asyncio.run(asyncio.wait_for(run_both(), timeout=180))
    assert len(seen) >= 1 and called.final_output == f"sunny in {seen[0]}"
    assert isinstance(answered.final_output, Answer)


# ---- Messages -----------------------------------------------------------------------------------

TOOL = {"name": "get_weather", "description": "The forecast for a city.", "input_schema": WEATHER}


def test_tool_use_round_trip(claude: anthropic.Anthropic) -> None:
    question = {"role": "user", "content": "Weather in Oslo?"}
    first = claude.messages.create(model="tiny", max_tokens=96, tools=[TOOL], tool_choice={"type": "any"}, messages=[question],
                                   extra_body={"temperature": 0})
    assert first.stop_reason == "tool_use"
    uses = [block for block in first.content if block.type == "tool_use"]
    assert uses and all(use.name == "get_weather" and use.id for use in uses)
    for use in uses:
        jsonschema.validate(use.input, WEATHER)
    results = [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"} for use in uses]
    messages = [question, {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
                {"role": "user", "content": results}]
    second = claude.messages.create(model="tiny", max_tokens=4, tools=[TOOL], tool_choice={"type": "none"}, messages=messages,
                                    extra_body={"temperature": 0})
    assert [block.type for block in second.content] == ["text"]
    assert second.stop_reason in ("end_turn", "max_tokens")
    counted = claude.messages.count_tokens(model="tiny", tools=[TOOL], tool_choice={"type": "none"}, messages=messages)
    alone = claude.messages.count_tokens(model="tiny", tools=[TOOL], tool_choice={"type": "none"}, messages=[question])
    assert counted.input_tokens == second.usage.input_tokens > alone.input_tokens  # the call and its result reached the prompt


def test_streamed_tool_use_matches_create(claude: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {"model": "tiny", "max_tokens": 96, "tools": [TOOL], "tool_choice": {"type": "tool", "name": "get_weather"},
                              "messages": [{"role": "user", "content": "Lima"}], "extra_body": {"temperature": 0}}
    whole = claude.messages.create(**kwargs)
    with claude.messages.stream(**kwargs) as stream:
        deltas = [event.delta for event in stream if event.type == "content_block_delta"]
        final = stream.get_final_message()
    assert {delta.type for delta in deltas} == {"input_json_delta"}
    assert final.stop_reason == whole.stop_reason == "tool_use"
    assert [block.input for block in final.content if block.type == "tool_use"] == [
        block.input for block in whole.content if block.type == "tool_use"]


def test_count_tokens_includes_the_tools(claude: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "hi"}]
    bare = claude.messages.count_tokens(model="tiny", messages=messages).input_tokens
    with_tools = claude.messages.count_tokens(model="tiny", messages=messages, tools=[TOOL]).input_tokens
    used = claude.messages.create(model="tiny", max_tokens=1, messages=messages, tools=[TOOL]).usage.input_tokens
    assert with_tools == used > bare
