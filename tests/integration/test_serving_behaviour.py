"""Queueing, cancellation, timeouts, health states, reload and metrics of a real `hal0 serve`."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from hal0.app import create_app
from hal0.config import load_text
from starlette.testclient import TestClient

from tests.conftest import Server

# The tiny model has random weights: it may end a turn early, and its random bytes are rarely valid
# UTF-8 (llama-cpp-python then holds text back). Banning end tokens and bytes >= 0x80 (token ids
# 133-260) makes long generations steady.
NO_EOS = {"2": -100, "4": -100, **{str(5 + byte): -100 for byte in range(128, 256)}}


def long_stream(max_tokens: int = 900) -> dict:
    return {"prompt": "the", "max_tokens": max_tokens, "stream": True, "temperature": 0, "logit_bias": NO_EOS}


def metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def long_context(tiny_model: Path) -> list[dict]:
    """The tiny model with room for streams long enough to be still running while a test looks."""
    return [{"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 8192, "n_threads": 1}]


def test_full_queue_gets_503_with_retry_after_and_the_stream_finishes(start_server: Callable[..., Server], tiny_model: Path) -> None:
    server = start_server(server={"queue_limit": 0}, models=long_context(tiny_model))
    with server.client() as http, http.stream("POST", "/v1/completions", json=long_stream(8000)) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("data: ")  # the generation is running
        refused = httpx.post(f"{server.url}/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)
        assert refused.status_code == 503
        assert refused.headers["retry-after"].isdigit()
        assert refused.json()["error"]["code"] == "overloaded"
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    assert len(rest) >= 7990  # ~one chunk per token: nothing was cut off
    after = httpx.post(f"{server.url}/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)
    assert after.status_code == 200


def test_a_waiting_request_never_cuts_off_a_running_stream(start_server: Callable[..., Server], tiny_model: Path) -> None:
    server = start_server(server={"queue_limit": 4}, models=long_context(tiny_model))
    results: dict[str, object] = {}

    def second() -> None:
        response = httpx.post(f"{server.url}/v1/completions", json={"prompt": "y", "max_tokens": 3}, timeout=60)
        results["second"] = (response.status_code, time.monotonic())

    with server.client() as http, http.stream("POST", "/v1/completions", json=long_stream(8000)) as stream:
        lines = stream.iter_lines()
        next(lines)
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.2)
        assert metric(server, 'hal0_queue_depth{model="tiny"}') == 1
        rest = [line for line in lines if line]
        stream_done = time.monotonic()
    waiter.join(30)
    assert rest[-1] == "data: [DONE]" and len(rest) >= 7990
    status, finished = results["second"]  # type: ignore[misc]
    assert status == 200 and finished >= stream_done - 0.05  # it waited its turn


def test_a_client_that_disconnects_cancels_its_stream(start_server: Callable[..., Server]) -> None:
    server = start_server()
    with server.client() as http, http.stream("POST", "/v1/completions", json=long_stream(1000)) as stream:
        next(stream.iter_lines())
    # The generation stops within a token or so; the model is free again at once.
    deadline = time.monotonic() + 10
    while metric(server, 'hal0_model_busy{model="tiny"}') and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metric(server, 'hal0_model_busy{model="tiny"}') == 0
    generated = metric(server, 'hal0_generated_tokens_total{model="tiny"}')
    assert 0 < generated < 500, generated


def test_a_client_that_disconnects_cancels_a_non_streaming_generation(start_server: Callable[..., Server], tiny_model: Path) -> None:
    server = start_server(models=[{"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 8192, "n_threads": 1}])
    body = {"prompt": "the", "max_tokens": 8000, "temperature": 0, "logit_bias": NO_EOS}
    with contextlib.suppress(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=0.3)
    deadline = time.monotonic() + 20
    while metric(server, 'hal0_model_busy{model="tiny"}') and time.monotonic() < deadline:
        time.sleep(0.02)
    assert metric(server, 'hal0_model_busy{model="tiny"}') == 0
    # Stopped early: the metric counts the tokens the model really generated, far fewer than asked.
    assert metric(server, 'hal0_generated_tokens_total{model="tiny"}') < 7000
    assert httpx.post(f"{server.url}/v1/completions", json={"prompt": "x", "max_tokens": 2}).status_code == 200


def test_request_timeout_stops_a_long_generation(start_server: Callable[..., Server], tiny_model: Path) -> None:
    # A context and a stream long enough that no machine writes it all within the timeout (the tiny model
    # writes about 3000 tokens/s on a quiet 2-core box: 8000 take seconds).
    server = start_server(server={"request_timeout_s": 0.3}, models=[{"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 8192}])
    body = {"prompt": "the", "max_tokens": 8000, "temperature": 0, "logit_bias": NO_EOS, "stream": True}
    with server.client() as http, http.stream("POST", "/v1/completions", json=body) as stream:
        lines = [line for line in stream.iter_lines() if line]
    # EOS is banned and max_tokens is 8000: a stream that ends cleanly well short of it was stopped by the timeout.
    assert lines[-1] == "data: [DONE]" and len(lines) < 7900


def test_failed_model_load_is_503_with_the_reason_and_the_process_stays_up(start_server: Callable[..., Server]) -> None:
    server = start_server(models=[{"id": "gone", "path": "/nonexistent/model.gguf", "default": True}])
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "failed"
    assert "model file not found: /nonexistent/model.gguf" in body["reason"]
    chat = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
    assert chat.status_code == 503 and chat.json()["error"]["code"] == "model_unavailable"
    assert server.process.poll() is None


def test_health_is_503_loading_until_models_are_loaded() -> None:
    loaded = load_text("models:\n  - {id: m, path: /models/m.gguf}\n", "inline.yaml", {})
    with TestClient(create_app(loaded, load_models=False)) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "loading"


def test_sighup_reloads_policy_and_keeps_the_last_good_config_on_a_bad_file(start_server: Callable[..., Server]) -> None:
    server = start_server()
    body = {"prompt": "x" * 3000, "max_tokens": 1}
    assert httpx.post(f"{server.url}/v1/completions", json=body).status_code != 413
    good = server.config_path.read_text().replace("log_level: warning", "log_level: warning\n  max_body_bytes: 2048")
    server.write_config(good)
    server.reload()
    deadline = time.monotonic() + 10
    while httpx.post(f"{server.url}/v1/completions", json=body).status_code != 413:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    pid_before = server.process.pid
    server.write_config("server: {port: [broken\n")
    server.reload()
    deadline = time.monotonic() + 10
    while "config reload refused" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
    assert "YAML syntax error" in server.log()
    assert httpx.post(f"{server.url}/v1/completions", json=body).status_code == 413  # last good config kept
    assert httpx.post(f"{server.url}/v1/completions", json={"prompt": "x", "max_tokens": 1}).status_code == 200
    assert server.process.poll() is None and server.process.pid == pid_before


def test_metrics_export_ttft_tokens_queue_and_state(server: Server) -> None:
    httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 4}, timeout=30)
    with server.client() as http, http.stream("POST", "/v1/completions", json={"prompt": "a", "max_tokens": 3, "stream": True}) as s:
        list(s.iter_lines())
    assert metric(server, 'hal0_time_to_first_token_seconds_count{model="tiny"}') == 2
    assert metric(server, 'hal0_generated_tokens_total{model="tiny"}') >= 4
    assert metric(server, 'hal0_prompt_tokens_total{model="tiny"}') > 0
    assert metric(server, 'hal0_model_state{model="tiny",state="ready"}') == 1
    assert metric(server, 'hal0_queue_depth{model="tiny"}') == 0
    assert metric(server, 'hal0_requests_total{method="POST",route="/v1/chat/completions",status="200"}') == 1


def test_a_reload_that_changes_the_gpu_devices_says_a_restart_is_needed(start_server: Callable[..., Server]) -> None:
    # server.gpu_devices reaches llama.cpp through the process's environment (roles/hal0 renders it into the unit),
    # so a reload cannot apply it: the reload says so, and the role restarts.
    server = start_server(server={"log_level": "info"})
    server.write_config(server.config_path.read_text().replace("log_level: info", "log_level: info\n  gpu_devices: [0]"))
    server.reload()
    deadline = time.monotonic() + 10
    while "gpu_devices changed: restart hal0 to apply them" not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)
