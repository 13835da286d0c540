"""A busy box (issue 29): generation speed with 0, 1 and 2 cores kept busy by a CPU hog on the same
machine, hal0 and llama-server side by side with the same settings.

Sides, all up together on gemma3-270m (the model of the issue), same n_ctx and thread count (the
CPU count, what both resolve their default to on a machine without SMT):
- `hal0`: the shipped thread settings (n_threads null, adaptive_threads on);
- `hal0 fixed`: adaptive_threads off, every decode on all the threads (hal0's default before);
- `llama-server`: image/llama-server, --threads and --threads-batch the same, its --poll and --prio
  defaults (its build uses OpenMP, as llama-cpp-python's: --poll does not apply, see the README).

For each number of busy cores the hog runs (busy-loop processes with their own deadline, killed by
PID when the step ends), then each side generates `--tokens` tokens at temperature 0, `--runs` times,
sides interleaved run by run; medians. The hog shares the servers' session, so it competes with
them at the same weight (with autogroups, a process of another session would not). Writes
results/bench_noisy.json with the load averages seen.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.bench.bench_agents import find_llama_server, start_llama_server
from tests.bench.common import GEMMA, SETTLE_S, Process, start_hal0, write_result

PROMPT = "The history of the printing press begins"
HOG = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextmanager
def cpu_hog(cores: int, seconds: float) -> Iterator[list[int]]:
    """`cores` busy-loop processes that end by themselves after `seconds`, and are killed on the way out."""
    procs = [subprocess.Popen([sys.executable, "-c", HOG.format(seconds=seconds)]) for _ in range(cores)]
    try:
        time.sleep(1.0 if cores else 0)  # let the scheduler spread them before anything is timed
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def generate(client: httpx.Client, tokens: int) -> tuple[float, int]:
    started = time.perf_counter()
    response = client.post("/v1/completions", json={"model": "bench", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "seed": 1})
    response.raise_for_status()
    return time.perf_counter() - started, response.json()["usage"]["completion_tokens"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="busy cores, one step each")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--timeout", type=float, default=300, help="seconds a request may take (a collapsed side is slow)")
    parser.add_argument("--model", type=Path, help="the GGUF (default: gemma3-270m)")
    parser.add_argument("--llama-server", help="the llama-server binary (default: $HAL0_LLAMA_SERVER or image/llama-server's cache)")
    args = parser.parse_args(argv)
    model = args.model or next((path for path in GEMMA if path.is_file()), None)
    if model is None:
        print("gemma3-270m is not installed (hal0 models install gemma3-270m): no noisy-neighbour run", file=sys.stderr)
        return {}
    server = find_llama_server(args.llama_server)
    workdir = Path(tempfile.mkdtemp(prefix="hal0-bench-noisy-"))
    n_ctx = 1024
    entry = {"id": "bench", "path": str(model), "default": True, "n_ctx": n_ctx}
    starts: dict[str, Any] = {
        "hal0": lambda: start_hal0(workdir, 18561, [entry]),
        "hal0 fixed": lambda: start_hal0(workdir, 18562, [{**entry, "n_threads": args.threads, "adaptive_threads": False}]),
    }
    if server is not None:
        starts["llama-server"] = lambda: start_llama_server(server, model, 18563, args.threads, 1, n_ctx, workdir)
    else:
        print("llama-server not found (image/llama-server builds it, slow): that side is skipped", file=sys.stderr)
    sides: dict[str, Process] = {}
    clients: dict[str, httpx.Client] = {}
    samples: dict[int, dict[str, list[tuple[float, int]]]] = {}
    load: dict[int, list[float]] = {}
    try:
        for name, start in starts.items():
            sides[name] = start()
            clients[name] = httpx.Client(base_url=sides[name].url, timeout=args.timeout)
            generate(clients[name], args.tokens)  # warm-up
        for busy in args.busy:
            samples[busy] = {name: [] for name in sides}
            load[busy] = list(os.getloadavg())
            # Bounded: long enough for every run of every side at the request timeout, never longer.
            with cpu_hog(busy, args.runs * len(sides) * args.timeout + 10):
                for _ in range(args.runs):
                    for name, client in clients.items():
                        time.sleep(SETTLE_S)
                        samples[busy][name].append(generate(client, args.tokens))
            load[busy] += list(os.getloadavg())
    finally:
        for client in clients.values():
            client.close()
        for side in sides.values():
            side.stop()
    result: dict[str, Any] = {"model": model.name, "tokens": args.tokens, "runs": args.runs, "threads": args.threads,
                              "cpus": os.cpu_count(), "llama_server": str(server) if server else None, "steps": []}
    quiet: dict[str, float] = {}
    for busy, by_side in samples.items():
        step: dict[str, Any] = {"busy_cores": busy, "loadavg_before": load[busy][:3], "loadavg_after": load[busy][3:], "sides": {}}
        for name, runs in by_side.items():
            seconds = statistics.median(run[0] for run in runs)
            row = {"seconds_p50": seconds, "seconds_max": max(run[0] for run in runs), "tokens": statistics.median(run[1] for run in runs),
                   "tokens_per_s": statistics.median(run[1] / run[0] for run in runs)}
            if busy == 0:
                quiet[name] = seconds
            if name in quiet:
                row["vs_quiet"] = seconds / quiet[name]
            step["sides"][name] = row
        result["steps"].append(step)
    out = write_result("bench_noisy", result)
    print_result(result)
    print(f"\nwrote {out}")
    return result


def print_result(result: dict[str, Any]) -> None:
    print(f"\n{result['model']}: {result['tokens']} tokens, {result['runs']} runs, {result['threads']} threads, {result['cpus']} CPUs")
    print("| busy cores | side | s (p50) | s (max) | tok/s | vs quiet | load avg before -> after |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for step in result["steps"]:
        for name, row in step["sides"].items():
            ratio = f"{row['vs_quiet']:.2f}x" if "vs_quiet" in row else "-"
            print(f"| {step['busy_cores']} | {name} | {row['seconds_p50']:.2f} | {row['seconds_max']:.2f} | {row['tokens_per_s']:.1f} | {ratio} | "
                  f"{step['loadavg_before'][0]:.1f} -> {step['loadavg_after'][0]:.1f} |")


if __name__ == "__main__":
    main()
    sys.exit(0)
