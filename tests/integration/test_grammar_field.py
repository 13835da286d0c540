"""A request's own grammar (`grammar`, as llama-server takes it: GBNF, or llguidance's Lark) on chat and
text completions: the reply matches it, whatever the sampling; a grammar that does not parse is a 400
naming it (llama-server answers 200 and runs unconstrained), and it does not combine with tools."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import Server

ASK = [{"role": "user", "content": "Answer."}]


@pytest.mark.parametrize(("grammar", "pattern"), [
    ('root ::= ("yes" | "no") "!"', r"(yes|no)!"),
    ('root ::= [0-9]{3} "-" [a-z]{1,8}\n', r"[0-9]{3}-[a-z]{1,8}"),
    ('start: "id-" /[0-9a-f]{4}/', r"id-[0-9a-f]{4}"),
])
@pytest.mark.parametrize("route", ["chat", "completions"])
def test_the_reply_matches_the_grammar(server: Server, grammar: str, pattern: str, route: str) -> None:
    for seed in range(3):
        body = {"grammar": grammar, "max_tokens": 40, "temperature": 1.0, "seed": seed}
        if route == "chat":
            response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": ASK, **body}, timeout=60)
            text = response.json()["choices"][0]["message"]["content"]
        else:
            response = httpx.post(f"{server.url}/v1/completions", json={"prompt": "Answer:", **body}, timeout=60)
            text = response.json()["choices"][0]["text"]
        assert response.status_code == 200, response.text
        assert re.fullmatch(pattern, text), text
        assert response.json()["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("grammar", ['root ::= "unclosed', "root ::= missing-rule", "start: /(/"])
def test_a_grammar_that_does_not_parse_is_a_400(server: Server, grammar: str) -> None:
    response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": ASK, "grammar": grammar, "max_tokens": 5}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_grammar" and error["param"] == "grammar"


def test_a_grammar_does_not_combine_with_tools(server: Server) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    response = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": ASK, "grammar": 'root ::= "x"', "tools": tools}, timeout=60)
    assert response.status_code == 400 and "grammar" in response.text
