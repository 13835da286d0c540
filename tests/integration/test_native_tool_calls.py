"""Native tool calls end to end: the tiny model carrying a real family's chat template (the sdist's
Qwen2.5 and Llama 3.1 templates, models[].chat_template_file), through chat completions, Responses
and Messages, streamed and not, with auto, required, a named tool and none; a whole tool loop sent
back in the family's own syntax; the Agents SDK and the anthropic SDK as clients.

The tiny model's weights are random: with `required` or a named tool the call grammar makes every
reply a call in the family's syntax (what is checked is that hal0 wrote, parsed and returned it
natively); with `auto` it writes text, which must come back as plain text (not hal0's generic
{"content": ...} JSON)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import anthropic
import jsonschema
import openai
import pytest
from hal0.inference.tiny_model import write_test_model

from tests.conftest import Server, free_port, serve, tiny_config

ROOT = Path(__file__).resolve().parents[2]
FAMILIES = {
    # family: (template file in the sdist, what its calls look like in a prompt)
    "qwen": ("Qwen-Qwen2.5-7B-Instruct.jinja", "<tool_call>"),
    "llama3": ("meta-llama-Llama-3.1-8B-Instruct.jinja", '{"name": "get_weather", "parameters": '),
}
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Oslo", "Lima"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
FUNCTION = {"type": "function", "function": {"name": "get_weather", "description": "The forecast for a city.", "parameters": WEATHER}}
CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time.", "parameters": {"type": "object", "properties": {}}}}
QUESTION = {"role": "user", "content": "Weather in Oslo?"}


@pytest.fixture(scope="module")
def templates() -> Path:
    out = subprocess.run([str(ROOT / "image/llama-templates")], capture_output=True, text=True, timeout=900, check=True)
    return Path(out.stdout.strip())


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest, templates: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Server]]:
    name = request.param
    root = tmp_path_factory.mktemp(f"native-{name}")
    config = tiny_config(write_test_model(root / "tiny.gguf"), free_port())
    config["models"][0].update(chat_template_file=str(templates / FAMILIES[name][0]), n_ctx=2048)
    server = serve(root, config)
    yield name, server
    server.stop()


def chat(server: Server, **body: Any) -> dict[str, Any]:
    with server.client() as http:
        response = http.post("/v1/chat/completions", json={"model": "tiny", "temperature": 0, "max_tokens": 96, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_models_say_native(family: tuple[str, Server]) -> None:
    _name, server = family
    with server.client() as http:
        model = http.get("/v1/models").json()["data"][0]
    assert model["tool_format"] == "native"


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_calls_come_back_as_tool_calls(family: tuple[str, Server], choice: Any) -> None:
    _name, server = family
    reply = chat(server, messages=[QUESTION], tools=[FUNCTION, CLOCK], tool_choice=choice, parallel_tool_calls=False)
    choice_out = reply["choices"][0]
    assert choice_out["finish_reason"] == "tool_calls"
    calls = choice_out["message"]["tool_calls"]
    assert len(calls) == 1 and calls[0]["id"] and calls[0]["type"] == "function"
    if isinstance(choice, dict):
        assert calls[0]["function"]["name"] == "get_weather"
    arguments = json.loads(calls[0]["function"]["arguments"])
    jsonschema.validate(arguments, WEATHER if calls[0]["function"]["name"] == "get_weather" else {"type": "object"})
    assert not choice_out["message"].get("content")


def test_streamed_call_matches_the_whole_reply(family: tuple[str, Server]) -> None:
    _name, server = family
    body = {"model": "tiny", "temperature": 0, "max_tokens": 96, "messages": [QUESTION], "tools": [FUNCTION], "tool_choice": "required",
            "parallel_tool_calls": False}
    whole = chat(server, **{key: value for key, value in body.items() if key != "model"})
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    chunks = list(client.chat.completions.create(**body, stream=True))
    deltas = [call for chunk in chunks for choice in chunk.choices for call in (choice.delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather" and deltas[0].id  # the name first,
    assert len(deltas) > 2 and all(delta.function.name is None for delta in deltas[1:])  # then argument fragments
    streamed = "".join(delta.function.arguments or "" for delta in deltas)
    assert json.loads(streamed) == json.loads(whole["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    assert chunks[-1].choices[0].finish_reason == "tool_calls" or any(c.choices and c.choices[0].finish_reason == "tool_calls" for c in chunks)


@pytest.mark.parametrize("choice", ["auto", "none"])
def test_text_answers_are_plain_text(family: tuple[str, Server], choice: str) -> None:
    _name, server = family
    reply = chat(server, messages=[QUESTION], tools=[FUNCTION], tool_choice=choice, max_tokens=8)
    message = reply["choices"][0]["message"]
    assert not message.get("tool_calls")
    assert not (message["content"] or "").startswith('{"content"')  # not hal0's generic JSON wrapper
    assert reply["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_tool_loop_is_sent_back_in_the_familys_syntax(family: tuple[str, Server]) -> None:
    name, server = family
    first = chat(server, messages=[QUESTION], tools=[FUNCTION], tool_choice="required", parallel_tool_calls=False)
    message = first["choices"][0]["message"]
    call = message["tool_calls"][0]
    loop = [QUESTION, {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"}]
    with server.client() as http:
        prompt = http.post("/apply-template", json={"messages": loop, "tools": [FUNCTION]}).json()["prompt"]
    assert FAMILIES[name][1] in prompt and "sunny, 21 C" in prompt
    assert '{"tool_calls"' not in prompt  # not hal0's generic format
    second = chat(server, messages=loop, tools=[FUNCTION], tool_choice="none", max_tokens=4)
    assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]


def test_responses_function_calls(family: tuple[str, Server]) -> None:
    _name, server = family
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    tool = {"type": "function", "name": "get_weather", "description": "The forecast for a city.", "parameters": WEATHER}
    kwargs: dict[str, Any] = {"model": "tiny", "input": "Weather in Lima?", "tools": [tool], "tool_choice": "required", "max_output_tokens": 96,
                              "temperature": 0, "parallel_tool_calls": False}
    whole = client.responses.create(**kwargs)
    calls = [item for item in whole.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER)
    events = list(client.responses.create(**kwargs, stream=True))
    done = [event.item for event in events if event.type == "response.output_item.done" and event.item.type == "function_call"]
    assert [json.loads(item.arguments) for item in done] == [json.loads(calls[0].arguments)]


def test_messages_tool_use_round_trip_with_the_anthropic_sdk(family: tuple[str, Server]) -> None:
    _name, server = family
    claude = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)
    tool = {"name": "get_weather", "description": "The forecast for a city.", "input_schema": WEATHER}
    question = {"role": "user", "content": "Weather in Oslo?"}
    kwargs: dict[str, Any] = {"model": "tiny", "max_tokens": 96, "tools": [tool], "messages": [question], "extra_body": {"temperature": 0},
                              "tool_choice": {"type": "any", "disable_parallel_tool_use": True}}
    first = claude.messages.create(**kwargs)
    assert first.stop_reason == "tool_use"
    uses = [block for block in first.content if block.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather"
    jsonschema.validate(uses[0].input, WEATHER)
    with claude.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    assert [block.input for block in final.content if block.type == "tool_use"] == [uses[0].input]
    results = [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny, 21 C"}]
    messages = [question, {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
                {"role": "user", "content": results}]
    second = claude.messages.create(model="tiny", max_tokens=4, tools=[tool], tool_choice={"type": "none"}, messages=messages,
                                    extra_body={"temperature": 0})
    assert [block.type for block in second.content] == ["text"]


def test_agents_sdk_runs_a_native_tool(family: tuple[str, Server]) -> None:
    _name, server = family
    from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI
    from pydantic import BaseModel

    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    seen: list[str] = []

    @function_tool
    def get_weather(city: Literal["Oslo", "Lima"]) -> str:
        """The forecast for a city."""
        seen.append(city)
        return f"sunny in {city}"

    settings = ModelSettings(tool_choice="required", temperature=0, max_tokens=128, parallel_tool_calls=False)
    agents = [
        Agent(name=f"caller-{kind}", instructions="Use the tool.", model=model, tools=[get_weather], tool_use_behavior="stop_on_first_tool",
              model_settings=settings)
        for kind, model in (("responses", OpenAIResponsesModel(model="tiny", openai_client=client)),
                            ("chat", OpenAIChatCompletionsModel(model="tiny", openai_client=client)))
    ]

    class Answer(BaseModel):
        answer: Literal["yes", "no"]

    # The first turn must call (required); the SDK then resets tool_choice to auto, and '{' and 'a'
    # (tokens 5 + 0x7B and 5 + 0x61) favoured make the random model open its answer rather than call
    # again: `{"answer"...` against Qwen's `<tool_call>` and Llama 3's `{"name"...`.
    answering = ModelSettings(tool_choice="required", temperature=0, max_tokens=128, parallel_tool_calls=False,
                              extra_body={"logit_bias": {"128": 30, "102": 30}})
    typed = Agent(name="typed", instructions="Answer.", model=OpenAIChatCompletionsModel(model="tiny", openai_client=client), tools=[get_weather],
                  output_type=Answer, model_settings=answering)

    async def run_all() -> tuple[list[Any], Any]:
        called = [await Runner.run(agent, "Weather?", max_turns=2) for agent in agents]
        return called, await Runner.run(typed, "Is it sunny?", max_turns=4)

    results, answered = asyncio.run(asyncio.wait_for(run_all(), timeout=240))
    assert len(seen) >= 3 and [result.final_output for result in results] == [f"sunny in {city}" for city in seen[:2]]
    # Tools and an output type together: the text answer follows the schema, a call follows the tool's.
    assert isinstance(answered.final_output, Answer)
