"""Tool calling, structured outputs and logprobs through the real `openai` client (issue 15).

The tiny model has random weights, so what it says is noise: these tests hold hal0 to what the
grammar guarantees (calls that validate against their tool's schema, JSON that validates against
the response schema) and to OpenAI's shapes, on both engines, streamed and not.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import jsonschema
import openai
import pydantic
import pytest

from tests.conftest import HAL0, Server

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 16},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"enum": ["c", "f"]},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Forecast for a city", "parameters": WEATHER}},
    {
        "type": "function",
        "function": {"name": "remember", "parameters": {"type": "object", "properties": {"text": {"type": "string", "maxLength": 40}}, "required": ["text"],
                                               "additionalProperties": False}},
    },
]
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris for 3 days?"}]


@pytest.fixture(scope="module", params=[1, 2], ids=["single", "slots"])
def tools_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Server:
    import yaml

    from tests.conftest import free_port, tiny_config

    port = free_port()
    directory = tmp_path_factory.mktemp("tools")
    model = {"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 2048, "n_threads": 1, "parallel": request.param}
    config = tiny_config(tiny_model, port, models=[model])
    config["agents"] = {"approvals": {"path": str(directory / "approvals.db")}}
    path = directory / "hal0.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (directory / "hal0.log").open("wb")
    process = subprocess.Popen([*HAL0, "serve", "--config", str(path)], stdout=log, stderr=subprocess.STDOUT)
    server = Server(path, port, process, directory / "hal0.log")
    server.wait_healthy()
    yield server
    server.stop()


@pytest.fixture
def client(tools_server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tools_server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def check_calls(calls: list, allowed: set[str]) -> None:
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in allowed
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_required_forces_a_call_whose_arguments_validate(client: openai.OpenAI, seed: int) -> None:
    reply = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=300, seed=seed)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    check_calls(choice.message.tool_calls, set(SCHEMAS))


def test_a_named_tool_is_the_one_called(client: openai.OpenAI) -> None:
    for seed in (4, 5):
        reply = client.chat.completions.create(
            model="tiny", messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=300, seed=seed
        )
        assert reply.choices[0].finish_reason == "tool_calls"
        calls = reply.choices[0].message.tool_calls
        assert len(calls) == 1
        check_calls(calls, {"get_weather"})


def test_auto_gives_text_or_valid_calls_and_none_never_calls(client: openai.OpenAI) -> None:
    for seed in range(4):
        choice = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, max_tokens=300, seed=seed).choices[0]
        if choice.message.tool_calls:
            assert choice.finish_reason == "tool_calls"
            check_calls(choice.message.tool_calls, set(SCHEMAS))
        else:
            assert choice.finish_reason in ("stop", "length") and isinstance(choice.message.content, str)
        none = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=20, seed=seed).choices[0]
        assert not none.message.tool_calls and none.finish_reason in ("stop", "length")


def test_parallel_tool_calls_false_gives_one_call(client: openai.OpenAI) -> None:
    for seed in range(3):
        reply = client.chat.completions.create(
            model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, max_tokens=300, seed=seed
        )
        assert len(reply.choices[0].message.tool_calls) == 1


def test_streamed_tool_calls_assemble_from_deltas(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=300, seed=7, temperature=0)
    stream = client.chat.completions.create(
        model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=300, seed=7, temperature=0,
        stream=True, stream_options={"include_usage": True},
    )
    calls: dict[int, dict] = {}
    reasons = []
    chunks = list(stream)
    for chunk in chunks:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if choice.finish_reason:
            reasons.append(choice.finish_reason)
        for delta in choice.delta.tool_calls or ():
            if delta.index not in calls:  # the first delta of a call: id, type and name
                assert delta.id and delta.type == "function" and delta.function.name
                calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": delta.function.arguments or ""}
            else:
                assert delta.id is None and delta.function.name is None
                calls[delta.index]["arguments"] += delta.function.arguments
    assert reasons == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert sum(len(call["arguments"]) > 0 for call in calls.values()) == len(calls)
    expected = [(call.function.name, call.function.arguments) for call in whole.choices[0].message.tool_calls]
    assert [(call["name"], call["arguments"]) for call in calls.values()] == expected  # greedy: same as non-streamed
    for call in calls.values():
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])


def test_a_tool_result_can_be_sent_back(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=300, seed=1)
    call = first.choices[0].message.tool_calls[0]
    loop = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"forecast": "sunny"}'},
    ]
    reply = client.chat.completions.create(model="tiny", messages=loop, tools=TOOLS, max_tokens=30, seed=1)
    assert reply.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert reply.usage.prompt_tokens > first.usage.prompt_tokens  # the call and its result reached the model


def test_json_schema_and_json_object_replies_validate(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "score": {"type": "number", "minimum": 0, "maximum": 10},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        },
        "required": ["score", "tags"],
        "additionalProperties": False,
    }
    for seed in range(3):
        reply = client.chat.completions.create(
            model="tiny", messages=ASK, max_tokens=300, seed=seed,
            response_format={"type": "json_schema", "json_schema": {"name": "review", "schema": schema, "strict": True}},
        )
        assert reply.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(reply.choices[0].message.content), schema)
        loose = client.chat.completions.create(model="tiny", messages=ASK, max_tokens=400, seed=seed, response_format={"type": "json_object"})
        if loose.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(loose.choices[0].message.content), dict)


class Forecast(pydantic.BaseModel):
    city: str = pydantic.Field(max_length=12)
    days: int = pydantic.Field(ge=1, le=7)
    rain: bool


def test_chat_completions_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    parsed = client.chat.completions.parse(model="tiny", messages=ASK, response_format=Forecast, max_tokens=200, seed=3)
    forecast = parsed.choices[0].message.parsed
    assert isinstance(forecast, Forecast) and 1 <= forecast.days <= 7


@pytest.mark.parametrize(
    ("where", "schema", "keyword", "path"),
    [
        ("tools", {"type": "object", "properties": {"code": {"type": "string", "not": {"const": "x"}}}}, "not", "$.properties.code.not"),
        ("tools", {"type": "object", "properties": {"n": {"type": "array", "uniqueItems": True}}}, "uniqueItems", "$.properties.n.uniqueItems"),
        ("response_format", {"type": "object", "properties": {"a": {"if": {"type": "string"}}}}, "if", "$.properties.a.if"),
        ("response_format", {"type": "array", "items": {"type": "array", "contains": {"type": "integer"}}}, "contains", "$.items.contains"),
    ],
)
def test_an_unsupported_schema_keyword_is_400_naming_it_and_its_path(tools_server: Server, where: str, schema: dict, keyword: str, path: str) -> None:
    body: dict = {"messages": ASK, "max_tokens": 5}
    if where == "tools":
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    else:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    for stream in (False, True):
        response = httpx.post(f"{tools_server.url}/v1/chat/completions", json={**body, "stream": stream}, timeout=60)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "unsupported_schema"
        assert repr(keyword) in error["message"] and path in error["message"]
        assert error["param"].startswith(where)


def test_chat_logprobs_are_the_models_distribution(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=ASK, max_tokens=6, temperature=0, logprobs=True, top_logprobs=5, logit_bias={"2": -100, "4": -100}
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens == 6
    for item in content:
        assert len(item.top_logprobs) == 5
        values = [top.logprob for top in item.top_logprobs]
        assert values == sorted(values, reverse=True) and values[0] <= 0
        assert sum(math.exp(value) for value in values) <= 1 + 1e-6
        assert item.logprob == pytest.approx(values[0])  # greedy takes the most likely token
        assert bytes(item.bytes).decode("utf-8", "replace") == item.token
    streamed = client.chat.completions.create(
        model="tiny", messages=ASK, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2, logit_bias={"2": -100, "4": -100}, stream=True
    )
    items = [item for chunk in streamed if chunk.choices and chunk.choices[0].logprobs for item in chunk.choices[0].logprobs.content]
    assert [item.logprob for item in items] == pytest.approx([item.logprob for item in content])


def test_completion_logprobs(client: openai.OpenAI) -> None:
    result = client.completions.create(model="tiny", prompt="the", max_tokens=4, temperature=0, logprobs=3, logit_bias={"2": -100, "4": -100})
    logprobs = result.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 4
    assert all(len(top) <= 3 and max(top.values()) == pytest.approx(chosen) for top, chosen in zip(logprobs.top_logprobs, logprobs.token_logprobs, strict=True))


def test_bad_tool_requests_are_400(tools_server: Server) -> None:
    cases = [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope"),
        ({"tool_choice": "required"}, "tool_choice needs tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
        ({"logprobs": False, "top_logprobs": 3}, "top_logprobs needs logprobs"),
        ({"response_format": {"type": "json_schema"}}, "json_schema is required"),
    ]
    for extra, fragment in cases:
        response = httpx.post(f"{tools_server.url}/v1/chat/completions", json={"messages": ASK, **extra}, timeout=30)
        assert response.status_code == 400, extra
        assert fragment in response.json()["error"]["message"], response.json()


def test_the_system_prompt_reaches_a_gemma_format_model(start_server: Callable[..., Server], tiny_model: Path) -> None:
    server = start_server(models=[{"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 1024, "n_threads": 1, "chat_format": "gemma"}])
    system = "You are a terse assistant that answers in French. " * 6

    def prompt_tokens(messages: list[dict]) -> int:
        response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": messages, "max_tokens": 1}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["usage"]["prompt_tokens"]

    bare = prompt_tokens([{"role": "user", "content": "hi"}])
    with_system = prompt_tokens([{"role": "system", "content": system}, {"role": "user", "content": "hi"}])
    assert with_system - bare >= len(system) // 4  # the system text is in the prompt (folded into the user turn)


def test_a_format_that_drops_the_system_prompt_is_refused(start_server: Callable[..., Server], tiny_model: Path, tmp_path: Path) -> None:
    import yaml

    from tests.conftest import tiny_config

    config = tiny_config(tiny_model, 8080, models=[{"id": "tiny", "path": str(tiny_model), "default": True, "chat_format": "mistral-instruct"}])
    path = tmp_path / "hal0.yaml"
    path.write_text(yaml.safe_dump(config))
    checked = subprocess.run([*HAL0, "config", "validate", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 1
    assert "models[0].chat_format" in checked.stderr and "drops the system prompt" in checked.stderr
    line = next(number for number, text in enumerate(path.read_text().splitlines(), 1) if "chat_format:" in text)
    assert f"{path}:{line}:" in checked.stderr, checked.stderr  # the line of the field, as for every config error
    server = start_server(models=config["models"], wait=False)
    health = _health_when_settled(server)
    assert health["status"] == "failed"
    assert "drops the system prompt" in json.dumps(health)


def _health_when_settled(server: Server) -> dict:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            body = httpx.get(f"{server.url}/health", timeout=5).json()
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        if body["status"] != "loading":
            return body
        time.sleep(0.2)
    raise AssertionError("the server never settled")

