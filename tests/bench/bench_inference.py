"""hal0's API vs llama-cpp-python called directly, same model and settings, in one run.

    python -m tests.bench.bench_inference [--model PATH] [--runs N] [--tokens N]

Measures, interleaving the two sides so drift hits both alike:
  * generated tokens/s of a non-streaming completion (`--tokens`, default 128), median of runs;
  * time to first token of a streaming completion (first SSE chunk vs first chunk in-process).
Prints a table and writes results/bench_inference.json. Targets (issue 2): hal0 >= 0.95x direct
tokens/s, TTFT overhead under 10 ms. A benchmark, not a test: it asserts nothing about speed.
"""

from __future__ import annotations

import argparse
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
PROMPT = "The history of the printing press begins"


def settings(threads: int) -> dict:
    return {"n_ctx": 1024, "n_batch": 512, "n_threads": threads, "n_threads_batch": threads}


def start_server(model: Path, threads: int, port: int, workdir: Path) -> Process:
    return start_hal0(workdir, port, [{"id": "bench", "path": str(model), "default": True, **settings(threads)}])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF file (default: the installed gemma3-270m, else the tiny test model)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--port", type=int, default=18431)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_inference.json")
    args = parser.parse_args()

    from llama_cpp import Llama

    workdir = Path(tempfile.mkdtemp(prefix="hal0-bench-"))
    model = args.model or next((path for path in GEMMA if path.is_file()), None)
    if model is None:
        from hal0.inference.tiny_model import write_test_model

        model = write_test_model(workdir / "tiny.gguf")
    print(f"model: {model}  threads: {args.threads}  tokens: {args.tokens}  runs: {args.runs}")

    body = {"prompt": PROMPT, "max_tokens": args.tokens, "temperature": 0, "seed": 1}
    direct = Llama(model_path=str(model), verbose=False, seed=1, **settings(args.threads))
    server = start_server(model, args.threads, args.port, workdir)
    client = httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=300)
    rates: dict[str, list[float]] = {"direct": [], "hal0": []}
    ttft: dict[str, list[float]] = {"direct": [], "hal0": []}
    try:
        # Warm both: first calls pay for page faults and allocation.
        direct.create_completion(**body)
        client.post("/v1/completions", json=body).raise_for_status()
        for _ in range(args.runs):
            started = time.perf_counter()
            result = direct.create_completion(**body)
            rates["direct"].append(result["usage"]["completion_tokens"] / (time.perf_counter() - started))

            started = time.perf_counter()
            response = client.post("/v1/completions", json=body)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            rates["hal0"].append(response.json()["usage"]["completion_tokens"] / elapsed)

            started = time.perf_counter()
            for _chunk in direct.create_completion(stream=True, **{**body, "max_tokens": 4}):
                ttft["direct"].append(time.perf_counter() - started)
                break
            started = time.perf_counter()
            with client.stream("POST", "/v1/completions", json={**body, "max_tokens": 4, "stream": True}) as stream:
                first = None
                for line in stream.iter_lines():
                    if first is None and line.startswith("data: {"):
                        first = time.perf_counter() - started
                ttft["hal0"].append(first)
    finally:
        client.close()
        server.stop()

    result = {
        "model": str(model),
        "threads": args.threads,
        "tokens": args.tokens,
        "runs": args.runs,
        "direct_tokens_per_s": statistics.median(rates["direct"]),
        "hal0_tokens_per_s": statistics.median(rates["hal0"]),
        "direct_ttft_ms": statistics.median(ttft["direct"]) * 1000,
        "hal0_ttft_ms": statistics.median(ttft["hal0"]) * 1000,
    }
    result["throughput_ratio"] = result["hal0_tokens_per_s"] / result["direct_tokens_per_s"]
    result["ttft_overhead_ms"] = result["hal0_ttft_ms"] - result["direct_ttft_ms"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print("| side | tokens/s (median) | TTFT ms (median) |")
    print("| --- | --- | --- |")
    print(f"| llama-cpp-python direct | {result['direct_tokens_per_s']:.1f} | {result['direct_ttft_ms']:.1f} |")
    print(f"| hal0 API | {result['hal0_tokens_per_s']:.1f} | {result['hal0_ttft_ms']:.1f} |")
    print(f"hal0/direct throughput: {result['throughput_ratio']:.3f}x (target >= 0.95)  TTFT overhead: {result['ttft_overhead_ms']:.1f} ms (target < 10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
