"""Turn results/*.json into results/REPORT.md and PNG plots a person can look at."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: files only
import matplotlib.pyplot as plt

from tests.bench.common import RESULTS


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _bar(path: Path, title: str, labels: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=100)
    width = 0.8 / max(1, len(series))
    for offset, (name, values) in enumerate(series.items()):
        positions = [index + offset * width for index in range(len(labels))]
        bars = axis.bar(positions, values, width, label=name)
        axis.bar_label(bars, fmt="%.1f", fontsize=8)
    axis.set_xticks([index + width * (len(series) - 1) / 2 for index in range(len(labels))], labels)
    axis.set_title(title)
    axis.set_ylabel(ylabel)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def peers_section(data: dict[str, Any]) -> list[str]:
    lines = ["## Inference overhead vs peers (same model and settings, one run)", ""]
    for entry in data["models"]:
        lines += [f"### {entry['model']} ({entry['tokens']} tokens, {entry['runs']} runs, {entry['threads']} threads)", "",
                  "| side | tok/s (p50) | stream tok/s (p50) | TTFT p50 ms | TTFT p95 ms | vs direct | stream vs direct |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for side, row in entry["sides"].items():
            ratio = f"{row.get('ratio_vs_direct', 1):.3f}x"
            stream_ratio = f"{row.get('stream_ratio_vs_direct', 1):.3f}x"
            lines.append(f"| {side} | {row['tokens_per_s']['p50']:.1f} | {row['stream_tokens_per_s']['p50']:.1f} | "
                         f"{row['ttft_s']['p50'] * 1000:.1f} | {row['ttft_s']['p95'] * 1000:.1f} | {ratio} | {stream_ratio} |")
        sides = list(entry["sides"])
        plot = RESULTS / f"peers_{entry['model']}.png"
        _bar(plot, f"{entry['model']}: generated tokens/s", ["non-streaming", "streaming"],
             {side: [entry["sides"][side]["tokens_per_s"]["p50"], entry["sides"][side]["stream_tokens_per_s"]["p50"]] for side in sides},
             "tokens/s (median)")
        lines += ["", f"![{entry['model']}]({plot.name})", ""]
    for entry in data.get("defaults", []):
        lines += [f"### {entry['model']}: shipped defaults vs the best direct llama-cpp-python run", "",
                  f"hal0 on config/hal0.yaml's model settings (n_threads resolved to {entry['hal0_n_threads']}); "
                  "direct runs over threads x flash attention.", "",
                  "| side | tok/s (p50) | stream tok/s (p50) |", "| --- | --- | --- |"]
        for side, row in entry["sides"].items():
            lines.append(f"| {side} | {row['tokens_per_s']['p50']:.1f} | {row['stream_tokens_per_s']['p50']:.1f} |")
        lines += ["", f"hal0 vs the best: {entry['ratio_vs_best']:.3f}x non-streamed ({entry['best']}), "
                  f"{entry['stream_ratio_vs_best']:.3f}x streamed ({entry['best_stream']}); target >= 0.97.", ""]
    return lines


def load_section(data: dict[str, Any]) -> list[str]:
    lines = ["## Concurrency (streaming clients, queue_limit " + str(data["queue_limit"]) + ")", "",
             "| clients | aggregate tok/s | TTFT p95 ms | fairness max/min | 503s | cut-off streams |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in data["concurrency"]:
        lines.append(f"| {row['clients']} | {row['aggregate_tokens_per_s']:.1f} | {row['ttft_p95_s'] * 1000:.0f} | "
                     f"{row['fairness_max_over_min']:.2f} | {row['rejected_503']} | {row['cut_off']} |")
    clients = [str(row["clients"]) for row in data["concurrency"]]
    _bar(RESULTS / "concurrency.png", "Aggregate generated tokens/s by concurrent streaming clients", clients,
         {"hal0": [row["aggregate_tokens_per_s"] for row in data["concurrency"]]}, "tokens/s")
    lines += ["", "![concurrency](concurrency.png)", "", "## Control plane vs a bare Starlette app (same JSON, same machine)", "",
              "| route | hal0 req/s | bare req/s | ratio | hal0 p99 ms | bare p99 ms |", "| --- | --- | --- | --- | --- | --- |"]
    for path, row in data["control_plane"].items():
        lines.append(f"| `{path}` | {row['hal0']['requests_per_s']:.0f} | {row['bare_starlette']['requests_per_s']:.0f} | "
                     f"{row['ratio']:.2f} | {row['hal0']['p99_ms']:.1f} | {row['bare_starlette']['p99_ms']:.1f} |")
    routes = [path.split("?")[0] for path in data["control_plane"]]
    _bar(RESULTS / "control_plane.png", "Control plane requests/s", routes,
         {"hal0": [row["hal0"]["requests_per_s"] for row in data["control_plane"].values()],
          "bare Starlette": [row["bare_starlette"]["requests_per_s"] for row in data["control_plane"].values()]}, "requests/s")
    footprint = data["footprint"]
    lines += ["", "![control plane](control_plane.png)", "", "## Footprint", "",
              f"Server RSS minus model file ({footprint['model_bytes'] / 2**20:.0f} MiB): "
              f"{footprint['idle_rss_minus_model_mb']:.0f} MiB idle, {footprint['load_rss_minus_model_mb']:.0f} MiB under load.", ""]
    return lines


def agents_section(data: dict[str, Any]) -> list[str]:
    lines = ["## Agent workload: returning agents and the prompt cache (bench_agents)", ""]
    for entry in data["models"]:
        peer = "llama-server" if entry.get("llama_server") else "llama-server not built (image/llama-server): no peer"
        lines += [f"### {entry['model']}: {entry['agents']} agents ({entry['beyond_agents']} beyond the slots) on {entry['slots']} slots, "
                  f"{entry['turns']} turns, {entry['reply_tokens']}-token replies, {peer}", "",
                  "| run | side | cold TTFT ms | returning TTFT ms | returning / cold | wall s |", "| --- | --- | --- | --- | --- | --- |"]
        for run, sides in entry["runs"].items():
            if run == "streams":
                continue
            for side in sides:
                lines.append(f"| {run} | {side['side']} | {side['cold_ttft_ms']:.0f} | {side['returning_ttft_ms']:.0f} | "
                             f"{side['returning_vs_cold']:.2f} | {side['wall_s']:.1f} |")
        lines.append("")
        streams = entry["runs"].get("streams", [])
        if streams:
            peers = {row["streams"]: row["tokens_per_s"] for row in streams if row["side"] == "llama-server"}
            lines += ["Raw speed, N streams on N slots (no cache involved):", "",
                      "| streams | side | tokens/s | TTFT ms | vs llama-server |", "| --- | --- | --- | --- | --- |"]
            for row in streams:
                ratio = f"{row['tokens_per_s'] / peers[row['streams']]:.2f}x" if row["streams"] in peers else "—"
                lines.append(f"| {row['streams']} | {row['side']} | {row['tokens_per_s']:.1f} | {row['ttft_ms']:.0f} | {ratio} |")
            lines.append("")
    return lines


def noisy_section(data: dict[str, Any]) -> list[str]:
    lines = [f"## A busy box: {data['model']} with 0, 1 and 2 cores busy (bench_noisy)", "",
             f"{data['tokens']} tokens at temperature 0, median of {data['runs']} runs, {data['threads']} threads on {data['cpus']} CPUs; "
             "a CPU hog of N busy-loop processes in the servers' session. `hal0`: shipped settings (adaptive_threads); "
             "`hal0 fixed`: every decode on all threads; llama-server: the same threads, its --poll and --prio defaults.", "",
             "| busy cores | side | s (p50) | s (max) | tok/s | vs its quiet speed | load avg (1 min) before -> after |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for step in data["steps"]:
        for name, row in step["sides"].items():
            ratio = f"{row['vs_quiet']:.2f}x" if "vs_quiet" in row else "—"
            lines.append(f"| {step['busy_cores']} | {name} | {row['seconds_p50']:.2f} | {row['seconds_max']:.2f} | {row['tokens_per_s']:.1f} | "
                         f"{ratio} | {step['loadavg_before'][0]:.1f} -> {step['loadavg_after'][0]:.1f} |")
    names = list(data["steps"][0]["sides"]) if data["steps"] else []
    _bar(RESULTS / "noisy.png", f"{data['model']}: generated tokens/s with busy cores", [f"{step['busy_cores']} busy" for step in data["steps"]],
         {name: [step["sides"][name]["tokens_per_s"] for step in data["steps"]] for name in names}, "tokens/s (median)")
    return [*lines, "", "![noisy](noisy.png)", ""]


def main() -> Path:
    lines = ["# hal0 benchmark report", "", "Every number is measured in one run against a baseline in the same run. "
             "The machine is shared: compare ratios, not absolute speeds.", ""]
    peers = _load("bench_peers")
    if peers:
        lines += peers_section(peers)
    load = _load("bench_load")
    if load:
        lines += load_section(load)
    agents = _load("bench_agents")
    if agents:
        lines += agents_section(agents)
    noisy = _load("bench_noisy")
    if noisy:
        lines += noisy_section(noisy)
    for extra in ("bench_batching", "bench_memory", "bench_lifecycle", "bench_gpu", "provisioning"):
        data = _load(extra)
        if data:
            lines += [f"## {extra}", "", "```json", json.dumps(data, indent=2)[:4000], "```", ""]
    out = RESULTS / "REPORT.md"
    out.write_text("\n".join(lines))
    print(out)
    return out


if __name__ == "__main__":
    main()
