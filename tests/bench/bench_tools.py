"""Constraint overhead and the cost of tools in the prompt: hal0 against llama.cpp's llama-server.

    python -m tests.bench.bench_tools [--model PATH] [--runs N] [--tokens N] [--llama-server PATH]

Measures, interleaving the variants so drift hits all alike:
  * decode tokens/s of a streamed chat reply, unconstrained vs constrained by a json_schema
    (tokens after the first / time from the first to the last chunk), median of runs, on hal0 and on
    llama-server (built by image/llama-server from the same llama.cpp; its own json_schema grammar),
    both up at the same time with the same threads and context;
  * time to first token with 5 tools in the request vs none on hal0 (a max_tokens=1 reply: prompt
    processing plus one sampled token, the constraint included), median of runs;
  * in process, on the model's vocabulary: the constraint engine's mask time per token over a whole
    reply, the first compile of a schema and a cached one, and the tokenizer build at load.
Prints a table and writes results/bench_tools.json. Targets (issue 25): hal0 constrained at most 10%
slower than hal0 free, and at least 1.0x llama-server constrained. A benchmark, not a test: it
asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.bench.bench_agents import find_llama_server, start_llama_server
from tests.bench.common import GEMMA, SETTLE_S, Process, start_hal0, summary, write_result

ASK = [{"role": "user", "content": "Write a long story about a lighthouse keeper and her cat."}]
# Long enough to measure a rate over: at least four chapters of some length (an empty list would end
# the constrained reply after a few tokens).
STORY = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 60},
        "chapters": {"type": "array", "items": {"type": "string", "minLength": 80}, "minItems": 4, "maxItems": 8},
    },
    "required": ["title", "chapters"],
    "additionalProperties": False,
}


def five_tools() -> list[dict[str, Any]]:
    def tool(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
        parameters = {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
        return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}

    return [
        tool("get_weather", "Weather forecast for a city.", {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}}),
        tool("search_web", "Search the web.", {"query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": 20}}),
        tool("remember", "Store a note in memory.", {"text": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5}}),
        tool("send_email", "Send an email.", {"to": {"type": "string"}, "subject": {"type": "string"}, "body": {"type": "string"}}),
        tool("set_timer", "Start a timer.", {"minutes": {"type": "number", "minimum": 0, "maximum": 600}, "label": {"enum": ["tea", "work", "rest"]}}),
    ]


def decode_rate(url: str, body: dict[str, Any]) -> tuple[float, int]:
    """Tokens/s after the first token of a streamed reply, and how many tokens it had."""
    first = last = None
    tokens = 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and (chunk["choices"][0]["delta"].get("content") or chunk["choices"][0]["delta"].get("tool_calls")):
                now = time.perf_counter()
                first = first or now
                last = now
    if first is None or last is None or last <= first or tokens < 2:
        return float("nan"), tokens
    return (tokens - 1) / (last - first), tokens


def first_token_s(url: str, body: dict[str, Any]) -> tuple[float, int]:
    started = time.perf_counter()
    response = httpx.post(f"{url}/v1/chat/completions", json={**body, "max_tokens": 1}, timeout=600)
    response.raise_for_status()
    return time.perf_counter() - started, response.json()["usage"]["prompt_tokens"]


def constraint_costs(model: Path, schema: dict[str, Any], replies: int = 5) -> dict[str, Any]:
    """The constraint engine's costs on `model`'s vocabulary, in process: tokenizer build, compile
    (first and cached), matcher start, and the mask of every step of whole random replies."""
    import numpy
    from hal0.inference import constraint as engine
    from llama_cpp import Llama

    llama = Llama(str(model), vocab_only=True, verbose=False)
    started = time.perf_counter()
    constraints = engine.Constraints(llama._model)
    constraints._ready.wait()
    tokenizer_s = time.perf_counter() - started
    engine._cached_schema.cache_clear()
    started = time.perf_counter()
    grammar = engine.schema_grammar(schema, "bench")
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    engine.schema_grammar(schema, "bench")
    cached_s = time.perf_counter() - started
    started = time.perf_counter()
    constraints.start(grammar)
    first_start_s = time.perf_counter() - started
    masks: list[float] = []
    rng = numpy.random.default_rng(0)
    for _ in range(replies):
        constraint = constraints.start(grammar)
        for _ in range(300):
            logits = rng.normal(size=constraints.n_vocab).astype(numpy.float32)
            began = time.perf_counter()
            constraint.mask(logits)
            masks.append(time.perf_counter() - began)
            constraint.accept(int(numpy.argmax(logits)))
            if constraint.finished:
                break
    llama.close()
    return {"tokenizer_build_s": tokenizer_s, "compile_first_s": compile_s, "compile_cached_s": cached_s,
            "matcher_first_start_s": first_start_s, "mask_ms": summary([1000 * value for value in masks])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF file (default: the installed gemma3-270m, else the tiny test model)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=160)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--port", type=int, default=18441)
    parser.add_argument("--llama-server", help="llama-server binary (default: $HAL0_LLAMA_SERVER or image/llama-server's cache)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="hal0-bench-tools-"))
    model = args.model or next((path for path in GEMMA if path.is_file()), None)
    if model is None:
        from hal0.inference.tiny_model import write_test_model

        model = write_test_model(workdir / "tiny.gguf")
    print(f"model: {model}  threads: {args.threads}  tokens: {args.tokens}  runs: {args.runs}")
    # gemma3-270m's GGUF carries no chat template: use the shipped config's chat_format.
    chat_format = {"chat_format": "gemma"} if "gemma" in model.name else {}
    server = start_hal0(workdir, args.port, [{"id": "bench", "path": str(model), "default": True, "n_ctx": 4096, "n_threads": args.threads, **chat_format}])
    binary = find_llama_server(args.llama_server)
    peer: Process | None = None
    if binary is None:
        print("llama-server not found (build it with image/llama-server): its side is skipped")
    else:
        peer = start_llama_server(binary, model, args.port + 1, args.threads, 1, 4096, workdir)
    try:
        base = {"messages": ASK, "max_tokens": args.tokens, "temperature": 0.7, "seed": 1}
        constrained = {**base, "response_format": {"type": "json_schema", "json_schema": {"name": "story", "schema": STORY}}}
        sides = {"unconstrained": (server, base), "json_schema": (server, constrained)}
        if peer is not None:
            sides |= {"llama-server unconstrained": (peer, base), "llama-server json_schema": (peer, constrained)}
        variants = {name: body for name, (_, body) in sides.items()}
        rates: dict[str, list[float]] = {name: [] for name in variants}
        lengths: dict[str, list[int]] = {name: [] for name in variants}
        ttft: dict[str, list[float]] = {"no tools": [], "5 tools": []}
        prompt: dict[str, int] = {}
        ttft_bodies = {"no tools": {"messages": ASK}, "5 tools": {"messages": ASK, "tools": five_tools()}}
        for run in range(args.runs + 1):  # the first round warms up and is not counted
            for name, (side, body) in sides.items():
                time.sleep(SETTLE_S)
                rate, tokens = decode_rate(side.url, {**body, "seed": run})
                print(f"  run {run} {name}: {rate:.1f} tok/s over {tokens} tokens", flush=True)
                if run:
                    rates[name].append(rate)
                    lengths[name].append(tokens)
            for name, body in ttft_bodies.items():
                time.sleep(SETTLE_S)
                seconds, prompt[name] = first_token_s(server.url, body)
                print(f"  run {run} TTFT {name}: {1000 * seconds:.0f} ms ({prompt[name]} prompt tokens)", flush=True)
                if run:
                    ttft[name].append(seconds)
    finally:
        server.stop()
        if peer is not None:
            peer.stop()
    costs = constraint_costs(model, STORY)
    median = {name: statistics.median(values) for name, values in rates.items()}
    ratio = median["json_schema"] / median["unconstrained"]
    vs_peer = median["json_schema"] / median["llama-server json_schema"] if peer is not None else None
    ttft_median = {name: statistics.median(values) for name, values in ttft.items()}
    print(f"{'variant':<16}{'tok/s p50':>12}{'tokens p50':>12}")
    for name in variants:
        print(f"{name:<16}{median[name]:>12.1f}{statistics.median(lengths[name]):>12.0f}")
    print(f"hal0 constrained / unconstrained tokens/s: {ratio:.3f}  (constraint overhead {100 * (1 - ratio):.1f}%)")
    if vs_peer is not None:
        peer_ratio = median["llama-server json_schema"] / median["llama-server unconstrained"]
        print(f"hal0 constrained / llama-server constrained tokens/s: {vs_peer:.3f}  (llama-server's own overhead {100 * (1 - peer_ratio):.1f}%)")
    print(f"mask per token: p50 {costs['mask_ms']['p50']:.3f} ms, p99 {costs['mask_ms']['p99']:.3f} ms over {costs['mask_ms']['n']} steps; "
          f"compile first {1000 * costs['compile_first_s']:.1f} ms, cached {1000 * costs['compile_cached_s']:.3f} ms; "
          f"matcher first start {1000 * costs['matcher_first_start_s']:.1f} ms; tokenizer build {costs['tokenizer_build_s']:.2f} s")
    for name, seconds in ttft_median.items():
        print(f"TTFT {name:<10} {1000 * seconds:8.1f} ms  prompt tokens {prompt[name]}")
    path = write_result("bench_tools", {
        "model": str(model), "threads": args.threads, "runs": args.runs, "tokens": args.tokens,
        "tokens_per_s": {name: {"p50": median[name], "samples": rates[name], "lengths": lengths[name]} for name in variants},
        "constrained_ratio": ratio, "constrained_vs_llama_server": vs_peer, "constraint_costs": costs,
        "ttft_s": {name: {"p50": ttft_median[name], "samples": ttft[name], "prompt_tokens": prompt[name]} for name in ttft},
    })
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
