"""POST /apply-template, /tokenize and /detokenize (llama-server's shapes), and what the chat
template gets: tools, tool calls, chat_template_kwargs, a template's own errors as 400s, and
models[].chat_template_file (over real HTTP to `hal0 serve` with the tiny model)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import HAL0, Server, tiny_config

PERSONA_PROMPT = "You are the persona's assistant."

# A template that shows what it was given: tools, calls with their arguments as objects, kwargs.
PROBING = """{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}
{% for c in m.tool_calls or [] %}CALL {{ c.function.name }} {{ c.function.arguments | tojson }} city={{ c.function.arguments.city }}
{% endfor %}{% if m.tool_call_id %}ANSWERS {{ m.tool_call_id }}
{% endif %}{% endfor %}{% if tools %}TOOLS {{ tools | map(attribute='function.name') | join(',') }} {{ tools[0] | tojson(indent=1) }}
{% endif %}{% if enable_thinking is false %}NO-THINK{% endif %}{% if reasoning_effort %} EFFORT={{ reasoning_effort }}{% endif %}
{% if messages[-1].role == 'user' and 'boom' in messages[-1].content %}{{ raise_exception('no booms, please') }}{% endif %}
{% if add_generation_prompt %}[assistant]{% endif %}"""

CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Zürich"}'}}
TOOL = {"type": "function", "function": {"name": "weather", "description": "Weather.",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def probing_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("templates") / "probing.jinja"
    path.write_text(PROBING)
    return path


@pytest.fixture
def server(start_server: Callable[..., Server], tiny_model: Path, probing_template: Path) -> Server:
    models = [
        {"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 1024, "n_threads": 1},
        {"id": "probing", "path": str(tiny_model), "n_ctx": 1024, "n_threads": 1, "embeddings": False, "chat_template_file": str(probing_template)},
    ]
    return start_server(models=models, agents={"personas": [{"id": "prompted", "system_prompt": PERSONA_PROMPT}]})


def test_apply_template_answers_the_gguf_template_prompt(server: Server) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    response = httpx.post(f"{server.url}/apply-template", json={"messages": messages}, timeout=30)
    assert response.status_code == 200, response.text
    # The tiny GGUF's chatml template; its tokenizer adds BOS itself, and the template writes none.
    assert response.json() == {"prompt": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"}
    persona = httpx.post(f"{server.url}/apply-template", json={"messages": messages[1:]}, headers={"X-hal0-Agent": "prompted"}, timeout=30)
    assert persona.json()["prompt"].startswith(f"<|im_start|>system\n{PERSONA_PROMPT}<|im_end|>\n")
    unknown = httpx.post(f"{server.url}/apply-template", json={"messages": messages, "model": "nope"}, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"


def test_the_template_gets_tools_calls_as_objects_and_kwargs(server: Server) -> None:
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    body = {"model": "probing", "messages": messages, "tools": [TOOL], "tool_choice": "none",
            "chat_template_kwargs": {"enable_thinking": False, "reasoning_effort": "low"}}
    response = httpx.post(f"{server.url}/apply-template", json=body, timeout=30)
    assert response.status_code == 200, response.text
    prompt = response.json()["prompt"]
    assert '[assistant]\nCALL weather {"city": "Zürich"} city=Zürich\n' in prompt  # arguments are an object, tojson keeps non-ASCII
    assert "[tool]sunny\nANSWERS call_1\n" in prompt
    assert 'TOOLS weather {\n "type": "function",\n "function": {\n  "name": "weather",' in prompt  # tojson(indent=1), OpenAI's shape
    assert "NO-THINK EFFORT=low" in prompt
    assert prompt.startswith("<s>") is False  # the BOS the template writes is left to the tokenizer, as llama-server does
    thinking = httpx.post(f"{server.url}/apply-template", json={**body, "chat_template_kwargs": {}}, timeout=30).json()["prompt"]
    assert "NO-THINK" not in thinking and "EFFORT" not in thinking


def test_the_rendered_prompt_is_what_a_chat_request_feeds_the_model(server: Server) -> None:
    messages = [{"role": "user", "content": "hi"}]
    kwargs = {"chat_template_kwargs": {"enable_thinking": False}}
    prompt = httpx.post(f"{server.url}/apply-template", json={"model": "probing", "messages": messages, **kwargs}, timeout=30).json()["prompt"]
    tokens = httpx.post(f"{server.url}/tokenize", json={"model": "probing", "content": prompt, "add_special": True}, timeout=30).json()["tokens"]
    chat = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "probing", "messages": messages, "max_tokens": 1, **kwargs}, timeout=60)
    assert chat.status_code == 200, chat.text
    assert chat.json()["usage"]["prompt_tokens"] == len(tokens)
    plain = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "probing", "messages": messages, "max_tokens": 1}, timeout=60)
    assert plain.json()["usage"]["prompt_tokens"] < len(tokens)  # the kwargs reached the chat request's template too


def test_a_template_error_is_a_400_naming_it(server: Server) -> None:
    for path in ("/apply-template", "/v1/chat/completions"):
        response = httpx.post(f"{server.url}{path}", json={"model": "probing", "messages": [{"role": "user", "content": "boom"}]}, timeout=30)
        assert response.status_code == 400, response.text
        assert "no booms, please" in response.json()["error"]["message"]
        assert response.json()["error"]["param"] == "messages"
    wrong = httpx.post(f"{server.url}/apply-template", json={"model": "probing", "messages": [{"role": "user", "content": "hi"}],
                                                             "chat_template_kwargs": {"enable_thinking": "no"}}, timeout=30)
    assert wrong.status_code == 400 and "enable_thinking must be a boolean" in wrong.json()["error"]["message"]
    reserved = httpx.post(f"{server.url}/apply-template", json={"messages": [{"role": "user", "content": "hi"}],
                                                                "chat_template_kwargs": {"messages": []}}, timeout=30)
    assert reserved.status_code == 400 and "messages cannot be set here" in reserved.json()["error"]["message"]
    assert "Traceback" not in server.log()


def test_tokenize_and_detokenize_as_llama_server(server: Server) -> None:
    url = server.url
    plain = httpx.post(f"{url}/tokenize", json={"content": "hi <|im_end|>"}, timeout=30).json()["tokens"]
    assert plain and all(isinstance(token, int) for token in plain) and 4 in plain  # <|im_end|> parsed as the special token
    special = httpx.post(f"{url}/tokenize", json={"content": "hi <|im_end|>", "add_special": True}, timeout=30).json()["tokens"]
    assert special == [1, *plain]  # the tokenizer's BOS
    literal = httpx.post(f"{url}/tokenize", json={"content": "hi <|im_end|>", "parse_special": False}, timeout=30).json()["tokens"]
    assert 4 not in literal
    mixed = httpx.post(f"{url}/tokenize", json={"content": ["hi", 4, "hi"], "add_special": True}, timeout=30).json()["tokens"]
    assert mixed[0] == 1 and 4 in mixed
    pieces = httpx.post(f"{url}/tokenize", json={"content": "é<|im_end|>", "with_pieces": True}, timeout=30).json()["tokens"]
    # é is two byte tokens, neither whole UTF-8: their pieces are byte values (after the tokenizer's leading space).
    assert [piece["piece"] for piece in pieces][-3:] == [[0xC3], [0xA9], "<|im_end|>"] and pieces[-1]["id"] == 4
    text = httpx.post(f"{url}/detokenize", json={"tokens": special}, timeout=30).json()
    assert text == {"content": "<s> hi <|im_end|>"}  # the pieces joined, as llama-server: the space is the tokenizer's
    for body, param in (({"tokens": [0, 999999]}, "tokens"), ({"tokens": [-1]}, "tokens")):
        response = httpx.post(f"{url}/detokenize", json=body, timeout=30)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
    bad = httpx.post(f"{url}/tokenize", json={"content": ["a", 999999]}, timeout=30)
    assert bad.status_code == 400 and "999999" in bad.json()["error"]["message"]
    assert httpx.post(f"{url}/tokenize", json={"content": "a", "model": "nope"}, timeout=30).status_code == 404


def test_chat_template_file_is_checked(tmp_path: Path, tiny_model: Path) -> None:
    def validate(model: dict[str, object]) -> subprocess.CompletedProcess[str]:
        path = tmp_path / "hal0.yaml"
        path.write_text(yaml.safe_dump(tiny_config(tiny_model, 8080, models=[{"id": "tiny", "path": str(tiny_model), "default": True, **model}])))
        return subprocess.run([*HAL0, "config", "validate", str(path)], capture_output=True, text=True, timeout=60)

    missing = validate({"chat_template_file": str(tmp_path / "none.jinja")})
    assert missing.returncode == 1 and "models[0].chat_template_file" in missing.stderr and "cannot be read" in missing.stderr
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}")
    unparsable = validate({"chat_template_file": str(broken)})
    assert unparsable.returncode == 1 and "does not parse" in unparsable.stderr
    silent = tmp_path / "silent.jinja"
    # It reads the system text and writes none of it (a template that never reads it gets it folded into the next turn).
    silent.write_text("{% for m in messages %}{% if m.role == 'system' %}{% set seen = m.content %}{% else %}{{ m.content }}{% endif %}{% endfor %}")
    dropped = validate({"chat_template_file": str(silent)})
    assert dropped.returncode == 1 and "drops the system prompt" in dropped.stderr
    both = validate({"chat_template_file": str(silent), "chat_format": "chatml"})
    assert both.returncode == 1 and "not both" in both.stderr
    # tool_format: native on a template that writes no calls of its own is refused before the box changes, naming the field.
    native = validate({"chat_format": "chatml", "tool_format": "native"})
    assert native.returncode == 1 and "models[0].tool_format" in native.stderr and "generic" in native.stderr
    assert validate({"chat_format": "chatml", "tool_format": "generic"}).returncode == 0
