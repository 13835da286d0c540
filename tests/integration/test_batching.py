"""Parallel slots (models[].parallel > 1): continuous batching through a real `hal0 serve`.

Greedy output must not depend on the neighbours a request is decoded with, requests must run at
the same time, a finished or cancelled request must free its slot at once, and one slow reader must
never stall the others.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server
from tests.integration.test_serving_behaviour import NO_EOS, long_stream, metric


@pytest.fixture
def start_slots(start_server: Callable[..., Server], tiny_model: Path) -> Callable[..., Server]:
    """Start `hal0 serve` on the tiny model with `parallel` slots."""

    def start(parallel: int, queue_limit: int = 16, **model: object) -> Server:
        config = {"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 2048, "n_threads": 1, "parallel": parallel, **model}
        return start_server(server={"queue_limit": queue_limit}, models=[config])

    return start


def greedy(prompt: str, tokens: int = 48) -> dict:
    return {"prompt": prompt, "max_tokens": tokens, "temperature": 0, "logit_bias": NO_EOS}


def complete(server: Server, body: dict) -> dict:
    response = httpx.post(f"{server.url}/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def streamed_text(server: Server, body: dict) -> str:
    text = []
    with httpx.stream("POST", f"{server.url}/v1/completions", json={**body, "stream": True}, timeout=120) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: {"):
                text.extend(choice["text"] for choice in json.loads(line[6:])["choices"])
    return "".join(text)


def test_greedy_output_is_the_same_alone_and_beside_others(start_slots: Callable[..., Server], start_server: Callable[..., Server]) -> None:
    server = start_slots(parallel=4)
    prompts = ["the", "a b c", "zz", "hello world"]
    alone = complete(server, greedy("the"))["choices"][0]["text"]
    assert complete(server, greedy("the"))["choices"][0]["text"] == alone  # deterministic
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda prompt: streamed_text(server, greedy(prompt)), prompts))
    assert together[0] == alone
    # ... and the same as the single-turn path (parallel: 1) gives.
    single = start_server()
    assert complete(single, greedy("the"))["choices"][0]["text"] == alone


def test_requests_run_at_the_same_time_and_beyond_slots_and_queue_get_503(start_slots: Callable[..., Server], start_server: Callable[..., Server]) -> None:
    server = start_slots(parallel=2, queue_limit=0)
    with (
        server.client() as one,
        server.client() as two,
        one.stream("POST", "/v1/completions", json=long_stream(600)) as first,
        two.stream("POST", "/v1/completions", json=long_stream(600)) as second,
    ):
        lines_1, lines_2 = first.iter_lines(), second.iter_lines()
        assert next(lines_1).startswith("data: ") and next(lines_2).startswith("data: ")  # both are generating
        assert metric(server, 'hal0_busy_slots{model="tiny"}') == 2
        refused = httpx.post(f"{server.url}/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)
        assert refused.status_code == 503 and refused.headers["retry-after"].isdigit()
        rest_1 = [line for line in lines_1 if line]
        rest_2 = [line for line in lines_2 if line]
    assert rest_1[-1] == rest_2[-1] == "data: [DONE]"
    assert len(rest_1) >= 590 and len(rest_2) >= 590  # nothing cut off
    assert metric(server, 'hal0_decode_step_generated_tokens_count{model="tiny"}') > 0
    assert complete(server, {"prompt": "x", "max_tokens": 2})["usage"]["completion_tokens"] <= 2


def test_a_cancelled_stream_frees_its_slot_at_once(start_slots: Callable[..., Server], start_server: Callable[..., Server]) -> None:
    # Slots long enough that the kept stream is still generating when the dropped one is gone.
    server = start_slots(parallel=2, queue_limit=0, n_ctx=16384)
    with server.client() as keep, keep.stream("POST", "/v1/completions", json=long_stream(8000)) as running:
        lines = running.iter_lines()
        next(lines)
        with server.client() as http, http.stream("POST", "/v1/completions", json=long_stream(8000)) as dropped:
            next(dropped.iter_lines())
        # The dropped client's slot is free again well before the other stream ends.
        deadline = time.monotonic() + 10
        while metric(server, 'hal0_busy_slots{model="tiny"}') > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(server, 'hal0_busy_slots{model="tiny"}') == 1
        after = httpx.post(f"{server.url}/v1/completions", json={"prompt": "x", "max_tokens": 4}, timeout=30)
        assert after.status_code == 200
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"


def test_a_slow_reader_never_stalls_the_others(start_slots: Callable[..., Server], start_server: Callable[..., Server]) -> None:
    server = start_slots(parallel=2)
    with server.client() as slow, slow.stream("POST", "/v1/completions", json=long_stream(1500)) as stalled:
        next(stalled.iter_lines())  # then read nothing more while the other request runs
        # The other request runs to its end while the stalled stream is still open and unread.
        result = complete(server, greedy("other", tokens=200))
        assert result["usage"]["completion_tokens"] == 200


def test_sampling_is_per_request(start_slots: Callable[..., Server], start_server: Callable[..., Server]) -> None:
    server = start_slots(parallel=3)
    sampled = {"prompt": "the", "max_tokens": 24, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": 7, "logit_bias": NO_EOS}
    with ThreadPoolExecutor(3) as pool:
        runs = list(pool.map(lambda body: complete(server, body)["choices"][0]["text"], [sampled, sampled, greedy("the", 24)]))
    assert runs[0] == runs[1]  # same seed, same text, even side by side
    assert complete(server, {**sampled, "seed": 8})["choices"][0]["text"] != runs[0] or runs[0] == runs[2]
    limited = complete(server, greedy("the", 5))
    assert limited["usage"]["completion_tokens"] == 5 and limited["choices"][0]["finish_reason"] == "length"
    text = complete(server, greedy("the", 40))["choices"][0]["text"]
    stop = text[10:13]
    stopped = complete(server, {**greedy("the", 40), "stop": [stop]})["choices"][0]
    assert stopped["finish_reason"] == "stop" and stopped["text"] == text[: text.index(stop)]


def test_chat_completions_use_the_chat_template_and_stream(start_slots: Callable[..., Server], start_server: Callable[..., Server]) -> None:
    server = start_slots(parallel=2)
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0, "logit_bias": NO_EOS}
    response = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "chat.completion" and answer["model"] == "tiny"
    assert answer["usage"]["prompt_tokens"] > 3  # the template wrapped the message
    chunks = []
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as stream:
        chunks = [line for line in stream.iter_lines() if line]
    assert chunks[-1] == "data: [DONE]"
    assert '"role":"assistant"' in chunks[0]
    # json_object: the handler's JSON grammar runs in this request's own sampler chain.
    constrained = httpx.post(f"{server.url}/v1/chat/completions", json={**body, "max_tokens": 60, "response_format": {"type": "json_object"}}, timeout=60)
    assert constrained.json()["choices"][0]["message"]["content"].lstrip().startswith("{")
    single = start_server()
    reference = httpx.post(f"{single.url}/v1/chat/completions", json=body, timeout=60).json()
    assert reference["choices"][0]["message"]["content"] == answer["choices"][0]["message"]["content"]
    assert reference["usage"]["prompt_tokens"] == answer["usage"]["prompt_tokens"]


def test_a_prompt_longer_than_a_slot_is_a_clear_400(start_slots: Callable[..., Server], start_server: Callable[..., Server]) -> None:
    server = start_slots(parallel=4, n_ctx_per_slot=128)
    response = httpx.post(f"{server.url}/v1/completions", json={"prompt": "word " * 400, "max_tokens": 4}, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_queue_wait_and_slots_are_exported(start_slots: Callable[..., Server]) -> None:
    server = start_slots(2)
    complete(server, greedy("x", 8))
    assert metric(server, 'hal0_queue_wait_seconds_count{model="tiny"}') >= 1
    assert metric(server, 'hal0_slots{model="tiny"}') == 2
