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


def test_a_personas_default_reasoning_format(start_server, tiny_model) -> None:
    """params.reasoning_format: none keeps the reasoning inline for the persona's agents, unless a request says otherwise."""
    server: Server = start_server(agents={"personas": [{"id": "inline", "params": {"reasoning_format": "none"}}]})
    body = {"messages": ASK, "grammar": GRAMMAR, "max_tokens": 100}
    headers = {"X-hal0-Agent": "inline"}
    inline = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=60).json()["choices"][0]["message"]
    assert inline["content"] == REPLY and "reasoning_content" not in inline
    split = httpx.post(f"{server.url}/v1/chat/completions", json={**body, "reasoning_format": "auto"}, headers=headers, timeout=60).json()
    assert split["choices"][0]["message"]["reasoning_content"] == "Two and two."
    others = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]["message"]
    assert others["reasoning_content"] == "Two and two."


@pytest.fixture
def qwen3(start_server, tiny_model, tmp_path) -> Server:
    """The tiny model with Qwen3's template (the sdist's): it keeps the reasoning of the turns after the
    last user query, and turns thinking off with enable_thinking: false."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    templates = Path(subprocess.run([str(root / "image/llama-templates")], capture_output=True, text=True, timeout=900, check=True).stdout.strip())
    return start_server(models=[{"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 2048, "n_threads": 1,
                                 "chat_template_file": str(templates / "Qwen-Qwen3-0.6B.jinja")}])


def test_earlier_reasoning_is_sent_back_through_messages_and_responses(qwen3: Server) -> None:
    """A thinking block (Messages) or a reasoning item (Responses) sent back reaches the template as that
    turn's reasoning_content; Qwen3's keeps it for the turns after the last user query (a tool loop)."""
    thought = "I should look the weather up for Oslo first. " * 4

    def messages_tokens(with_thought: bool) -> int:
        assistant: list[dict] = [{"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Oslo"}}]
        if with_thought:
            assistant.insert(0, {"type": "thinking", "thinking": thought, "signature": ""})
        body = {"model": "tiny", "max_tokens": 1, "temperature": 0, "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "none"},
                "messages": [{"role": "user", "content": "Weather?"}, {"role": "assistant", "content": assistant},
                             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]}]}
        reply = httpx.post(f"{qwen3.url}/v1/messages", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        return reply.json()["usage"]["input_tokens"]

    def responses_tokens(with_thought: bool) -> int:
        items: list[dict] = [{"role": "user", "content": "Weather?"},
                             {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\": \"Oslo\"}"},
                             {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]
        if with_thought:
            items.insert(1, {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": thought}]})
        body = {"model": "tiny", "input": items, "max_output_tokens": 1, "temperature": 0,
                "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}], "tool_choice": "none"}
        reply = httpx.post(f"{qwen3.url}/v1/responses", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        return reply.json()["usage"]["input_tokens"]

    assert messages_tokens(True) > messages_tokens(False) + 20
    assert responses_tokens(True) > responses_tokens(False) + 20


def test_thinking_turned_off_through_messages_and_responses(qwen3: Server) -> None:
    """Messages' thinking: disabled and Responses' reasoning.effort: none reach the template as
    enable_thinking: false (Qwen3's generation prompt then holds an empty <think></think>)."""
    def messages_tokens(**extra: object) -> int:
        body = {"model": "tiny", "max_tokens": 1, "temperature": 0, "messages": [{"role": "user", "content": "hi"}], **extra}
        return httpx.post(f"{qwen3.url}/v1/messages", json=body, timeout=60).json()["usage"]["input_tokens"]

    def responses_tokens(**extra: object) -> int:
        body = {"model": "tiny", "input": "hi", "max_output_tokens": 1, "temperature": 0, **extra}
        return httpx.post(f"{qwen3.url}/v1/responses", json=body, timeout=60).json()["usage"]["input_tokens"]

    assert messages_tokens(thinking={"type": "disabled"}) > messages_tokens()
    assert messages_tokens(thinking={"type": "disabled"}) == messages_tokens(chat_template_kwargs={"enable_thinking": False})
    assert responses_tokens(reasoning={"effort": "none"}) > responses_tokens()
    assert responses_tokens(reasoning={"effort": "none"}) == responses_tokens(chat_template_kwargs={"enable_thinking": False})
