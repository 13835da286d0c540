"""POST /v1/messages and /v1/messages/count_tokens with the real `anthropic` client over real
HTTP, against real llama.cpp on the tiny model."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Server
from tests.integration.dialect_server import LIMITED_AGENT, PROMPTED_AGENT, start_dialect_server

# The SDK no longer offers sampling arguments; hal0 still takes them (older clients send them).
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_dialect_server(tmp_path_factory.mktemp("messages"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0)


def _chat(server: Server, messages: list[dict[str, str]], max_tokens: int, **extra: Any) -> Any:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    return client.chat.completions.create(model="tiny", messages=messages, max_tokens=max_tokens, temperature=0, **extra)


def test_text_message_is_the_chat_completion_of_the_same_conversation(client: anthropic.Anthropic, server: Server) -> None:
    message = client.messages.create(model="tiny", max_tokens=10, system="Answer briefly.",
                                     messages=[{"role": "user", "content": "hello there"}], extra_body=GREEDY)
    chat = _chat(server, [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "hello there"}], 10)
    assert message.type == "message" and message.role == "assistant" and message.model == "tiny"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == chat.choices[0].message.content
    assert message.stop_reason == {"length": "max_tokens", "stop": "end_turn"}[chat.choices[0].finish_reason]
    assert message.usage.input_tokens == chat.usage.prompt_tokens
    assert message.usage.output_tokens == chat.usage.completion_tokens


def test_blocks_and_system_blocks(client: anthropic.Anthropic, server: Server) -> None:
    message = client.messages.create(
        model="tiny", max_tokens=4, system=[{"type": "text", "text": "Be terse."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "first"}]},
                  {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
                  {"role": "user", "content": "second"}],
        extra_body=GREEDY,
    )
    chat = _chat(server, [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "first"},
                          {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"}], 4)
    assert message.content[0].text == chat.choices[0].message.content
    assert message.usage.input_tokens == chat.usage.prompt_tokens


def test_stop_sequences_end_the_message(client: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "keep going"}]
    free = client.messages.create(model="tiny", max_tokens=12, messages=messages, extra_body=GREEDY).content[0].text
    assert len(free) >= 4, free
    stop = free[2:4]
    stopped = client.messages.create(model="tiny", max_tokens=12, messages=messages, stop_sequences=[stop], extra_body=GREEDY)
    assert stopped.stop_reason == "stop_sequence"
    assert stopped.stop_sequence == stop
    assert stopped.content[0].text == free[: free.index(stop)]


def test_stream_matches_create(client: anthropic.Anthropic) -> None:
    kwargs: dict[str, Any] = {"model": "tiny", "max_tokens": 8, "system": "hi", "messages": [{"role": "user", "content": "stream"}],
                              "extra_body": GREEDY}
    whole = client.messages.create(**kwargs)
    with client.messages.stream(**kwargs) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text == final.content[0].text
    assert final.stop_reason == whole.stop_reason
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens


def test_raw_stream_has_anthropics_event_sequence(server: Server) -> None:
    body = {"model": "tiny", "max_tokens": 4, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with server.client() as http, http.stream("POST", "/v1/messages", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines[0::2]]
    payloads = [json.loads(line.removeprefix("data: ")) for line in lines[1::2]]
    assert [payload["type"] for payload in payloads] == names
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert payloads[0]["message"]["usage"]["input_tokens"] > 0
    assert {payload["delta"]["type"] for payload in payloads[2:-3]} == {"text_delta"}
    assert payloads[-2]["delta"]["stop_reason"] in ("max_tokens", "end_turn")


def test_count_tokens_is_what_the_message_uses(client: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "how many tokens is this?"}]
    counted = client.messages.count_tokens(model="tiny", system="Count.", messages=messages)
    used = client.messages.create(model="tiny", max_tokens=1, system="Count.", messages=messages)
    assert counted.input_tokens == used.usage.input_tokens > 0


def _post(server: Server, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=60)


@pytest.mark.parametrize(("body", "field"), [
    ({"messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    ({"max_tokens": 2, "messages": [{"role": "user", "content": "hi"}], "frobnicate": 1}, "frobnicate"),
    ({"max_tokens": 2, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "messages[0].content[0]"),
    ({"max_tokens": 2, "messages": [{"role": "user", "content": "hi"}], "tool_choice": {"type": "any"}}, "body"),
    ({"max_tokens": 2, "messages": [{"role": "user", "content": "hi"}], "thinking": {"type": "sometimes"}}, "thinking"),
    ({"max_tokens": 2, "messages": [{"role": "user", "content": "hi"}], "temperature": 1.5}, "temperature"),
    # An unenforceable schema is named where this dialect holds it (not chat completions' path).
    ({"max_tokens": 2, "messages": [{"role": "user", "content": "hi"}],
      "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {"a": {"type": "string", "not": {"const": "x"}}}}}]},
     "tools[0].input_schema"),
])
def test_bad_requests_get_anthropics_error_shape(server: Server, body: dict[str, Any], field: str) -> None:
    response = _post(server, "/v1/messages", body)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    message = error["error"]["message"]
    assert message.startswith(field) or message.endswith(f"of {field}"), message  # Anthropic's shape has no param


def test_sdk_errors(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as limited:
        client.messages.create(model="tiny", max_tokens=50, messages=[{"role": "user", "content": "hi"}],
                               extra_headers={"X-hal0-Agent": LIMITED_AGENT})
    assert "limit of 4" in limited.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.count_tokens(model="tiny", messages=[])


def test_persona_system_prompt_reaches_the_model(client: anthropic.Anthropic, server: Server) -> None:
    messages = [{"role": "user", "content": "hi"}]
    plain = client.messages.count_tokens(model="tiny", messages=messages).input_tokens
    prompted = client.messages.count_tokens(model="tiny", messages=messages, extra_headers={"X-hal0-Agent": PROMPTED_AGENT}).input_tokens
    chat = _chat(server, messages, 1, extra_headers={"X-hal0-Agent": PROMPTED_AGENT})
    assert prompted == chat.usage.prompt_tokens > plain


def test_the_server_logged_no_traceback(server: Server) -> None:
    assert "Traceback" not in Path(server.log_path).read_text(errors="replace")


def test_anthropic_status_codes_for_a_full_queue_a_big_body_and_a_failed_model(
    start_server: Callable[..., Server], tiny_model: Path
) -> None:
    from tests.integration.test_serving_behaviour import long_context, long_stream

    server = start_server(server={"queue_limit": 0, "max_body_bytes": 4096}, models=long_context(tiny_model))
    body = {"max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}
    with server.client() as http, http.stream("POST", "/v1/completions", json=long_stream(8000)) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("data: ")  # the generation is running and holds the model's one turn
        busy = _post(server, "/v1/messages", body)
        assert busy.status_code == 529
        assert busy.json()["error"]["type"] == "overloaded_error"
        assert busy.headers["retry-after"].isdigit()
        for _line in lines:
            pass
    big = _post(server, "/v1/messages", {**body, "system": "x" * 5000})
    assert big.status_code == 413 and big.json()["error"]["type"] == "request_too_large"

    failed = start_server(models=[{"id": "gone", "path": "/nonexistent/model.gguf", "default": True}])
    for path, sent in (("/v1/messages", body), ("/v1/messages/count_tokens", {"messages": body["messages"]})):
        unloaded = _post(failed, path, sent)
        assert unloaded.status_code == 503
        assert unloaded.json() == {"type": "error", "error": {"type": "api_error", "message": unloaded.json()["error"]["message"]}}
        assert "failed to load" in unloaded.json()["error"]["message"]
