"""Models on demand over real HTTP: on-demand loads, one shared load, keep_alive, LRU eviction under
server.max_loaded_models (busy and pinned models never evicted), /health and /v1/models states, a failed
on-demand load, and the admin tools on the same lifecycle.

Every model here is the tiny generated GGUF under another id; `HAL0_FAULT=slow-load` stretches each load
so that concurrent requests and a leaving client land inside one load deterministically.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.integration.mcp_helpers import mcp_client
from tests.integration.test_serving_behaviour import long_stream

WAIT_S = 20  # bound on every poll below


def model(tiny_model: Path, model_id: str, **fields: Any) -> dict[str, Any]:
    # n_ctx 8192: room for a stream long enough to be still running (the model busy) while a test looks.
    return {"id": model_id, "path": str(tiny_model), "n_ctx": 8192, "n_threads": 1, **fields}


def models_of(server: Server) -> dict[str, dict[str, Any]]:
    response = httpx.get(f"{server.url}/v1/models", timeout=10)
    assert response.status_code == 200
    return {entry["id"]: entry for entry in response.json()["data"]}


def state_of(server: Server, model_id: str) -> str:
    return models_of(server)[model_id]["state"]


def wait_state(server: Server, model_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        entry = models_of(server)[model_id]
        if entry["state"] == state:
            return entry
        time.sleep(0.05)
    raise AssertionError(f"{model_id} never became {state}: {models_of(server)[model_id]}\n{server.log()}")


def counter(server: Server, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    match = re.search(rf"^{re.escape(name)}{{{re.escape(wanted)}}} ([0-9.e+-]+)$" if labels else rf"^{re.escape(name)} ([0-9.e+-]+)$",
                      text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def complete(server: Server, model_id: str, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/completions", json={"model": model_id, "prompt": "a", "max_tokens": 2}, timeout=timeout)


def test_on_demand_model_loads_on_its_first_request_and_never_makes_the_box_unhealthy(
    start_server: Callable[..., Server], tiny_model: Path
) -> None:
    server = start_server(models=[model(tiny_model, "tiny", default=True), model(tiny_model, "coder", load="on_demand")])
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 200
    assert {entry["id"]: entry["state"] for entry in health.json()["models"]} == {"tiny": "ready", "coder": "unloaded"}
    listed = models_of(server)
    assert listed["coder"]["state"] == "unloaded" and listed["coder"]["load"] == "on_demand" and listed["coder"]["since"] is None
    assert listed["tiny"]["state"] == "ready" and listed["tiny"]["since"] <= time.time()
    assert counter(server, "hal0_loaded_models") == 1

    response = complete(server, "coder")
    assert response.status_code == 200 and response.json()["model"] == "coder"
    coder = models_of(server)["coder"]
    assert coder["state"] == "ready" and coder["since"] is not None and coder["idle_deadline"] is None  # no keep_alive
    assert counter(server, "hal0_model_loads_total", model="coder", reason="request") == 1
    assert counter(server, "hal0_model_loads_total", model="tiny", reason="startup") == 1
    assert counter(server, "hal0_model_load_duration_seconds_count", model="coder") == 1
    assert counter(server, "hal0_loaded_models") == 2
    assert complete(server, "coder").status_code == 200
    assert counter(server, "hal0_model_loads_total", model="coder", reason="request") == 1  # loaded once


def test_concurrent_first_requests_share_one_load(start_server: Callable[..., Server], tiny_model: Path) -> None:
    server = start_server(models=[model(tiny_model, "tiny", default=True), model(tiny_model, "coder", load="on_demand")],
                          env={"HAL0_FAULT": "slow-load", "HAL0_FAULT_SECONDS": "1.5"})
    results: list[int] = []

    def ask() -> None:
        results.append(complete(server, "coder").status_code)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    entry = wait_state(server, "coder", "loading")
    assert entry["since"] is not None
    deadline = time.monotonic() + WAIT_S
    while counter(server, "hal0_queue_depth", model="coder") < 4:  # all four wait for the one load
        assert time.monotonic() < deadline, models_of(server)
        time.sleep(0.02)
    for thread in threads:
        thread.join(WAIT_S)
    assert results == [200, 200, 200, 200]
    assert counter(server, "hal0_model_loads_total", model="coder", reason="request") == 1


def test_a_client_that_leaves_while_waiting_does_not_cancel_the_load(start_server: Callable[..., Server], tiny_model: Path) -> None:
    server = start_server(models=[model(tiny_model, "tiny", default=True), model(tiny_model, "coder", load="on_demand")],
                          env={"HAL0_FAULT": "slow-load", "HAL0_FAULT_SECONDS": "3"})
    with pytest.raises(httpx.ReadTimeout):
        complete(server, "coder", timeout=0.3)  # gives up (disconnects) during the load
    deadline = time.monotonic() + WAIT_S
    while counter(server, "hal0_queue_depth", model="coder") != 0:  # its place in the queue is given up...
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert state_of(server, "coder") == "loading"  # ...but the load goes on
    wait_state(server, "coder", "ready")  # nobody else asked: the load finished on its own
    assert counter(server, "hal0_model_loads_total", model="coder", reason="request") == 1
    assert complete(server, "coder").status_code == 200
    assert counter(server, "hal0_model_loads_total", model="coder", reason="request") == 1


def test_a_load_longer_than_the_request_timeout_is_a_503_with_retry_after_and_goes_on(
    start_server: Callable[..., Server], tiny_model: Path
) -> None:
    server = start_server(server={"request_timeout_s": 0.5},
                          models=[model(tiny_model, "tiny", default=True), model(tiny_model, "coder", load="on_demand")],
                          env={"HAL0_FAULT": "slow-load", "HAL0_FAULT_SECONDS": "3"})
    response = complete(server, "coder")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable" and "is not loaded yet" in response.json()["error"]["message"]
    assert int(response.headers["retry-after"]) >= 1
    wait_state(server, "coder", "ready")
    assert complete(server, "coder").status_code == 200


def test_keep_alive_unloads_an_idle_model_and_the_next_request_loads_it_again(
    start_server: Callable[..., Server], tiny_model: Path
) -> None:
    server = start_server(models=[model(tiny_model, "tiny", default=True), model(tiny_model, "coder", load="on_demand", keep_alive="1s")])
    assert complete(server, "coder").status_code == 200
    ready = models_of(server)["coder"]
    assert ready["state"] == "ready" and ready["keep_alive_s"] == 1
    assert ready["idle_deadline"] is not None and ready["idle_deadline"] >= ready["last_used"]
    unloaded = wait_state(server, "coder", "unloaded")
    assert unloaded["since"] is None and unloaded["idle_deadline"] is None
    assert counter(server, "hal0_model_unloads_total", model="coder", reason="keep_alive") == 1
    assert state_of(server, "tiny") == "ready"  # no keep_alive: stays
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert complete(server, "coder").status_code == 200
    assert counter(server, "hal0_model_loads_total", model="coder", reason="request") == 2


def test_lru_eviction_under_max_loaded_models_never_evicts_a_busy_model(start_server: Callable[..., Server], tiny_model: Path) -> None:
    server = start_server(
        server={"max_loaded_models": 2},
        models=[model(tiny_model, "tiny", default=True), model(tiny_model, "a", load="on_demand"), model(tiny_model, "b", load="on_demand")],
    )
    assert complete(server, "tiny").status_code == 200
    assert complete(server, "a").status_code == 200  # tiny + a: full
    assert complete(server, "b").status_code == 200  # evicts tiny, the least recently used
    states = {key: entry["state"] for key, entry in models_of(server).items()}
    assert states == {"tiny": "unloaded", "a": "ready", "b": "ready"}
    assert counter(server, "hal0_model_unloads_total", model="tiny", reason="evicted") == 1

    # a is now the least recently used, but busy: loading tiny must evict b instead.
    with server.client() as http, http.stream("POST", "/v1/completions", json={**long_stream(8000), "model": "a"}) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("data: ")
        assert complete(server, "b").status_code == 200  # b is the most recent now; a is still streaming
        assert complete(server, "tiny").status_code == 200
        states = {key: entry["state"] for key, entry in models_of(server).items()}
        assert states == {"tiny": "ready", "a": "ready", "b": "unloaded"}
        assert next(line for line in lines if line).startswith("data: {")  # the busy model's stream goes on
    assert counter(server, "hal0_model_unloads_total", model="a", reason="evicted") == 0
    assert counter(server, "hal0_loaded_models") == 2


def test_when_nothing_can_be_evicted_the_request_waits_for_a_model_to_go_idle(
    start_server: Callable[..., Server], tiny_model: Path
) -> None:
    server = start_server(server={"max_loaded_models": 1, "queue_limit": 0},
                          models=[model(tiny_model, "tiny", default=True), model(tiny_model, "a", load="on_demand")])
    result: dict[str, int] = {}

    def ask() -> None:
        result["a"] = complete(server, "a").status_code

    waiter = threading.Thread(target=ask)
    with server.client() as http, http.stream("POST", "/v1/completions", json=long_stream(8000)) as stream:
        lines = stream.iter_lines()
        next(lines)
        waiter.start()
        wait_state(server, "a", "loading")  # waiting for room: tiny is busy, so it cannot be evicted
        assert counter(server, "hal0_queue_depth", model="a") == 1  # waiting, counted in the queue
        refused = complete(server, "a")  # a's queue (slots + queue_limit 0) is full
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "overloaded"
        assert int(refused.headers["retry-after"]) >= 1
        assert state_of(server, "tiny") == "ready" and "a" not in result
        assert next(line for line in lines if line).startswith("data: {")  # tiny is still generating
    # The stream is closed (its generation cancelled): tiny goes idle, is evicted, and a loads.
    waiter.join(WAIT_S)
    assert result["a"] == 200
    assert {key: entry["state"] for key, entry in models_of(server).items()} == {"tiny": "unloaded", "a": "ready"}


def test_a_pinned_model_is_never_evicted(start_server: Callable[..., Server], tiny_model: Path) -> None:
    server = start_server(
        server={"max_loaded_models": 2},
        models=[model(tiny_model, "tiny", default=True, pinned=True), model(tiny_model, "a", load="on_demand"),
                model(tiny_model, "b", load="on_demand")],
    )
    assert complete(server, "a").status_code == 200  # tiny + a: full
    assert complete(server, "tiny").status_code == 200
    assert complete(server, "b").status_code == 200  # a is the least recently used: evicted
    assert complete(server, "a").status_code == 200  # tiny is the least recently used now, but pinned: b goes
    states = {key: entry["state"] for key, entry in models_of(server).items()}
    assert states == {"tiny": "ready", "a": "ready", "b": "unloaded"}
    assert models_of(server)["tiny"]["pinned"] is True
    assert counter(server, "hal0_model_unloads_total", model="tiny", reason="evicted") == 0
    assert counter(server, "hal0_model_unloads_total", model="a", reason="evicted") == 1
    assert counter(server, "hal0_model_unloads_total", model="b", reason="evicted") == 1


def test_a_model_file_that_fails_to_load_on_demand_is_a_clear_503_and_the_box_stays_healthy(
    start_server: Callable[..., Server], tiny_model: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)  # a GGUF header and nothing usable behind it
    server = start_server(models=[model(tiny_model, "tiny", default=True), model(broken, "broken", load="on_demand"),
                                  model(tmp_path / "missing.gguf", "missing", load="on_demand")])
    for model_id in ("broken", "missing"):
        response = httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                              json={"model": model_id, "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "model_unavailable" and f"model {model_id!r} failed to load" in error["message"]
        entry = models_of(server)[model_id]
        assert entry["state"] == "failed" and entry["error"]
        assert counter(server, "hal0_model_load_failures_total", model=model_id, reason="request") == 1
    assert "model file not found" in models_of(server)["missing"]["error"]
    health = httpx.get(f"{server.url}/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert complete(server, "tiny").status_code == 200
    assert server.process.poll() is None


def call_admin(server: Server, name: str, arguments: dict[str, Any]) -> Any:
    async def run() -> Any:
        async with mcp_client(f"{server.url}/mcp/admin", agent="ops") as client:
            return await client.call_tool(name, arguments)

    return asyncio.run(run())


def test_admin_load_and_unload_act_on_the_same_lifecycle(start_server: Callable[..., Server], tiny_model: Path, tmp_path: Path) -> None:
    agents = {"personas": [{"id": "ops", "tools": ["admin:*"]}],
              "approvals": {"path": str(tmp_path / "approvals.db"),
                            "rules": [{"match": {"agent": "ops", "tool": "admin:*"}, "decision": "allow", "reason": "test operator"}]}}
    server = start_server(
        server={"max_loaded_models": 2}, agents=agents,
        models=[model(tiny_model, "tiny", default=True), model(tiny_model, "a", load="on_demand", keep_alive="1h"),
                model(tiny_model, "b", load="on_demand")],
    )
    loaded = call_admin(server, "load_model", {"model": "a"})
    assert not loaded.is_error, loaded
    result = loaded.structured_content
    assert result["changed"] is True and result["state"] == "ready" and result["idle_deadline"] > time.time()
    assert call_admin(server, "load_model", {"model": "a"}).structured_content["changed"] is False
    assert counter(server, "hal0_model_loads_total", model="a", reason="admin") == 1

    listed = call_admin(server, "list_models", {}).structured_content["models"]
    assert {entry["id"]: entry["state"] for entry in listed} == {"tiny": "ready", "a": "ready", "b": "unloaded"}

    assert call_admin(server, "load_model", {"model": "b"}).structured_content["state"] == "ready"  # evicts tiny (LRU)
    assert state_of(server, "tiny") == "unloaded"
    assert counter(server, "hal0_model_unloads_total", model="tiny", reason="evicted") == 1

    unloaded = call_admin(server, "unload_model", {"model": "a"}).structured_content
    assert unloaded["changed"] is True and unloaded["state"] == "unloaded"
    assert counter(server, "hal0_model_unloads_total", model="a", reason="admin") == 1
    assert call_admin(server, "unload_model", {"model": "a"}).structured_content["changed"] is False
    assert complete(server, "a").status_code == 200  # unloaded by an admin, loaded again by the next request
    assert counter(server, "hal0_model_loads_total", model="a", reason="request") == 1

    unknown = call_admin(server, "load_model", {"model": "nope"})
    assert unknown.is_error and "'nope' does not exist" in unknown.content[0].text

    page = httpx.get(f"{server.url}/ui/models", timeout=10).text  # the dashboard reads the same states
    assert 'data-model-state="tiny">unloaded<' in page and 'data-model-state="a">ready<' in page
    assert 'data-model-load="a">on demand' in page
