"""hal0's /apply-template equals llama-server's, for every chat template llama.cpp ships.

llama-server is built from the same llama-cpp-python sdist hal0 runs (image/llama-server), and the
templates are that sdist's vendor/llama.cpp/models/templates/*.jinja (image/llama-templates). Both
serve the tiny model (same BOS/EOS, same tokenizer flags) with each template as the chat template
file, and both render a fixed set of conversations: system and user, several turns, an assistant
turn with several tool calls and their results, tools with nested schemas, reasoning sent back,
thinking turned on and off with chat_template_kwargs. Requests with tools say tool_choice "none":
until native tool calls land (issue 26's next slices) that is where hal0 renders tools natively.

Templates on which the two differ are named in DIFFERS with the reason; the test also fails when one
of them stops differing, so the list stays true. /tokenize and /detokenize are compared too.
The whole module takes about 25 s once llama-server is built (a cold build: about an hour on two cores).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import HAL0, free_port, tiny_config

ROOT = Path(__file__).resolve().parents[2]

_WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather at a place.",
        "parameters": {
            "type": "object",
            "properties": {
                "place": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "country": {"type": "string", "enum": ["FR", "DE", "JP"]}},
                    "required": ["city"],
                },
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "fields": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["place"],
        },
    },
}
_CLOCK = {"type": "function", "function": {"name": "get_time", "description": "The time in a time zone.",
                                            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
_TOOLS = [_WEATHER, _CLOCK]
_CALLS = [
    {"id": "call00001", "type": "function", "function": {"name": "get_weather", "arguments": '{"place": {"city": "Paris", "country": "FR"}, "days": 2}'}},
    {"id": "call00002", "type": "function", "function": {"name": "get_time", "arguments": '{"zone": "Europe/Paris"}'}},
]
_SYSTEM = {"role": "system", "content": "You are a terse assistant. Réponds en français si on te parle français."}
_TURNS = [
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi. What do you need?"},
    {"role": "user", "content": "What is 2+2? Answer \"in quotes\"."},
]
_LOOP = [
    {"role": "user", "content": "Weather and time in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": _CALLS},
    {"role": "tool", "tool_call_id": "call00001", "content": '{"sky": "clear", "high_c": 21}'},
    {"role": "tool", "tool_call_id": "call00002", "content": "14:05"},
    {"role": "assistant", "content": "Clear, 21°C, and it is 14:05."},
    {"role": "user", "content": "And tomorrow?"},
]

_ONE_CALL = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": _CALLS[:1]},
    {"role": "tool", "tool_call_id": "call00001", "content": '{"sky": "clear"}'},
    {"role": "assistant", "content": "Clear."},
    {"role": "user", "content": "Thanks."},
]

# Call ids are 9 letters and digits: Mistral's templates refuse any other.
CONVERSATIONS: dict[str, dict[str, Any]] = {
    "user": {"messages": [{"role": "user", "content": "Hello!"}]},
    "system_user": {"messages": [_SYSTEM, {"role": "user", "content": "Hello!"}]},
    "turns": {"messages": [_SYSTEM, *_TURNS]},
    "tools": {"messages": [_SYSTEM, {"role": "user", "content": "Weather in Paris?"}], "tools": _TOOLS, "tool_choice": "none"},
    "tool_loop": {"messages": [_SYSTEM, *_LOOP], "tools": _TOOLS, "tool_choice": "none"},
    "tool_loop_no_system": {"messages": _LOOP, "tools": _TOOLS, "tool_choice": "none"},
    "one_call": {"messages": [_SYSTEM, *_ONE_CALL], "tools": _TOOLS, "tool_choice": "none"},
    "reasoning": {"messages": [*_TURNS[:1], {**_TURNS[1], "reasoning_content": "The user greets me."}, _TURNS[2]]},
    "thinking_off": {"messages": [_SYSTEM, *_TURNS], "chat_template_kwargs": {"enable_thinking": False}},
    "thinking_on": {"messages": [_SYSTEM, *_TURNS], "chat_template_kwargs": {"enable_thinking": True}},
    "thinking_off_tools": {"messages": [_SYSTEM, *_LOOP], "tools": _TOOLS, "tool_choice": "none", "chat_template_kwargs": {"enable_thinking": False}},
}

# Templates on which hal0 and llama-server differ, and why (checked: each still differs). Where
# both refuse a conversation (Llama 3.x's templates raise on two calls in one turn, Gemma 2's on a
# tool turn) they agree, each in its own words.
DIFFERS: dict[str, str] = {
    "Apertus-8B-Instruct.jinja": "enable_thinking's default: llama-server's is whether its autoparser finds the template's reasoning "
    "markers, which it does not find in Apertus's (so 'Deliberation: disabled'); hal0's is true. With enable_thinking given, both agree.",
    "CohereForAI-c4ai-command-r-plus-tool_use.jinja": "with tools, llama-server refuses every request: its engine fails building the "
    "tool-call parser (json_spec.type of a schema without a type, in the template's json_to_python_type); hal0 renders the tools.",
    "openbmb-MiniCPM5-1B.jinja": "a call argument that is an object, written by {{ param_value }}: Jinja (and Hugging Face, which the "
    "model was trained with) writes Python's repr {'city': 'Paris', ...}; llama.cpp's engine writes nothing.",
}


_REFUSED = "refused "


def _run(command: list[str], timeout: float) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
    if done.returncode != 0:
        pytest.fail(f"{command[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def llama_server() -> Path:
    # A cold build takes several minutes (measured: see the README's test section); later runs reuse it.
    return Path(_run([str(ROOT / "image" / "llama-server")], timeout=3700))


@pytest.fixture(scope="module")
def templates() -> list[Path]:
    return sorted(Path(_run([str(ROOT / "image" / "llama-templates")], timeout=700)).glob("*.jinja"))


def _apply(client: httpx.Client, url: str, body: dict[str, Any]) -> str:
    response = client.post(url, json=body)
    if response.status_code != 200:
        return f"{_REFUSED}{response.status_code}: {response.text[:300]}"
    return response.json()["prompt"]


def _same(ours: str, theirs: str) -> bool:
    """Equal prompts, or both refuse the conversation (each in its own words)."""
    return ours == theirs or (ours.startswith(_REFUSED) and theirs.startswith(_REFUSED))


def _wait(url: str, process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


def _llama_server_prompts(binary: Path, model: Path, template: Path, log: Path) -> dict[str, str]:
    port = free_port()
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", "256", "-t", "1", "-np", "1",
               "--jinja", "--chat-template-file", str(template), "--no-webui", "--no-warmup"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        if not _wait(f"http://127.0.0.1:{port}/health", process, 60):
            return dict.fromkeys(CONVERSATIONS, f"{_REFUSED}llama-server did not start with it")
        with httpx.Client(timeout=60) as client:
            return {name: _apply(client, f"http://127.0.0.1:{port}/apply-template", body) for name, body in CONVERSATIONS.items()}
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _hal0_prompts(tmp_path: Path, model: Path, templates: list[Path]) -> dict[str, dict[str, str]]:
    """One `hal0 serve` with a model per template (the tiny GGUF, the template as chat_template_file)."""
    port = free_port()
    models = [{"id": f"t{index}", "path": str(model), "default": index == 0, "n_ctx": 256, "n_batch": 64, "n_ubatch": 64, "n_threads": 1,
               "embeddings": False, "prompt_cache_mib": 0, "chat_template_file": str(template)} for index, template in enumerate(templates)]
    config = tiny_config(model, port, models=models)
    config["agents"] = {"approvals": {"path": str(tmp_path / "approvals.db")}}
    path = tmp_path / "hal0.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "hal0.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*HAL0, "serve", "--config", str(path)], stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=60) as client:
            deadline = time.monotonic() + 300
            states: dict[str, str] = {}
            while time.monotonic() < deadline:
                assert process.poll() is None, log.read_text()
                try:
                    states = {entry["id"]: entry["state"] for entry in client.get("/v1/models").json()["data"]}
                except httpx.TransportError:
                    states = {}
                if states and all(state in ("ready", "failed") for state in states.values()):
                    break
                time.sleep(0.2)
            assert states and all(state in ("ready", "failed") for state in states.values()), states
            prompts: dict[str, dict[str, str]] = {}
            for index, template in enumerate(templates):
                loaded = states[f"t{index}"] != "failed"
                prompts[template.name] = {
                    name: _apply(client, "/apply-template", {**body, "model": f"t{index}"}) if loaded else f"{_REFUSED}hal0 did not load it"
                    for name, body in CONVERSATIONS.items()
                }
            return prompts
    finally:
        process.terminate()
        process.wait(20)


def test_apply_template_equals_llama_server(tmp_path: Path, tiny_model: Path, llama_server: Path, templates: list[Path]) -> None:
    assert len(templates) >= 60, f"expected llama.cpp's templates, found {len(templates)}"
    started = time.monotonic()
    ours = _hal0_prompts(tmp_path, tiny_model, templates)
    hal0_s = time.monotonic() - started
    theirs = {template.name: _llama_server_prompts(llama_server, tiny_model, template, tmp_path / f"{template.stem}.log") for template in templates}
    differing: dict[str, list[str]] = {}
    for template in templates:
        names = [name for name in CONVERSATIONS if not _same(ours[template.name][name], theirs[template.name][name])]
        if names:
            differing[template.name] = names
    report = "\n".join(
        f"{template}: {', '.join(names)}\n  hal0:         {ours[template][names[0]]!r}\n  llama-server: {theirs[template][names[0]]!r}"
        for template, names in differing.items()
    )
    print(f"{len(templates)} templates x {len(CONVERSATIONS)} conversations; hal0 {hal0_s:.1f}s, in all {time.monotonic() - started:.1f}s")
    unexpected = {name: names for name, names in differing.items() if name not in DIFFERS}
    assert not unexpected, f"hal0's prompt differs from llama-server's:\n{report}"
    stale = sorted(set(DIFFERS) - set(differing) & {template.name for template in templates})
    assert not stale, f"these templates no longer differ; remove them from DIFFERS: {stale}"


TOKEN_BODIES = [
    {"content": "hi <|im_end|> é"},
    {"content": "hi <|im_end|> é", "add_special": True, "with_pieces": True},
    {"content": "hi <|im_end|>", "parse_special": False},
    {"content": ["hi", 4, " there"], "add_special": True},
]


def test_tokenize_and_detokenize_equal_llama_server(start_server: Any, tiny_model: Path, llama_server: Path, tmp_path: Path) -> None:
    hal0 = start_server()
    port = free_port()
    command = [str(llama_server), "-m", str(tiny_model), "--host", "127.0.0.1", "--port", str(port), "-c", "256", "-t", "1", "-np", "1",
               "--no-webui", "--no-warmup"]
    with (tmp_path / "llama-server.log").open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert _wait(f"http://127.0.0.1:{port}/health", process, 60), (tmp_path / "llama-server.log").read_text()
        for body in TOKEN_BODIES:
            ours = httpx.post(f"{hal0.url}/tokenize", json=body, timeout=30).json()
            theirs = httpx.post(f"http://127.0.0.1:{port}/tokenize", json=body, timeout=30).json()
            assert ours == theirs, body
            ids = [token["id"] if isinstance(token, dict) else token for token in ours["tokens"]]
            ours = httpx.post(f"{hal0.url}/detokenize", json={"tokens": ids}, timeout=30).json()
            theirs = httpx.post(f"http://127.0.0.1:{port}/detokenize", json={"tokens": ids}, timeout=30).json()
            assert ours == theirs, ids
    finally:
        process.terminate()
        process.wait(10)
