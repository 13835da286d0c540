"""Shared pieces of the benchmarks: start servers on loopback, time requests, summarise samples."""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

# llama.cpp's OpenMP threads spin briefly after each step; a pause between sides lets one side's
# spinning end before the next is timed (passive waiting instead would slow every side by a third).
SETTLE_S = 0.5

ROOT = Path(__file__).parents[2]
RESULTS = ROOT / "results"
GEMMA = [Path("/var/lib/hal0/models/gemma-3-270m-q4_k_m.gguf"), Path("/var/cache/hal0/models/gemma-3-270m-q4_k_m.gguf"),
         ROOT / "build" / "models" / "gemma-3-270m-q4_k_m.gguf"]


def percentile(samples: Sequence[float], fraction: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(samples: Sequence[float]) -> dict[str, float]:
    return {"p50": percentile(samples, 0.5), "p95": percentile(samples, 0.95), "p99": percentile(samples, 0.99),
            "mean": statistics.fmean(samples) if samples else float("nan"), "n": len(samples)}


@dataclass
class Process:
    name: str
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_ready(url: str, path: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    # A server left over on the port (an earlier run that died) would answer for the one starting, which
    # then fails to bind and exits: the bench would measure the wrong server. Refuse a port in use.
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            process.kill()
            process.wait()
            raise RuntimeError(f"{url}: port {port} is already in use (a server left over from an earlier run?)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url}{path} never answered 200")


def start_hal0(workdir: Path, port: int, models: list[dict[str, Any]], **sections: Any) -> Process:
    config = {"server": {"bind": "127.0.0.1", "port": port, "log_level": "warning", **sections.pop("server", {})},
              "models": models, "agents": {"approvals": {"path": str(workdir / f"approvals-{port}.db")}}, **sections}
    path = workdir / f"hal0-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen([sys.executable, "-m", "hal0.cli", "serve", "--config", str(path)],
                               stdout=subprocess.DEVNULL, stderr=(workdir / f"hal0-{port}.log").open("wb"))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, "/health", process)
    return Process("hal0", url, process)


def start_llama_cpp_server(model: Path, port: int, threads: int, n_ctx: int) -> Process:
    """llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`), same settings."""
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--n_threads_batch", str(threads), "--model_alias", "bench"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, "/v1/models", process)
    return Process("llama_cpp.server", url, process)


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path
