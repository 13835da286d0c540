"""Inference overhead vs peers, same model and settings, one run: hal0 vs llama-cpp-python in-process
vs llama-cpp-python's own server, on the tiny model and on gemma3-270m (when installed).

For each side: generated tokens/s of a non-streaming completion and of a streaming one (median of
runs), and time to first token of a streaming completion (p50/p95). Sides are interleaved, run by
run, so drift hits them alike.

Then `defaults` (issue 16): hal0 with the shipped model settings of config/hal0.yaml (n_threads,
flash_attn and the rest left at their defaults) against the best direct llama-cpp-python run over a
grid of threads (1 to the CPU count) and flash attention (off, on), same n_ctx, interleaved the same
way. Writes results/bench_peers.json.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.bench.common import GEMMA, ROOT, SETTLE_S, start_hal0, start_llama_cpp_server, summary, write_result

PROMPT = "The history of the printing press begins"


def _direct(llm: Any, body: dict[str, Any], stream: bool) -> tuple[float, float | None]:
    started = time.perf_counter()
    if not stream:
        result = llm.create_completion(**body)
        return result["usage"]["completion_tokens"] / (time.perf_counter() - started), None
    first, tokens = None, 0
    for chunk in llm.create_completion(stream=True, **body):
        if first is None:
            first = time.perf_counter() - started
        tokens += 1 if chunk["choices"][0]["text"] is not None else 0
    return tokens / (time.perf_counter() - started), first


def _http(client: httpx.Client, model: str, body: dict[str, Any], stream: bool) -> tuple[float, float | None]:
    payload = {**body, "model": model}
    started = time.perf_counter()
    if not stream:
        response = client.post("/v1/completions", json=payload)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"] / (time.perf_counter() - started), None
    first, tokens = None, 0
    with client.stream("POST", "/v1/completions", json={**payload, "stream": True}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                if first is None:
                    first = time.perf_counter() - started
                tokens += 1
    return tokens / (time.perf_counter() - started), first


def bench_model(model: Path, label: str, runs: int, tokens: int, threads: int, workdir: Path) -> dict[str, Any]:
    from llama_cpp import Llama

    n_ctx = 1024
    body = {"prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "seed": 1}
    direct = Llama(model_path=str(model), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, seed=1, verbose=False)
    hal0 = start_hal0(workdir, 18531, [{"id": "bench", "path": str(model), "default": True, "n_ctx": n_ctx,
                                        "n_threads": threads, "n_threads_batch": threads}])
    try:
        peer = start_llama_cpp_server(model, 18532, threads, n_ctx)
    except BaseException:
        hal0.stop()  # never leave it on its port for the next run to measure
        raise
    clients = {"hal0": httpx.Client(base_url=hal0.url, timeout=300), "llama_cpp.server": httpx.Client(base_url=peer.url, timeout=300)}
    samples: dict[str, dict[str, list[float]]] = {side: {"tps": [], "stream_tps": [], "ttft": []} for side in ("direct", *clients)}
    try:
        for side_client in clients.values():  # warm-up
            _http(side_client, "bench", body, False)
        _direct(direct, body, False)
        for _ in range(runs):
            for side in samples:
                for stream in (False, True):
                    time.sleep(SETTLE_S)
                    if side == "direct":
                        rate, first = _direct(direct, body, stream)
                    else:
                        rate, first = _http(clients[side], "bench", body, stream)
                    samples[side]["stream_tps" if stream else "tps"].append(rate)
                    if first is not None:
                        samples[side]["ttft"].append(first)
    finally:
        for client in clients.values():
            client.close()
        hal0.stop()
        peer.stop()
        direct.close()
    result: dict[str, Any] = {"model": label, "path": str(model), "tokens": tokens, "runs": runs, "threads": threads, "sides": {}}
    for side, values in samples.items():
        result["sides"][side] = {"tokens_per_s": summary(values["tps"]), "stream_tokens_per_s": summary(values["stream_tps"]),
                                 "ttft_s": summary(values["ttft"])}
    base = result["sides"]["direct"]
    for side in ("hal0", "llama_cpp.server"):
        entry = result["sides"][side]
        entry["ratio_vs_direct"] = entry["tokens_per_s"]["p50"] / base["tokens_per_s"]["p50"]
        entry["stream_ratio_vs_direct"] = entry["stream_tokens_per_s"]["p50"] / base["stream_tokens_per_s"]["p50"]
        entry["ttft_overhead_ms"] = (entry["ttft_s"]["p50"] - base["ttft_s"]["p50"]) * 1000
    return result


def shipped_model(path: Path) -> dict[str, Any]:
    """The default model's entry of config/hal0.yaml, pointed at `path`: every setting that bears on speed
    is the shipped one (what the file leaves out is the pydantic default)."""
    import yaml

    shipped = yaml.safe_load((ROOT / "config" / "hal0.yaml").read_text())
    entry = next(model for model in shipped["models"] if model.get("default"))
    entry = {key: value for key, value in entry.items() if key not in ("sha256", "chat_format")}
    return {**entry, "id": "bench", "path": str(path)}


def bench_defaults(model: Path, label: str, runs: int, tokens: int, workdir: Path) -> dict[str, Any]:
    """hal0 on the shipped settings vs the best of a grid of direct llama-cpp-python runs."""
    from llama_cpp import Llama

    entry = shipped_model(model)
    body = {"prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "seed": 1}
    grid = list(itertools.product(range(1, (os.cpu_count() or 2) + 1), (False, True)))
    direct = {f"direct threads={threads} flash_attn={'on' if flash else 'off'}":
              Llama(model_path=str(model), n_ctx=entry["n_ctx"], n_threads=threads, n_threads_batch=threads,
                    flash_attn=flash, seed=1, verbose=False)
              for threads, flash in grid}
    hal0 = start_hal0(workdir, 18533, [entry])
    client = httpx.Client(base_url=hal0.url, timeout=300)
    samples: dict[str, dict[str, list[float]]] = {side: {"tps": [], "stream_tps": []} for side in ("hal0", *direct)}
    try:
        _http(client, "bench", body, False)
        for llm in direct.values():
            _direct(llm, body, False)
        for _ in range(runs):
            for side in samples:
                for stream in (False, True):
                    time.sleep(SETTLE_S)
                    rate = (_http(client, "bench", body, stream) if side == "hal0" else _direct(direct[side], body, stream))[0]
                    samples[side]["stream_tps" if stream else "tps"].append(rate)
        effective = client.get("/v1/models").json()["data"][0].get("n_threads")
    finally:
        client.close()
        hal0.stop()
        for llm in direct.values():
            llm.close()
    sides = {side: {"tokens_per_s": summary(values["tps"]), "stream_tokens_per_s": summary(values["stream_tps"])}
             for side, values in samples.items()}
    best = max((side for side in direct), key=lambda side: sides[side]["tokens_per_s"]["p50"])
    best_stream = max((side for side in direct), key=lambda side: sides[side]["stream_tokens_per_s"]["p50"])
    return {"model": label, "tokens": tokens, "runs": runs, "shipped": {k: v for k, v in entry.items() if k != "path"},
            "hal0_n_threads": effective, "sides": sides, "best": best, "best_stream": best_stream,
            "ratio_vs_best": sides["hal0"]["tokens_per_s"]["p50"] / sides[best]["tokens_per_s"]["p50"],
            "stream_ratio_vs_best": sides["hal0"]["stream_tokens_per_s"]["p50"] / sides[best_stream]["stream_tokens_per_s"]["p50"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    from hal0.inference.tiny_model import write_test_model

    workdir = Path(tempfile.mkdtemp(prefix="hal0-bench-"))
    models = [(write_test_model(workdir / "tiny.gguf"), "tiny")]
    gemma = next((path for path in GEMMA if path.is_file()), None)
    if gemma is not None:
        models.append((gemma, "gemma3-270m"))
    results = {"models": [bench_model(path, label, args.runs, args.tokens, args.threads, workdir) for path, label in models],
               "defaults": [bench_defaults(path, label, args.runs, args.tokens, workdir) for path, label in models]}
    out = write_result("bench_peers", results)
    for entry in results["models"]:
        print(f"\n{entry['model']} ({entry['tokens']} tokens, {entry['runs']} runs)")
        print("| side | tok/s | stream tok/s | TTFT p50 ms | TTFT p95 ms | vs direct |")
        print("| --- | --- | --- | --- | --- | --- |")
        for side, data in entry["sides"].items():
            ratio = f"{data['ratio_vs_direct']:.3f}x" if "ratio_vs_direct" in data else "1.000x"
            print(f"| {side} | {data['tokens_per_s']['p50']:.1f} | {data['stream_tokens_per_s']['p50']:.1f} | "
                  f"{data['ttft_s']['p50'] * 1000:.1f} | {data['ttft_s']['p95'] * 1000:.1f} | {ratio} |")
    for entry in results["defaults"]:
        print(f"\n{entry['model']}: shipped defaults (hal0 n_threads {entry['hal0_n_threads']}) vs the best direct run")
        print("| side | tok/s | stream tok/s |")
        print("| --- | --- | --- |")
        for side, data in entry["sides"].items():
            print(f"| {side} | {data['tokens_per_s']['p50']:.1f} | {data['stream_tokens_per_s']['p50']:.1f} |")
        print(f"hal0 vs best: {entry['ratio_vs_best']:.3f}x ({entry['best']}), streamed {entry['stream_ratio_vs_best']:.3f}x "
              f"({entry['best_stream']}); target >= 0.97")
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
