"""Limits of one generation on a real `hal0 serve` (issue 20): max_tokens exactly, the context as
a clean "length", logit_bias ids checked against the vocabulary, abandoned embeddings stopped.

Only the end-of-turn tokens are banned, so the random bytes of the tiny model (mostly not UTF-8)
are part of every run: limits must hold whatever the bytes of the last tokens are.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.integration.test_serving_behaviour import metric

NO_END = {"2": -100, "4": -100}  # </s> and <|im_end|>: runs end at max_tokens or the context


@pytest.fixture(params=[1, 3], ids=["single", "slots"])
def limits_server(request: pytest.FixtureRequest, start_server: Callable[..., Server], tiny_model: Path) -> Server:
    parallel = request.param
    return start_server(models=[{"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 1024 * parallel, "n_threads": 1, "parallel": parallel}])


def post(server: Server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=120)


def sse_events(server: Server, path: str, body: dict) -> list[str]:
    with httpx.stream("POST", f"{server.url}{path}", json={**body, "stream": True}, timeout=120) as stream:
        assert stream.status_code == 200
        return [line for line in stream.iter_lines() if line]


@pytest.mark.parametrize("max_tokens", [1, 5, 200, 400])
def test_max_tokens_is_exact_on_completions_and_chat(limits_server: Server, max_tokens: int) -> None:
    for seed in (1, 2):
        body = {"max_tokens": max_tokens, "temperature": 1.0, "seed": seed, "logit_bias": NO_END}
        done = post(limits_server, "/v1/completions", {**body, "prompt": "the"})
        assert done.status_code == 200, done.text
        assert done.json()["usage"]["completion_tokens"] == max_tokens
        assert done.json()["choices"][0]["finish_reason"] == "length"
        chat = post(limits_server, "/v1/chat/completions", {**body, "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 200, chat.text
        assert chat.json()["usage"]["completion_tokens"] == max_tokens
        assert chat.json()["choices"][0]["finish_reason"] == "length"


def test_chat_without_max_tokens_ends_at_the_context_for_every_seed(limits_server: Server) -> None:
    messages = [{"role": "user", "content": "tell me everything"}]
    for seed in range(4):
        body = {"messages": messages, "temperature": 1.0, "seed": seed, "logit_bias": NO_END}
        reply = post(limits_server, "/v1/chat/completions", body)
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert answer["choices"][0]["finish_reason"] == "length"
        usage = answer["usage"]
        assert 1024 - 2 <= usage["total_tokens"] <= 1024  # the slot's context, used up, never exceeded
        lines = sse_events(limits_server, "/v1/chat/completions", {**body, "stream_options": {"include_usage": True}})
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line[6:]) for line in lines[:-1]]
        assert not any("error" in chunk for chunk in chunks)
        assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == ["length"]
        assert chunks[-1]["usage"]["total_tokens"] >= 1024 - 2


def test_chat_with_sampled_end_tokens_never_fails(limits_server: Server) -> None:
    for seed in range(6):
        body = {"messages": [{"role": "user", "content": "x"}], "temperature": 1.5, "seed": seed}
        reply = post(limits_server, "/v1/chat/completions", body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["finish_reason"] in ("stop", "length")
        assert sse_events(limits_server, "/v1/chat/completions", body)[-1] == "data: [DONE]"


@pytest.mark.parametrize("stream", [False, True])
def test_out_of_vocabulary_logit_bias_is_400_naming_the_ids(limits_server: Server, stream: bool) -> None:
    body = {"prompt": "x", "max_tokens": 4, "logit_bias": {"3": 5, "99999": 1, "100000": -1}, "stream": stream}
    response = post(limits_server, "/v1/completions", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "logit_bias"
    assert "99999" in error["message"] and "100000" in error["message"] and "3," not in error["message"]
    assert post(limits_server, "/v1/completions", {"prompt": "x", "max_tokens": 2}).status_code == 200


@pytest.mark.parametrize("key", ["²", "٣", "-1", "1.5", " 7"])
def test_logit_bias_keys_that_are_not_ascii_token_ids_are_400(server: Server, key: str) -> None:
    response = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "logit_bias": {key: 1}})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "logit_bias" and repr(key) in error["message"]


def test_an_abandoned_embeddings_request_gives_the_model_back(start_server: Callable[..., Server], tiny_model: Path) -> None:
    server = start_server(models=[{"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 1024, "n_threads": 1}])
    inputs = [f"item {number} " + "lorem ipsum dolor sit amet " * 8 for number in range(2048)]
    with contextlib.suppress(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/embeddings", json={"input": inputs}, timeout=1.5)
    deadline = time.monotonic() + 60
    while metric(server, 'hal0_model_busy{model="tiny"}') and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(server, 'hal0_model_busy{model="tiny"}') == 0
    # Abandoned, not finished: the embeddings of all 2048 inputs were never completed and counted.
    assert metric(server, 'hal0_prompt_tokens_total{model="tiny"}') == 0
    assert httpx.post(f"{server.url}/v1/embeddings", json={"input": "ok"}, timeout=30).status_code == 200
