"""Persona quotas over real HTTP and real llama.cpp: 429 rate_limit_exceeded in OpenAI's shape with a
Retry-After, other agents unaffected, counters per agent id that survive a reload, bounded metrics."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Server
from tests.integration.mcp_helpers import mcp_client, memory_on

NO_EOS = {"2": -100, "4": -100, **{str(5 + byte): -100 for byte in range(128, 256)}}
SHORT = {"prompt": "hello", "max_tokens": 2, "temperature": 0}


def agents(**limits: Any) -> dict[str, Any]:
    return {"default_agent": "guest", "personas": [
        {"id": "guest", "tools": ["memory:*"], "limits": limits},
        {"id": "free", "tools": ["memory:*"]},
    ]}


def post(server: Server, agent: str | None, body: dict[str, Any] = SHORT, path: str = "/v1/completions") -> httpx.Response:
    headers = {"X-hal0-Agent": agent} if agent else {}
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=60)


def metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def assert_limited(response: httpx.Response, quota: str, kind: str) -> int:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == kind, error
    assert f"agents.personas[].limits.{quota}" in error["message"]
    retry = response.headers["retry-after"]
    assert retry.isdigit() and 1 <= int(retry) <= 60, retry
    assert f"retry after {retry}s" in error["message"]
    return int(retry)


def test_requests_per_minute_per_agent_id_and_it_survives_a_reload(start_server: Callable[..., Server], tmp_path: Path) -> None:
    server = start_server(agents=agents(requests_per_minute=2), memory=memory_on(tmp_path))
    assert post(server, "ann").status_code == 200
    assert post(server, "ann", path="/v1/chat/completions",
                body={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).status_code == 200
    assert_limited(post(server, "ann"), "requests_per_minute", "requests")
    # A tool call is a request too, through the same door (REST memory -> 429, MCP -> a tool error).
    assert_limited(httpx.post(f"{server.url}/api/memory", json={"text": "x"}, headers={"X-hal0-Agent": "ann"}),
                   "requests_per_minute", "requests")

    async def mcp() -> Any:
        async with mcp_client(f"{server.url}/mcp/memory", agent="ann") as client:
            return await client.call_tool("remember", {"text": "x"})

    refused = asyncio.run(mcp())
    assert refused.is_error and "requests_per_minute" in refused.content[0].text
    # Others: another id with the same (default) persona, the header-less default agent, another persona.
    assert post(server, "bob").status_code == 200
    assert post(server, None).status_code == 200
    for _ in range(4):
        assert post(server, "free").status_code == 200
    assert metric(server, 'hal0_rate_limited_total{persona="guest",quota="requests_per_minute"}') == 3
    assert metric(server, 'hal0_agent_requests_total{persona="guest"}') == 4
    assert metric(server, 'hal0_agent_requests_total{persona="free"}') == 4
    assert metric(server, 'hal0_agent_tokens_total{persona="free"}') > 0
    assert "ann" not in httpx.get(f"{server.url}/metrics").text  # labels are personas, never agent ids

    server.write_config(server.config_path.read_text().replace("requests_per_minute: 2", "requests_per_minute: 3"))
    server.reload()
    for _ in range(100):  # SIGHUP is asynchronous: wait for the reload, at most 5 s
        if "config reloaded" in server.log():
            break
        time.sleep(0.05)
    # The new limit (3) applies to the old count (2 within the minute): one more, then 429 again.
    assert post(server, "ann").status_code == 200
    assert_limited(post(server, "ann"), "requests_per_minute", "requests")
    overview = httpx.get(f"{server.url}/").text
    row = overview.split('data-agent="ann"', 1)[1].split("</tr>", 1)[0]
    assert "3 / 3" in row and 'data-limited="4"' in row, row


def test_tokens_per_minute_counts_prompt_and_generated_tokens(start_server: Callable[..., Server]) -> None:
    server = start_server(agents=agents(tokens_per_minute=10))
    first = post(server, "ann", {"prompt": "one two three", "max_tokens": 8, "temperature": 0, "logit_bias": NO_EOS})
    assert first.status_code == 200 and first.json()["usage"]["total_tokens"] >= 10
    assert_limited(post(server, "ann"), "tokens_per_minute", "tokens")
    assert post(server, "bob").status_code == 200
    assert metric(server, 'hal0_rate_limited_total{persona="guest",quota="tokens_per_minute"}') == 1


def test_max_concurrent_refuses_the_extra_generation_of_that_agent_only(start_server: Callable[..., Server]) -> None:
    server = start_server(agents=agents(max_concurrent=1))
    others: dict[str, int] = {}

    def other() -> None:  # waits for the model behind the long stream, then is served
        others["status"] = post(server, "bob").status_code

    long = {"prompt": "the", "max_tokens": 900, "stream": True, "temperature": 0, "logit_bias": NO_EOS}
    with server.client(headers={"X-hal0-Agent": "ann"}) as http, http.stream("POST", "/v1/completions", json=long) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("data: ")  # ann's generation is running
        assert_limited(post(server, "ann"), "max_concurrent", "requests")
        waiter = threading.Thread(target=other)
        waiter.start()
        rest = [line for line in lines if line]
    waiter.join(60)
    assert rest[-1] == "data: [DONE]"
    assert others["status"] == 200
    assert post(server, "ann").status_code == 200  # the stream's place was freed when it ended


def test_a_request_that_cannot_run_is_refused_before_it_takes_a_quota(start_server: Callable[..., Server]) -> None:
    # requests_per_minute 1: a bad schema or grammar on any dialect, streamed or not, is a 400 that counts
    # nothing (it is checked before the quota lease); the one good request after them still runs.
    server = start_server(agents=agents(requests_per_minute=1))
    unsupported = {"type": "object", "properties": {"code": {"type": "string", "not": {"const": "x"}}}}
    ask = [{"role": "user", "content": "hi"}]
    json_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": unsupported}}
    bad = [
        ("/v1/chat/completions", {"messages": ask, "max_tokens": 2, "tools": [{"type": "function", "function": {"name": "f", "parameters": unsupported}}]}),
        ("/v1/chat/completions", {"messages": ask, "max_tokens": 2, "response_format": json_schema}),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "grammar": "root ::= ("}),
        ("/v1/responses", {"input": "hi", "max_output_tokens": 2, "tools": [{"type": "function", "name": "f", "parameters": unsupported}]}),
        ("/v1/responses", {"input": "hi", "max_output_tokens": 2, "text": {"format": {"type": "json_schema", "name": "x", "schema": unsupported}}}),
        ("/v1/messages", {"messages": ask, "max_tokens": 2, "tools": [{"name": "f", "input_schema": unsupported}]}),
    ]
    for path, body in bad:
        for stream in (False, True):
            response = post(server, "ann", {**body, "stream": stream}, path)
            assert response.status_code == 400, (path, stream, response.text)
    assert post(server, "ann").status_code == 200
    assert_limited(post(server, "ann"), "requests_per_minute", "requests")
