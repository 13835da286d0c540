"""Memory search latency through the REST API, over real HTTP, with 10,000 items in one namespace.

    .venv/bin/python tests/bench/bench_memory.py [--items 10000] [--queries 500]

Starts `hal0 serve` on a free loopback port (memory on, the tiny generated model), fills one
namespace, then times `GET /api/memory?q=...` from a keep-alive client and prints p50/p95/p99.
The items are written through the store directly (10,000 POSTs would time the writer, not
search); a sample of POSTs is timed separately. Target (issue 4): search p95 under 20 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hal0.inference.tiny_model import write_test_model
from hal0.memory import Limits, MemoryStore

from tests.conftest import HAL0, free_port, tiny_config

AGENT = "bench"
COMMON = ["alpha", "beta", "gamma", "delta", "omega"]


def _vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return sorted({"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(size)})


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _report(name: str, samples: list[float]) -> float:
    ms = [sample * 1000 for sample in samples]
    p95 = _percentile(ms, 0.95)
    print(f"{name:<28} n={len(ms):<5} p50={_percentile(ms, 0.5):6.2f} ms  p95={p95:6.2f} ms  "
          f"p99={_percentile(ms, 0.99):6.2f} ms  mean={statistics.fmean(ms):6.2f} ms")
    return p95


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    words = _vocabulary(rng)
    tmp = Path(tempfile.mkdtemp(prefix="hal0-bench-memory-"))
    db = tmp / "memory.db"

    started = time.perf_counter()
    store = MemoryStore(db)
    limits = Limits(max_items=args.items + 1000, max_item_bytes=16384)
    for n in range(args.items):
        # one of five common words per item: the worst case below matches thousands of rows
        text = " ".join([rng.choice(COMMON)] + [rng.choice(words) for _ in range(rng.randint(8, 40))])
        store.add(AGENT, text, limits, tags=[f"t{n % 20}"])
    store.close()
    print(f"filled {args.items} items in {time.perf_counter() - started:.1f} s ({db.stat().st_size / 1e6:.1f} MB)")

    port = free_port()
    config = tiny_config(write_test_model(tmp / "tiny.gguf"), port,
                         memory={"enabled": True, "path": str(db), "max_items_per_agent": args.items + 1000})
    (tmp / "hal0.yaml").write_text(yaml.safe_dump(config))
    import subprocess

    log = (tmp / "hal0.log").open("wb")
    process = subprocess.Popen([*HAL0, "serve", "--config", str(tmp / "hal0.yaml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-hal0-Agent": AGENT}, timeout=30) as client:
            for _ in range(300):
                try:
                    if client.get("/health").status_code in (200, 503):
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            assert client.get("/api/memory", params={"limit": 1}).status_code == 200
            for _ in range(20):  # warm-up: connections, page cache, the store's lazy open
                client.get("/api/memory", params={"q": rng.choice(words)})
            searches, hits = [], 0
            for _ in range(args.queries):
                query = " ".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
                t0 = time.perf_counter()
                response = client.get("/api/memory", params={"q": query, "limit": 10})
                searches.append(time.perf_counter() - t0)
                assert response.status_code == 200, response.text
                hits += len(response.json()["items"])
            common = []
            for n in range(args.queries // 5):
                query = " ".join(rng.sample(COMMON, 1 + n % 2))  # ~2,000 or ~4,000 matching items to rank
                t0 = time.perf_counter()
                client.get("/api/memory", params={"q": query, "limit": 10})
                common.append(time.perf_counter() - t0)
            tagged = []
            for n in range(args.queries // 5):
                t0 = time.perf_counter()
                client.get("/api/memory", params={"q": rng.choice(words), "tag": f"t{n % 20}", "limit": 10})
                tagged.append(time.perf_counter() - t0)
            listed = []
            for _ in range(args.queries // 5):
                t0 = time.perf_counter()
                client.get("/api/memory", params={"limit": 20})
                listed.append(time.perf_counter() - t0)
            adds = []
            for n in range(100):
                t0 = time.perf_counter()
                client.post("/api/memory", json={"text": f"bench add {n} " + rng.choice(words)})
                adds.append(time.perf_counter() - t0)
    finally:
        process.terminate()
        process.wait(15)
        log.close()
    print(f"search results per query: {hits / args.queries:.1f} on average (limit 10)")
    p95 = _report("search q (1-3 words)", searches)
    _report("search, 2k-4k matches", common)
    _report("search q + tag", tagged)
    _report("list newest (limit 20)", listed)
    _report("add (POST)", adds)
    verdict = "PASS" if p95 < 20 else "FAIL"
    print(f"{verdict}: search p95 {p95:.2f} ms (target < 20 ms, {args.items} items in one namespace)")
    return 0 if p95 < 20 else 1


if __name__ == "__main__":
    sys.exit(main())
