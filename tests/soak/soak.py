"""A steady mixed load against one hal0 on loopback: chat, memory, approvals and MCP together.

    python -m tests.soak.soak --duration 600      # the 10-minute soak (make soak)

Bounded in time and in requests per second, and stops by itself. Passes when no response is a 5xx
other than a deliberate 503 (queue full), no stream is cut off, and the server's RSS grows less than
10% from the end of warm-up to the end. Writes results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
from hal0.inference.tiny_model import write_test_model

from tests.bench.common import RESULTS, start_hal0


async def _chat(client: httpx.AsyncClient, counts: Counter[str]) -> None:
    body = {"messages": [{"role": "user", "content": "tell me about hal0"}], "max_tokens": 16, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        counts[f"chat {response.status_code}"] += 1
        if response.status_code == 200:
            lines = [line async for line in response.aiter_lines() if line]
            if not lines or lines[-1] != "data: [DONE]":
                counts["cut_off"] += 1


async def _memory(client: httpx.AsyncClient, counts: Counter[str], agent: str) -> None:
    headers = {"X-hal0-Agent": agent}
    added = await client.post("/api/memory", json={"text": f"soak note {random.randint(0, 10**6)} alpha"}, headers=headers)
    counts[f"memory-add {added.status_code}"] += 1
    found = await client.get("/api/memory", params={"q": "alpha", "limit": 5}, headers=headers)
    counts[f"memory-search {found.status_code}"] += 1
    if added.status_code == 201 and random.random() < 0.5:
        gone = await client.delete(f"/api/memory/{added.json()['id']}", headers=headers)
        counts[f"memory-delete {gone.status_code}"] += 1


async def _approval(client: httpx.AsyncClient, counts: Counter[str], agent: str) -> None:
    pending = await client.delete("/api/memory", headers={"X-hal0-Agent": agent})  # forget_all: queued for a human
    counts[f"approval-request {pending.status_code}"] += 1
    if pending.status_code == 202:
        verb = random.choice(["approve", "deny"])
        decided = await client.post(f"/api/approvals/{pending.json()['approval_id']}/{verb}", json={"note": "soak"})
        counts[f"approval-{verb} {decided.status_code}"] += 1
    listed = await client.get("/api/approvals", params={"limit": 20})
    counts[f"approval-list {listed.status_code}"] += 1


async def _mcp(client: httpx.AsyncClient, counts: Counter[str]) -> None:
    # A bare JSON-RPC initialize over streamable HTTP: exercises the gate and the session manager.
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "soak", "version": "1"}}}
    response = await client.post("/mcp/admin", json=body, headers={"Accept": "application/json, text/event-stream"})
    counts[f"mcp {response.status_code}"] += 1


async def _run(url: str, duration: float, rate: float, pid: int, warmup: float) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    process = psutil.Process(pid)
    deadline = time.monotonic() + duration
    baseline_rss: int | None = None
    started = time.monotonic()
    tasks: set[asyncio.Task[None]] = set()
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        while time.monotonic() < deadline:
            if baseline_rss is None and time.monotonic() - started >= warmup:
                baseline_rss = process.memory_info().rss
            agent = f"soak{random.randint(0, 9)}"
            kind = random.choices(["chat", "memory", "approval", "mcp"], weights=[2, 5, 1, 2])[0]
            job = {"chat": _chat(client, counts) if kind == "chat" else None,
                   "memory": _memory(client, counts, agent) if kind == "memory" else None,
                   "approval": _approval(client, counts, agent) if kind == "approval" else None,
                   "mcp": _mcp(client, counts) if kind == "mcp" else None}[kind]
            assert job is not None
            task = asyncio.create_task(job)
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if len(tasks) > 32:  # bounded: never more than 32 requests in flight
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(1 / rate)
        if tasks:
            await asyncio.wait(tasks)
    final_rss = process.memory_info().rss
    baseline_rss = baseline_rss or final_rss
    server_errors = {key: value for key, value in counts.items() if key.endswith(tuple(f" {code}" for code in range(500, 600)))
                     and not key.endswith(" 503")}
    return {"duration_s": duration, "counts": dict(counts), "server_errors": server_errors, "cut_off": counts["cut_off"],
            "rss_baseline_mb": baseline_rss / 2**20, "rss_final_mb": final_rss / 2**20,
            "rss_growth": (final_rss - baseline_rss) / baseline_rss}


def soak(duration: float, rate: float = 20.0) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="hal0-soak-"))
    model = write_test_model(workdir / "tiny.gguf")
    server = start_hal0(workdir, 18561, [{"id": "tiny", "path": str(model), "default": True, "n_ctx": 1024, "n_threads": 1}],
                        memory={"enabled": True, "path": str(workdir / "memory.db")})
    try:
        result = asyncio.run(_run(server.url, duration, rate, server.process.pid, warmup=min(30.0, duration / 4)))
        result["server_alive"] = server.process.poll() is None
    finally:
        server.stop()
    result["passed"] = (not result["server_errors"] and result["cut_off"] == 0 and result["rss_growth"] < 0.10
                        and result["server_alive"])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--rate", type=float, default=20.0, help="new requests per second")
    args = parser.parse_args()
    result = soak(args.duration, args.rate)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
