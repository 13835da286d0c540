"""A thinking model's reasoning through chat completions on a real server: the tiny model is held by a
grammar to write a reasoning block and an answer, as a thinking model would; the block comes back as
`reasoning_content` (message and deltas) with its tokens counted, or inline with `reasoning_format:
none` (llama-server's names)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import Server

REPLY = "<think>Two and two.</think>\n\nFour."
GRAMMAR = 'root ::= "<think>Two and two.</think>\\n\\nFour."'
ASK = [{"role": "user", "content": "2+2?"}]


@pytest.mark.parametrize("parallel", [1, 2])
def test_reasoning_comes_back_as_reasoning_content(start_server, tiny_model, parallel: int) -> None:
    server: Server = start_server(models=[{"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 1024, "n_threads": 1,
                                           "parallel": parallel}])
    body = {"messages": ASK, "grammar": GRAMMAR, "max_tokens": 100}
    reply = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()
    message = reply["choices"][0]["message"]
    assert message["reasoning_content"] == "Two and two." and message["content"] == "Four."
    assert 0 < reply["usage"]["completion_tokens_details"]["reasoning_tokens"] < reply["usage"]["completion_tokens"]

    inline = httpx.post(f"{server.url}/v1/chat/completions", json={**body, "reasoning_format": "none"}, timeout=60).json()
    assert inline["choices"][0]["message"]["content"] == REPLY and "reasoning_content" not in inline["choices"][0]["message"]

    reasoning = content = ""
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json={**body, "stream": True}, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: {"):
                for choice in json.loads(line[6:])["choices"]:
                    reasoning += choice["delta"].get("reasoning_content") or ""
                    content += choice["delta"].get("content") or ""
    assert (reasoning, content) == ("Two and two.", "Four.")
