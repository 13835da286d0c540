"""gemma3-270m on the CPU and offloaded to Vulkan (Mesa's lavapipe, a Vulkan device that runs on the CPU), same run.

    python -m tests.bench.bench_gpu [--model PATH] [--tokens N] [--runs N] [--threads N]

Each side runs in a process of its own, interleaved run by run so drift hits both alike: the CPU side with this
Python's llama.cpp (the cpu wheel, n_gpu_layers 0), the Vulkan side with the cached vulkan wheel
(image/llama-wheel vulkan) in build/bench-vulkan-venv (made here once), n_gpu_layers -1 and
GGML_VK_VISIBLE_DEVICES=0 (ggml skips a CPU-type device otherwise). Each Vulkan run must show every layer
assigned to Vulkan0 in llama.cpp's load log, or the run is an error, not a number. One warm-up generation per
process first (Mesa compiles its shaders; MESA_SHADER_CACHE_DIR keeps them under build/). Greedy text of both
sides is recorded too. Writes results/bench_gpu.json. A benchmark, not a test: it asserts nothing about speed
(lavapipe is expected to be far slower than the CPU backend; the point is that offload really happens).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]
PROMPT = "The history of the printing press begins"
LAYER = re.compile(r"layer +(\d+) assigned to device (\S+?),")


def child(model: Path, tokens: int, layers: int, threads: int) -> int:
    """One measured generation in this process (after a warm-up); JSON on stdout, llama.cpp's log on stderr."""
    from llama_cpp import Llama

    started = time.perf_counter()
    llama = Llama(model_path=str(model), n_gpu_layers=layers, n_ctx=512, n_threads=threads, n_threads_batch=threads, seed=1, verbose=True)
    loaded = time.perf_counter() - started
    llama.create_completion("Hello", max_tokens=2, temperature=0)  # warm-up: shaders, caches
    started = time.perf_counter()
    reply = llama.create_completion(PROMPT, max_tokens=tokens, temperature=0, top_k=1, seed=1)
    elapsed = time.perf_counter() - started
    generated = reply["usage"]["completion_tokens"]
    print(json.dumps({"load_s": loaded, "seconds": elapsed, "tokens": generated, "text": reply["choices"][0]["text"]}))
    return 0


def vulkan_python() -> Path:
    """build/bench-vulkan-venv with the cached vulkan wheel (never built here: image/llama-wheel vulkan first)."""
    venv = ROOT / "build" / "bench-vulkan-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".wheel"
    wheel = subprocess.run([ROOT / "image" / "llama-wheel", "--cached", "vulkan"], capture_output=True, text=True, check=False)
    if wheel.returncode != 0:
        sys.exit(f"bench_gpu: {wheel.stderr.strip()}")
    path = wheel.stdout.strip()
    if not python.exists() or not stamp.exists() or stamp.read_text() != path:
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", path], check=True)
        stamp.write_text(path)
    return python


def measure(python: Path, model: Path, tokens: int, layers: int, threads: int, env: dict[str, str]) -> dict[str, object]:
    # The script by path: the vulkan venv has llama.cpp only, not the bench's other dependencies.
    command = [str(python), str(Path(__file__).resolve()), "--child", "--model", str(model), "--tokens", str(tokens), "--layers", str(layers),
               "--threads", str(threads)]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        sys.exit(f"bench_gpu: {' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assigned = LAYER.findall(done.stderr)
    result["layers"] = sorted({where for _, where in assigned})
    result["layer_count"] = len({layer for layer, _ in assigned})
    result["device_line"] = next((line.strip() for line in done.stderr.splitlines() if "using device Vulkan0" in line), None)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="GGUF file (default: the installed gemma3-270m)")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_gpu.json")
    args = parser.parse_args()
    if args.child:
        return child(args.model, args.tokens, args.layers, args.threads)
    from tests.bench.common import GEMMA

    model = args.model or next((path for path in GEMMA if path.is_file()), None)
    if model is None:
        sys.exit("bench_gpu: no gemma3-270m (hal0 models install gemma3-270m --dir build/models), or pass --model")

    vulkan = vulkan_python()
    shader_cache = ROOT / "build" / "mesa-shader-cache"
    shader_cache.mkdir(parents=True, exist_ok=True)
    vulkan_env = {"GGML_VK_VISIBLE_DEVICES": "0", "MESA_SHADER_CACHE_DIR": str(shader_cache)}
    print(f"model: {model}  threads: {args.threads}  tokens: {args.tokens}  runs: {args.runs}")
    runs: dict[str, list[dict[str, object]]] = {"cpu": [], "vulkan": []}
    for index in range(args.runs):
        runs["cpu"].append(measure(Path(sys.executable), model, args.tokens, 0, args.threads, {}))
        side = measure(vulkan, model, args.tokens, -1, args.threads, vulkan_env)
        if side["layers"] != ["Vulkan0"]:
            sys.exit(f"bench_gpu: the vulkan run put layers on {side['layers']}, not only on Vulkan0: not a Vulkan number")
        runs["vulkan"].append(side)
        print(f"run {index + 1}: cpu {runs['cpu'][-1]['tokens'] / runs['cpu'][-1]['seconds']:.2f} tok/s, "
              f"vulkan {side['tokens'] / side['seconds']:.2f} tok/s ({side['layer_count']} layers on Vulkan0)")
    rates = {name: statistics.median(r["tokens"] / r["seconds"] for r in results) for name, results in runs.items()}
    summary = {
        "model": str(model), "threads": args.threads, "tokens": args.tokens, "runs": runs,
        "tokens_per_s": rates, "cpu_over_vulkan": rates["cpu"] / rates["vulkan"],
        "vulkan_device": runs["vulkan"][0]["device_line"], "greedy_text_equal": runs["cpu"][0]["text"] == runs["vulkan"][0]["text"],
    }
    print(f"tokens/s (median): cpu {rates['cpu']:.2f}, vulkan (lavapipe) {rates['vulkan']:.2f}: the CPU is {summary['cpu_over_vulkan']:.1f}x faster")
    print(f"greedy text equal: {summary['greedy_text_equal']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
