"""The real `openai` client against a real `hal0 serve` running llama.cpp on the tiny model."""

from __future__ import annotations

import base64
import json
import struct

import httpx
import openai
import pytest

from tests.conftest import Server


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_models_are_listed(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [model.id for model in models] == ["tiny"]
    assert models[0].owned_by == "hal0"
    assert models[0].model_extra["n_threads"] == 1  # the effective count (the test config sets 1)


def test_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0
    )
    assert reply.model == "tiny"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].finish_reason in ("length", "stop")
    assert reply.usage.completion_tokens > 0
    assert reply.usage.prompt_tokens > 5


def test_greedy_chat_is_deterministic(client: openai.OpenAI) -> None:
    def ask() -> str | None:
        return client.chat.completions.create(
            messages=[{"role": "user", "content": "hal0"}], model="tiny", max_tokens=12, temperature=0
        ).choices[0].message.content

    assert ask() == ask()


def test_streaming_chat_matches_non_streaming(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "the model"}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    stream = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=10, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert all(chunk.model == "tiny" for chunk in chunks)


def test_raw_stream_is_sse_ending_in_done(server: Server) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4, "stream": True}
    with server.client() as http, http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)
    json.loads(lines[0][6:])


def test_completion_and_streaming_completion(client: openai.OpenAI) -> None:
    result = client.completions.create(model="tiny", prompt="the", max_tokens=6, temperature=0)
    assert result.object == "text_completion" and result.model == "tiny"
    streamed = "".join(chunk.choices[0].text for chunk in client.completions.create(
        model="tiny", prompt="the", max_tokens=6, temperature=0, stream=True
    ))
    assert streamed == result.choices[0].text


def test_embeddings_float_and_base64(client: openai.OpenAI, server: Server) -> None:
    result = client.embeddings.create(model="tiny", input=["hello", "world"])  # the client asks for base64
    assert [item.index for item in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 64
    assert result.data[0].embedding != result.data[1].embedding
    with server.client() as http:
        raw = http.post("/v1/embeddings", json={"input": "hello", "encoding_format": "float"}).json()
        packed = http.post("/v1/embeddings", json={"input": "hello", "encoding_format": "base64"}).json()
    decoded = struct.unpack("<64f", base64.b64decode(packed["data"][0]["embedding"]))
    assert decoded == pytest.approx(raw["data"][0]["embedding"], rel=1e-6)
    assert raw["data"][0]["embedding"] == pytest.approx(result.data[0].embedding, rel=1e-5)


def test_unknown_model_is_404_in_openai_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    error = caught.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "gpt-9" in error["message"]


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"messages": []}, "messages", "at least 1"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "Input should be"),
        ({"messages": [{"role": "user", "content": "x"}], "temperature": 5}, "temperature", "less than or equal to 2"),
        ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}, "max_tokens", "valid integer"),
        ({"messages": [{"role": "user", "content": "x"}], "temprature": 0.5}, "temprature", "unrecognized request argument"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 3}, "n", "Input should be 1"),
        ({}, "messages", "Field required"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(server: Server, body: dict, param: str, fragment: str) -> None:
    with server.client() as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert fragment in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"{not json", "not valid JSON"), (b"[1, 2]", "must be a JSON object"), (b"", "empty"), (b"\xff\xfe", "not valid JSON")],
)
def test_unparseable_bodies_are_400(server: Server, content: bytes, fragment: str) -> None:
    with server.client() as http:
        response = http.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert fragment in response.json()["error"]["message"]


def test_oversized_body_is_413(server: Server) -> None:
    huge = {"messages": [{"role": "user", "content": "x" * 2_000_000}]}
    with server.client() as http:
        response = http.post("/v1/chat/completions", json=huge)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_prompt_longer_than_context_is_400(server: Server) -> None:
    with server.client() as http:
        response = http.post("/v1/completions", json={"prompt": "hal0 " * 900, "max_tokens": 4})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    with server.client() as http:  # and the model still serves
        assert http.post("/v1/completions", json={"prompt": "ok", "max_tokens": 2}).status_code == 200


def test_unknown_route_and_method_use_the_error_shape(server: Server) -> None:
    with server.client() as http:
        missing = http.get("/v1/nothing")
        wrong = http.get("/v1/chat/completions")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405


def test_health_reports_ready_model(server: Server) -> None:
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok"
    assert health["models"] == [{"id": "tiny", "state": "ready", "load": "startup"}]
    assert len(health["config_digest"]) == 12 and health["hostname"]
