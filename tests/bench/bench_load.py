"""Concurrency, control plane and footprint, in one run against one hal0.

* Concurrency: 1, 4 and 16 simultaneous streaming clients (and limit+4 to show where 503s start):
  aggregate generated tokens/s, TTFT p95, fairness (max/min per-client tokens/s), 503s, cut-off streams.
* Control plane: requests/s and p99 for /health, /v1/models, memory search over 10,000 items and the
  approvals list, against a bare Starlette app answering the same JSON on the same machine (ratio).
* Footprint: hal0's RSS minus the model file's size, idle and under the 16-client load.
Writes results/bench_load.json. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.bench.common import GEMMA, percentile, start_hal0, summary, wait_ready, write_result

QUEUE_LIMIT = 16
BARE_APP = '''
import json, sys
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
import uvicorn
payloads = json.load(open(sys.argv[1]))
def endpoint(body):
    async def handle(request):
        return Response(body, media_type="application/json")
    return handle
app = Starlette(routes=[Route(path, endpoint(body.encode())) for path, body in payloads.items()])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
'''


async def _stream_client(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    first, tokens, done, status = None, 0, False, 0
    async with client.stream("POST", "/v1/completions", json=body) as response:
        status = response.status_code
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                first = first if first is not None else time.perf_counter() - started
                tokens += 1
            elif line == "data: [DONE]":
                done = True
    elapsed = time.perf_counter() - started
    return {"status": status, "ttft": first, "tokens": tokens, "elapsed": elapsed, "done": done}


async def _concurrency(url: str, clients: int, tokens: int) -> dict[str, Any]:
    body = {"prompt": "Once upon a time", "max_tokens": tokens, "temperature": 0, "stream": True}
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=clients + 4)) as client:
        started = time.perf_counter()
        runs = await asyncio.gather(*(_stream_client(client, body) for _ in range(clients)))
        wall = time.perf_counter() - started
    served = [run for run in runs if run["status"] == 200]
    rates = [run["tokens"] / run["elapsed"] for run in served if run["elapsed"] > 0]
    return {
        "clients": clients,
        "aggregate_tokens_per_s": sum(run["tokens"] for run in served) / wall,
        "ttft_p95_s": percentile([run["ttft"] for run in served if run["ttft"] is not None], 0.95),
        "fairness_max_over_min": (max(rates) / min(rates)) if rates else float("nan"),
        "rejected_503": sum(1 for run in runs if run["status"] == 503),
        "cut_off": sum(1 for run in served if not run["done"]),
    }


async def _hammer(url: str, path: str, requests: int, concurrency: int, headers: dict[str, str]) -> dict[str, Any]:
    latencies: list[float] = []
    queue = list(range(requests))

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        async def worker() -> None:
            while queue:
                queue.pop()
                started = time.perf_counter()
                response = await client.get(path)
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"requests_per_s": requests / wall, "p99_ms": percentile(latencies, 0.99) * 1000}


def _seed_memory(url: str, count: int) -> None:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    with httpx.Client(base_url=url, headers={"X-hal0-Agent": "bench"}, timeout=30) as client:
        for index in range(count):
            text = f"note {index} {words[index % 10]} {words[(index // 10) % 10]} {words[(index // 100) % 10]}"
            client.post("/api/memory", json={"text": text, "tags": [words[index % 3]]}).raise_for_status()


def _rss(process: psutil.Process) -> int:
    return process.memory_info().rss


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--memory-items", type=int, default=10_000)
    args = parser.parse_args(argv)
    from hal0.inference.tiny_model import write_test_model

    workdir = Path(tempfile.mkdtemp(prefix="hal0-load-"))
    model = next((path for path in GEMMA if path.is_file()), None) or write_test_model(workdir / "tiny.gguf")
    threads = os.cpu_count() or 2
    hal0 = start_hal0(workdir, 18541, [{"id": "bench", "path": str(model), "default": True, "n_ctx": 2048, "n_threads": threads}],
                      server={"queue_limit": QUEUE_LIMIT}, memory={"enabled": True, "path": str(workdir / "memory.db")})
    proc = psutil.Process(hal0.process.pid)
    model_bytes = model.stat().st_size
    result: dict[str, Any] = {"model": str(model), "queue_limit": QUEUE_LIMIT}
    bare = None
    try:
        idle_rss = _rss(proc)
        peak = [idle_rss]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak.append(_rss(proc))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        result["concurrency"] = [asyncio.run(_concurrency(hal0.url, clients, args.tokens)) for clients in (1, 4, 16, QUEUE_LIMIT + 5)]
        sampling.set()
        sampler.join()
        result["footprint"] = {"model_bytes": model_bytes, "idle_rss_minus_model_mb": (idle_rss - model_bytes) / 2**20,
                               "load_rss_minus_model_mb": (max(peak) - model_bytes) / 2**20}

        _seed_memory(hal0.url, args.memory_items)
        paths = ["/health", "/v1/models", "/api/memory?q=delta+echo&limit=10", "/api/approvals"]
        headers = {"X-hal0-Agent": "bench"}
        payloads = {path.split("?")[0]: httpx.get(hal0.url + path, headers=headers).text for path in paths}
        spec = workdir / "payloads.json"
        import json

        spec.write_text(json.dumps(payloads))
        bare_process = subprocess.Popen([sys.executable, "-c", BARE_APP, str(spec), "18542"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready("http://127.0.0.1:18542", "/health", bare_process)
        bare = bare_process
        control = {}
        for path in paths:
            ours = asyncio.run(_hammer(hal0.url, path, args.requests, 8, headers))
            theirs = asyncio.run(_hammer("http://127.0.0.1:18542", path.split("?")[0], args.requests, 8, headers))
            control[path] = {"hal0": ours, "bare_starlette": theirs, "ratio": ours["requests_per_s"] / theirs["requests_per_s"]}
        result["control_plane"] = control
        search = [asyncio.run(_hammer(hal0.url, paths[2], 200, 1, headers))["p99_ms"]]
        result["memory_search_p99_ms_single_client"] = search[0]
    finally:
        hal0.stop()
        if bare is not None:
            bare.terminate()
            bare.wait(10)
    out = write_result("bench_load", result)
    print("| clients | agg tok/s | TTFT p95 ms | fairness max/min | 503s | cut off |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in result["concurrency"]:
        print(f"| {row['clients']} | {row['aggregate_tokens_per_s']:.1f} | {row['ttft_p95_s'] * 1000:.0f} | "
              f"{row['fairness_max_over_min']:.2f} | {row['rejected_503']} | {row['cut_off']} |")
    print("\n| route | hal0 req/s | bare req/s | ratio | hal0 p99 ms | bare p99 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for path, row in result["control_plane"].items():
        print(f"| {path} | {row['hal0']['requests_per_s']:.0f} | {row['bare_starlette']['requests_per_s']:.0f} | {row['ratio']:.2f} | "
              f"{row['hal0']['p99_ms']:.1f} | {row['bare_starlette']['p99_ms']:.1f} |")
    print(f"\nfootprint: RSS - model = {result['footprint']['idle_rss_minus_model_mb']:.0f} MiB idle, "
          f"{result['footprint']['load_rss_minus_model_mb']:.0f} MiB under load")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)

__all__ = ["main", "summary"]
