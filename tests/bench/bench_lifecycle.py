"""Models on demand: cold-load cost and memory returned on unload, over real HTTP, in one run.

    python -m tests.bench.bench_lifecycle [--model PATH] [--cycles N] [--warm N]

Starts `hal0 serve` with the tiny generated model as the (startup) default and the measured model
(default: the installed gemma3-270m) as `load: on_demand` with `keep_alive: 2s`. Each cycle:
  * RSS of the server process before the load;
  * the first request (streaming completion): its time to first token, which includes the load, and the
    load duration hal0 measured itself (hal0_model_load_duration_seconds);
  * RSS loaded (after a generation), then after an embeddings request (its second llama.cpp context);
  * time to first token of the same request with the model loaded (median of --warm);
  * RSS after keep_alive unloaded it.
Prints a table and writes results/bench_lifecycle.json. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.bench.common import GEMMA, SETTLE_S, start_hal0

ROOT = Path(__file__).parents[2]
PROMPT = "The history of the printing press begins"
UNLOAD_WAIT_S = 60


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def ttft(client: httpx.Client, model: str) -> float:
    body = {"model": model, "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "stream": True}
    started = time.perf_counter()
    first = None
    with client.stream("POST", "/v1/completions", json=body) as stream:
        stream.raise_for_status()
        for line in stream.iter_lines():
            if first is None and line.startswith("data: {"):
                first = time.perf_counter() - started
    assert first is not None
    return first


def load_seconds_sum(client: httpx.Client, model: str) -> float:
    text = client.get("/metrics").text
    match = re.search(rf'^hal0_model_load_duration_seconds_sum{{model="{re.escape(model)}"}} ([0-9.e+-]+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def state(client: httpx.Client, model: str) -> str:
    return next(entry["state"] for entry in client.get("/v1/models").json()["data"] if entry["id"] == model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF file (default: the installed gemma3-270m)")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--warm", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--port", type=int, default=18441)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_lifecycle.json")
    args = parser.parse_args()

    from hal0.inference.tiny_model import write_test_model

    workdir = Path(tempfile.mkdtemp(prefix="hal0-bench-lifecycle-"))
    model = args.model or next((path for path in GEMMA if path.is_file()), None)
    if model is None:
        print("no gemma3-270m installed: hal0 models install gemma3-270m --dir build/models (or pass --model)")
        return 2
    tiny = write_test_model(workdir / "tiny.gguf")
    threads = {"n_threads": args.threads, "n_threads_batch": args.threads, "n_ctx": 1024}
    server = start_hal0(workdir, args.port, [
        {"id": "resident", "path": str(tiny), "default": True, "n_ctx": 256, "n_threads": 1},
        {"id": "lazy", "path": str(model), "load": "on_demand", "keep_alive": "2s", **threads},
    ])
    pid = server.process.pid
    client = httpx.Client(base_url=server.url, timeout=300)
    cycles = []
    try:
        client.post("/v1/completions", json={"prompt": "a", "max_tokens": 2}).raise_for_status()  # the process warmed up
        for _ in range(args.cycles):
            time.sleep(SETTLE_S)
            before = rss_mib(pid)
            loaded_before = load_seconds_sum(client, "lazy")
            cold = ttft(client, "lazy")
            load_s = load_seconds_sum(client, "lazy") - loaded_before
            loaded = rss_mib(pid)
            client.post("/v1/embeddings", json={"model": "lazy", "input": PROMPT}).raise_for_status()
            with_embeddings = rss_mib(pid)
            warm = []
            for _ in range(args.warm):
                time.sleep(SETTLE_S)
                warm.append(ttft(client, "lazy"))
            deadline = time.monotonic() + UNLOAD_WAIT_S
            while state(client, "lazy") != "unloaded":
                if time.monotonic() > deadline:
                    raise TimeoutError("keep_alive never unloaded the model")
                time.sleep(0.2)
            time.sleep(SETTLE_S)
            after = rss_mib(pid)
            cycles.append({"rss_before_mib": before, "cold_ttft_ms": cold * 1000, "load_ms": load_s * 1000,
                           "rss_loaded_mib": loaded, "rss_loaded_with_embeddings_mib": with_embeddings,
                           "warm_ttft_ms": statistics.median(warm) * 1000, "rss_after_unload_mib": after})
    finally:
        client.close()
        server.stop()

    result = {"model": str(model), "threads": args.threads, "file_mib": model.stat().st_size / 2**20, "cycles": cycles}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"model: {model} ({result['file_mib']:.0f} MiB)  threads: {args.threads}")
    print("| cycle | load ms | cold TTFT ms (first request) | warm TTFT ms (median) | RSS before | loaded | +embeddings | after unload |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for index, cycle in enumerate(cycles, 1):
        print(f"| {index} | {cycle['load_ms']:.0f} | {cycle['cold_ttft_ms']:.0f} | {cycle['warm_ttft_ms']:.1f} | "
              f"{cycle['rss_before_mib']:.0f} MiB | {cycle['rss_loaded_mib']:.0f} MiB | "
              f"{cycle['rss_loaded_with_embeddings_mib']:.0f} MiB | {cycle['rss_after_unload_mib']:.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
