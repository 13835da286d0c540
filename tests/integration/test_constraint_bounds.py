"""The adversarial schemas that once held hal0 up, replayed against a real server (tiny model, two
slots, `request_timeout_s: 5`), each while another agent works: that agent is not held up, and the
attacker's request ends within its bounds.

Before llguidance (hal0 at 6348c67) each of these stalled: a 16-wide, 4-deep `anyOf` made token
steps take 26-29 s (another agent waited 27.5 s); a 50,000-value `enum` took 24 s to build its
sampler on the scheduler thread and stalled another agent's stream for 22.8 s; a tool schema with
`maximum: 1e19` kept `GET /health` waiting 9.3 s on the event loop. The bounds below are generous
(a loaded 2-core machine) and an order of magnitude under those.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import Server

ASK = [{"role": "user", "content": "go"}]


def nested_any_of(width: int = 16, depth: int = 4) -> dict[str, Any]:
    """`depth` levels of `width`-way anyOf through $defs (about 5 KB of schema)."""
    defs: dict[str, Any] = {"L0": {"type": "object", "properties": {"a": {"type": "string", "maxLength": 8}, "b": {"type": "integer"}}, "required": ["a"]}}
    for level in range(1, depth + 1):
        below = f"#/$defs/L{level - 1}"
        defs[f"L{level}"] = {"anyOf": [{"type": "object", "properties": {f"k{i}": {"$ref": below}}, "required": [f"k{i}"]} for i in range(width)]}
    return {"$defs": defs, "$ref": f"#/$defs/L{depth}"}


def schema_request(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"messages": ASK, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}, **extra}


@pytest.fixture
def two_slots(start_server: Callable[..., Server], tiny_model: Any) -> Server:
    return start_server(
        server={"request_timeout_s": 5, "max_body_bytes": 2_000_000},
        models=[{"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 8192, "n_threads": 1, "parallel": 2}],
    )


def in_background(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        started = time.perf_counter()
        result["value"] = work()
        result["seconds"] = time.perf_counter() - started

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def victim_request(server: Server) -> float:
    """Seconds another agent waits for a 2-token completion."""
    started = time.perf_counter()
    response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": ASK, "max_tokens": 2}, headers={"X-hal0-Agent": "victim"}, timeout=120)
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


def test_a_deep_any_of_neither_stalls_its_steps_nor_another_agent(two_slots: Server) -> None:
    schema = nested_any_of()
    assert len(json.dumps(schema)) > 4000
    attacker, result = in_background(lambda: httpx.post(
        f"{two_slots.url}/v1/chat/completions", json=schema_request(schema, max_tokens=300, temperature=1.0, seed=1),
        headers={"X-hal0-Agent": "attacker"}, timeout=120))
    time.sleep(0.5)
    waited = victim_request(two_slots)
    attacker.join(120)
    assert waited < 5, f"another agent waited {waited:.1f} s while the anyOf schema ran"
    response = result["value"]
    assert response.status_code == 200, response.text
    assert result["seconds"] < 5 + 5, f"the request ran {result['seconds']:.1f} s with request_timeout_s: 5"


def test_a_huge_enum_compiles_off_the_decode_loop(two_slots: Server) -> None:
    schema = {"enum": [f"value-{index}" for index in range(50_000)]}
    assert len(json.dumps(schema)) > 480_000
    arrivals: list[float] = []

    def stream() -> None:
        body = {"messages": ASK, "max_tokens": 4000, "stream": True, "logit_bias": {"2": -100, "4": -100}}
        with httpx.stream("POST", f"{two_slots.url}/v1/chat/completions", json=body, headers={"X-hal0-Agent": "victim"}, timeout=120) as response:
            arrivals.extend(time.perf_counter() for line in response.iter_lines() if line.startswith("data: {"))

    victim = threading.Thread(target=stream)
    victim.start()
    time.sleep(0.3)  # the victim's stream is under way in its slot
    sent = time.perf_counter()
    response = httpx.post(f"{two_slots.url}/v1/chat/completions", json=schema_request(schema, max_tokens=20),
                          headers={"X-hal0-Agent": "attacker"}, timeout=120)
    answered = time.perf_counter()
    victim.join(120)
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["choices"][0]["message"]["content"]) in schema["enum"]
    during = [later - earlier for earlier, later in itertools.pairwise(arrivals) if sent <= later <= answered]
    assert len(during) > 20, f"the victim's stream did not overlap the enum's {answered - sent:.2f} s (it had {len(arrivals)} chunks)"
    assert max(during) < 1, f"the victim's stream stalled {max(during):.2f} s while the enum compiled"


def test_an_unenforceable_number_range_is_a_quick_400_and_health_keeps_answering(two_slots: Server) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "number", "maximum": 1e19}}}}}
    attacker, result = in_background(lambda: httpx.post(
        f"{two_slots.url}/v1/chat/completions", json={"messages": ASK, "tools": [tool], "max_tokens": 5}, timeout=60))
    health = []
    while attacker.is_alive() or not health:
        started = time.perf_counter()
        assert httpx.get(f"{two_slots.url}/health", timeout=30).status_code == 200
        health.append(time.perf_counter() - started)
    attacker.join()
    response = result["value"]
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_schema" and "'maximum' at $.properties.x.maximum" in error["message"]
    assert error["param"] == "tools[0].function.parameters"
    assert max(health) < 1, f"/health waited {max(health):.2f} s"


def test_the_request_timeout_holds_under_a_costly_schema(two_slots: Server) -> None:
    """Every step of a constrained generation is bounded (llguidance's step fuel), so the deadline is
    checked often: a long constrained generation ends at request_timeout_s, not after it."""
    nested = nested_any_of(8, 3)
    schema = {"$defs": nested["$defs"], "type": "array", "items": {"$ref": nested["$ref"]}}
    started = time.perf_counter()
    response = httpx.post(f"{two_slots.url}/v1/chat/completions",
                          json=schema_request(schema, max_tokens=1900, temperature=1.0, seed=3, logit_bias={"2": -100, "4": -100}), timeout=120)
    took = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert took < 5 + 3, f"request_timeout_s is 5 but the request took {took:.1f} s"
