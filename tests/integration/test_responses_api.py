"""POST /v1/responses with the real `openai` client and the OpenAI Agents SDK's default
(Responses) model, over real HTTP, against real llama.cpp on the tiny model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Server
from tests.integration.dialect_server import LIMITED_AGENT, PROMPTED_AGENT, STOPPING_AGENT, start_dialect_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_dialect_server(tmp_path_factory.mktemp("responses"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def _chat(client: openai.OpenAI, messages: list[dict[str, str]], max_tokens: int, agent: str | None = None) -> openai.types.chat.ChatCompletion:
    headers = {"X-hal0-Agent": agent} if agent else None
    return client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens, temperature=0, extra_headers=headers)


def test_text_response_is_the_chat_completion_of_the_same_conversation(client: openai.OpenAI) -> None:
    response = client.responses.create(model="tiny", instructions="Answer briefly.", input="hello there", max_output_tokens=12, temperature=0)
    chat = _chat(client, [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "hello there"}], 12)
    assert response.object == "response" and response.model == "tiny" and response.store is False
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text"
    assert response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    assert response.usage.output_tokens == chat.usage.completion_tokens
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_input_items_and_max_output_tokens(client: openai.OpenAI) -> None:
    items = [
        {"role": "developer", "content": "Be terse."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "first"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok", "annotations": []}]},
        {"role": "user", "content": "second"},
    ]
    response = client.responses.create(model="tiny", input=items, max_output_tokens=3, temperature=0)
    chat = _chat(client, [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "first"},
                          {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"}], 3)
    assert response.output_text == chat.choices[0].message.content
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    if chat.choices[0].finish_reason == "length":
        assert response.status == "incomplete"
        assert response.incomplete_details.reason == "max_output_tokens"
        assert response.usage.output_tokens == 3
    else:
        assert response.status == "completed"


def test_streaming_events_follow_the_documented_sequence(client: openai.OpenAI) -> None:
    whole = client.responses.create(model="tiny", input="stream me", max_output_tokens=8, temperature=0)
    events = list(client.responses.create(model="tiny", input="stream me", max_output_tokens=8, temperature=0, stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed" if whole.status == "completed" else "response.incomplete"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == whole.output_text
    assert events[-1].response.output_text == whole.output_text
    assert events[-1].response.usage.output_tokens == whole.usage.output_tokens


def test_raw_stream_is_named_sse_events(server: Server) -> None:
    body = {"input": "x", "max_output_tokens": 3, "stream": True}
    with server.client() as http, http.stream("POST", "/v1/responses", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines[0::2]]
    payloads = [json.loads(line.removeprefix("data: ")) for line in lines[1::2]]
    assert [payload["type"] for payload in payloads] == names
    assert "data: [DONE]" not in lines


def test_previous_response_id_is_refused_because_nothing_is_stored(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="tiny", input="again", previous_response_id="resp_123")
    assert caught.value.body["param"] == "previous_response_id"
    assert "does not store responses" in caught.value.body["message"]


@pytest.mark.parametrize(("extra", "field"), [
    ({"frobnicate": 1}, "frobnicate"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"type": "input_image", "image_url": "http://x"}]}, "input[0]"),
    ({"tool_choice": "required"}, "body"),
    ({"text": {"format": {"type": "json_schema"}}}, "text.format"),
    ({"truncation": "auto"}, "truncation"),
    # An unenforceable schema is named where this dialect holds it (not chat completions' path).
    ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "string", "not": {"const": "x"}}}]}, "tools[0].parameters"),
    ({"text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "string", "not": {"const": "x"}}}}}, "text.format.schema"),
])
def test_bad_fields_are_refused_by_name(server: Server, extra: dict[str, object], field: str) -> None:
    response = httpx.post(f"{server.url}/v1/responses", json={"input": "hi", "max_output_tokens": 2, **extra}, timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == field or error["message"].startswith(field)


def test_persona_applies_to_responses(client: openai.OpenAI) -> None:
    """The same persona as chat completions: its limits refuse, its system prompt reaches the model."""
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="tiny", input="hi", max_output_tokens=50, extra_headers={"X-hal0-Agent": LIMITED_AGENT})
    assert "limit of 4" in caught.value.body["message"]
    plain = client.responses.create(model="tiny", input="hi", max_output_tokens=1)
    prompted = client.responses.create(model="tiny", input="hi", max_output_tokens=1, extra_headers={"X-hal0-Agent": PROMPTED_AGENT})
    chat = _chat(client, [{"role": "user", "content": "hi"}], 1, agent=PROMPTED_AGENT)
    assert prompted.usage.input_tokens == chat.usage.prompt_tokens > plain.usage.input_tokens


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="nope", input="hi")


def test_requests_are_counted_in_metrics(server: Server, client: openai.OpenAI) -> None:
    client.responses.create(model="tiny", input="count me", max_output_tokens=1)
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    assert 'route="/v1/responses"' in metrics


def test_agents_sdk_with_its_default_responses_model(server: Server) -> None:
    """An Agent whose model is the SDK's OpenAIResponsesModel pointed at hal0, run and streamed."""
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    headers = {"X-hal0-Agent": STOPPING_AGENT}
    model = OpenAIResponsesModel(model="tiny", openai_client=AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused",
                                                                          max_retries=0, default_headers=headers))
    agent = Agent(name="hal0-test", instructions="Say hello.", model=model, model_settings=ModelSettings(temperature=0, max_tokens=64))

    async def run_both() -> tuple[str, str]:
        result = await Runner.run(agent, "hello", max_turns=1)
        streamed = Runner.run_streamed(agent, "hello", max_turns=1)
        async for _event in streamed.stream_events():
            pass
        return result.final_output, streamed.final_output

    final, streamed = asyncio.run(asyncio.wait_for(run_both(), timeout=120))
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    chat = _chat(client, [{"role": "system", "content": "Say hello."}, {"role": "user", "content": "hello"}], 64, agent=STOPPING_AGENT)
    assert chat.choices[0].finish_reason == "stop"
    assert final == streamed == chat.choices[0].message.content


def test_the_server_logged_no_traceback(server: Server) -> None:
    assert "Traceback" not in Path(server.log_path).read_text(errors="replace")
