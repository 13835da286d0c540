"""Continuous batching: parallel 1 vs parallel 4 (and 8) under 1, 2, 4 and 8 concurrent streaming clients.

    python tests/bench/bench_batching.py [--model PATH] [--tokens N] [--rounds N] [--slots 1,4,8]

One `hal0 serve` per setting (`models[].parallel`), all started first; for each client count,
`--rounds` rounds of N clients each streaming a greedy completion of `--tokens` tokens with
different prompts, all started together, the servers taking turns round by round (only one is
ever busy, and a change in the machine's load hits both settings alike). Reports:
  * aggregate generated tokens/s: all tokens of a round / the round's wall time;
  * per-stream tokens/s: a stream's tokens / its time from first to last token (median);
  * TTFT p95: time from sending the request to its first token, over all streams of all rounds.
Goals (issue 10): at 4 clients, parallel 4 >= 1.6x the aggregate of parallel 1; at 8 clients >= 2x
(four slots can at best reach the 4-sequence limit there, so parallel 8 is measured as well).
Prints a table and writes results/bench_batching.json. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.bench.common import GEMMA, Process, start_hal0

ROOT = Path(__file__).parents[2]
PROMPTS = [
    "The history of the printing press begins",
    "Once upon a time, in a small village by the sea,",
    "The three most important ideas in physics are",
    "A good recipe for bread starts with",
    "def fibonacci(n):",
    "The weather in the mountains changes quickly because",
    "My favourite book is about",
    "In 1969, the first people to walk on the moon",
]
CLIENTS = (1, 2, 4, 8)
# Gemma's end-of-text (1) and end-of-turn (106): banned so every stream generates all its tokens.
NO_END = {"1": -100, "106": -100}


def start_server(model: Path, parallel: int, slot_ctx: int, threads: int, port: int, workdir: Path) -> Process:
    settings = {"parallel": parallel, "n_ctx": slot_ctx * parallel, "n_batch": 512, "n_threads": threads, "n_threads_batch": threads}
    return start_hal0(workdir, port, [{"id": "bench", "path": str(model), "default": True, **settings}], server={"queue_limit": 64})


async def one_stream(client: httpx.AsyncClient, prompt: str, tokens: int) -> dict[str, float]:
    body = {
        "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}, "logit_bias": NO_END,
    }
    sent = time.perf_counter()
    first = last = None
    generated = 0
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                generated = chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["text"]:
                now = time.perf_counter()
                first = first or now
                last = now
    assert first is not None and last is not None
    return {"sent": sent, "ttft": first - sent, "first": first, "last": last, "tokens": generated}


async def one_round(url: str, clients: int, tokens: int, round_index: int) -> list[dict[str, float]]:
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=32)) as client:
        prompts = [PROMPTS[(round_index + i) % len(PROMPTS)] for i in range(clients)]
        return await asyncio.gather(*(one_stream(client, prompt, tokens) for prompt in prompts))


def measure(urls: dict[int, str], tokens: int, rounds: int) -> dict[int, dict[int, dict[str, float]]]:
    """Rounds alternate between the servers, so drift in the machine's load hits every setting alike."""
    for url in urls.values():
        asyncio.run(one_round(url, 2, 8, 0))  # warm: page faults, allocation
    table: dict[int, dict[int, dict[str, float]]] = {parallel: {} for parallel in urls}
    for clients in CLIENTS:
        samples = {parallel: {"ttft": [], "aggregate": [], "per_stream": []} for parallel in urls}
        for round_index in range(rounds):
            for parallel, url in urls.items():
                streams = asyncio.run(one_round(url, clients, tokens, round_index))
                wall = max(s["last"] for s in streams) - min(s["sent"] for s in streams)
                seen = samples[parallel]
                seen["aggregate"].append(sum(s["tokens"] for s in streams) / wall)
                seen["per_stream"].extend((s["tokens"] - 1) / (s["last"] - s["first"]) for s in streams if s["last"] > s["first"])
                seen["ttft"].extend(s["ttft"] for s in streams)
        for parallel, seen in samples.items():
            ttfts = sorted(seen["ttft"])
            row = table[parallel][clients] = {
                "aggregate_tokens_per_s": statistics.median(seen["aggregate"]),
                "per_stream_tokens_per_s": statistics.median(seen["per_stream"]),
                "ttft_p95_ms": 1000 * ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))],
            }
            print(f"  parallel {parallel}, {clients} clients: {row['aggregate_tokens_per_s']:.1f} tok/s aggregate, "
                  f"{row['per_stream_tokens_per_s']:.1f} per stream, TTFT p95 {row['ttft_p95_ms']:.0f} ms", flush=True)
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF file (default: the installed gemma3-270m)")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slots", default="1,4,8", help="comma-separated parallel settings to compare")
    parser.add_argument("--slot-ctx", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--port", type=int, default=18432)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_batching.json")
    args = parser.parse_args()

    model = args.model or next((path for path in GEMMA if path.is_file()), None)
    if model is None:
        raise SystemExit("gemma3-270m not found: hal0 models install gemma3-270m --dir DIR, or pass --model")
    workdir = Path(tempfile.mkdtemp(prefix="hal0-bench-"))
    settings = [int(part) for part in args.slots.split(",")]
    print(f"model: {model}  threads: {args.threads}  tokens per stream: {args.tokens}  rounds: {args.rounds}")
    # All servers run at once (an idle one costs no CPU) so their rounds can alternate.
    servers = {}
    try:
        for index, parallel in enumerate(settings):
            servers[parallel] = start_server(model, parallel, args.slot_ctx, args.threads, args.port + index, workdir)
        urls = {parallel: f"http://127.0.0.1:{args.port + index}" for index, parallel in enumerate(settings)}
        results = measure(urls, args.tokens, args.rounds)
    finally:
        for server in servers.values():
            server.stop()

    base, others = settings[0], settings[1:]
    print("\n| clients | " + " | ".join(f"parallel {p}: aggregate tok/s, per-stream tok/s, TTFT p95 ms" for p in settings)
          + "".join(f" | aggregate {p} vs {base}" for p in others) + " |")
    print("| --- |" + " --- |" * (len(settings) + len(others)))
    speedup = {p: {c: results[p][c]["aggregate_tokens_per_s"] / results[base][c]["aggregate_tokens_per_s"] for c in CLIENTS} for p in others}
    for clients in CLIENTS:
        rows = [results[p][clients] for p in settings]
        cells = [f"{row['aggregate_tokens_per_s']:.1f}, {row['per_stream_tokens_per_s']:.1f}, {row['ttft_p95_ms']:.0f}" for row in rows]
        print(f"| {clients} | " + " | ".join(cells) + "".join(f" | {speedup[p][clients]:.2f}x" for p in others) + " |")
    for p in others:
        print(f"parallel {p} vs {base}: 4 clients {speedup[p][4]:.2f}x (goal >= 1.6), 8 clients {speedup[p][8]:.2f}x (goal >= 2.0)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "model": str(model), "threads": args.threads, "tokens": args.tokens, "rounds": args.rounds,
        "results": {str(p): {str(c): row for c, row in table.items()} for p, table in results.items()},
        "speedup": {str(p): {str(c): ratio for c, ratio in table.items()} for p, table in speedup.items()},
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
