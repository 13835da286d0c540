"""The agent workload of issue 16: returning agents and the prompt cache, hal0 vs llama.cpp's llama-server.

N agents at once, each with a system prompt of its own (~1.1k tokens), T turns each with the history
growing by a user line and the reply, R-token greedy replies, raw /v1/completions (the same text on
both sides), streamed so that time to first token is seen. Each agent runs its turns one after the
other; the agents run together. Reported per side: cold (first-turn) and returning-turn TTFT medians,
their ratio, and the wall time of the whole workload.

Runs:
- `agents`: the issue's workload, N agents on S slots (default 6 on 4), hal0 (its default
  `prompt_cache_scope: agent`) vs hal0 with `prompt_cache_scope: shared` vs llama-server.
- `common_prefix`: what the agent scope costs where it bites: the same agents through
  /v1/chat/completions, with one system message (~system tokens / 2) that all of them send, as a
  framework's instructions are, and each persona opening its agent's first user message. hal0 agent scope, hal0 shared, and hal0 agent
  scope with the preamble as the persona's configured system prompt (public, so shared again).
- `beyond_slots`: more agents than slots (default 2 x S), hal0 with the RAM prompt cache and without
  it (`prompt_cache_mib: 0`), and llama-server (its --cache-ram default).
- `chat`: the issue's workload through hal0's /v1/chat/completions (the template applied by hal0).
- `streams`: raw speed with no cache involved: 1 stream (hal0's shipped parallel: 1), 4 streams on 4 slots
  and 8 on 8, hal0 and llama-server up together, rounds interleaved; tokens/s of all streams and TTFT.

llama-server comes from image/llama-server (built once from the llama-cpp-python sdist hal0 runs; slow),
found through --llama-server, $HAL0_LLAMA_SERVER or its cache; without it that side is skipped, saying so.
Models: the tiny generated one, and gemma3-270m when installed. Writes results/bench_agents.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.bench.common import GEMMA, ROOT, SETTLE_S, Process, start_hal0, wait_ready, write_result

SERVER_CACHE = Path(os.environ.get("HAL0_SERVER_CACHE", "/var/cache/hal0/llama-server"))
RUNS = ("agents", "common_prefix", "beyond_slots", "chat", "streams")
WORDS = ("archive", "beacon", "copper", "delta", "ember", "falcon", "garnet", "harbor", "island", "juniper", "kernel",
         "lantern", "meadow", "nickel", "orbit", "pepper", "quartz", "river", "signal", "timber", "umber", "velvet")


def find_llama_server(explicit: str | None) -> Path | None:
    """The llama-server binary: --llama-server, $HAL0_LLAMA_SERVER, or image/llama-server's cache."""
    for candidate in (explicit, os.environ.get("HAL0_LLAMA_SERVER")):
        if candidate:
            return Path(candidate) if Path(candidate).is_file() else None
    built = sorted(SERVER_CACHE.glob("llama-server-*-cpu/llama-server"))
    return built[-1] if built else None


def start_llama_server(binary: Path, model: Path, port: int, threads: int, slots: int, slot_ctx: int, workdir: Path) -> Process:
    argv = [str(binary), "--model", str(model), "--host", "127.0.0.1", "--port", str(port), "--ctx-size", str(slots * slot_ctx),
            "--parallel", str(slots), "--threads", str(threads), "--threads-batch", str(threads), "--alias", "bench", "--no-webui"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=(workdir / f"llama-server-{port}.log").open("wb"))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, "/health", process)
    return Process("llama-server", url, process)


def system_prompt(agent: int, tokens: int, count: Any) -> str:
    """A persona of about `tokens` tokens, different for each agent from its first words on."""
    words = [f"You are agent {agent}, codename {WORDS[agent % len(WORDS)]}-{agent}."]
    step = 0
    while count(" ".join(words)) < tokens:
        words.append(f"Rule {step}: keep the {WORDS[(agent + step) % len(WORDS)]} log of agent {agent} in order.")
        step += 1
    return " ".join(words)


@dataclass
class Turn:
    agent: int
    turn: int
    ttft_s: float
    total_s: float
    tokens: int


@dataclass
class Workload:
    agents: int
    turns: int
    reply_tokens: int
    system_tokens: int
    results: list[Turn] = field(default_factory=list)


def _stream(client: httpx.Client, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[str, float, float, int]:
    started = time.perf_counter()
    first: float | None = None
    text, tokens = [], 0
    with client.stream("POST", path, json={**body, "stream": True}, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choice = json.loads(line[6:])["choices"]
            if not choice:
                continue
            piece = choice[0].get("text") or (choice[0].get("delta") or {}).get("content")
            if piece:
                if first is None:
                    first = time.perf_counter() - started
                text.append(piece)
                tokens += 1
    total = time.perf_counter() - started
    return "".join(text), first if first is not None else total, total, tokens


def run_workload(url: str, model: str, personas: list[str], turns: int, reply_tokens: int, chat: bool, agent_header: bool,
                 lead: str | None = None) -> tuple[list[Turn], float]:
    """Every agent's turns, agents concurrently; returns the turns and the wall time. With a `lead`
    (chat only), the system message is the lead (none when it is empty: the persona's system prompt
    stands in for it) and each persona opens its agent's first user message, so that every template
    reads the same messages (llama-cpp-python's chatml keeps one system message only)."""
    results: list[Turn] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def agent_loop(agent: int) -> None:
        headers = {"X-hal0-Agent": f"agent-{agent}"} if agent_header else {}
        history = personas[agent]
        messages: list[dict[str, str]] = [{"role": "system", "content": personas[agent]}]
        if lead is not None:
            messages = [{"role": "system", "content": lead}] if lead else []
        try:
            # A connection per request, on both sides: llama-server's HTTP library drops idle keep-alive
            # connections at times, just as a client reuses one ("Server disconnected").
            with httpx.Client(base_url=url, timeout=600, limits=httpx.Limits(max_keepalive_connections=0)) as client:
                for turn in range(turns):
                    question = f"Question {turn}: what is the next {WORDS[(agent + turn) % len(WORDS)]} entry?"
                    common = {"model": model, "max_tokens": reply_tokens, "temperature": 0, "seed": 1}
                    if chat:
                        opening = f"{personas[agent]}\n\n" if lead is not None and turn == 0 else ""
                        messages.append({"role": "user", "content": opening + question})
                        reply, ttft, total, tokens = _stream(client, "/v1/chat/completions", {**common, "messages": messages}, headers)
                        messages.append({"role": "assistant", "content": reply})
                    else:
                        history += f"\nUser: {question}\nAssistant:"
                        reply, ttft, total, tokens = _stream(client, "/v1/completions", {**common, "prompt": history}, headers)
                        history += reply
                    with lock:
                        results.append(Turn(agent, turn, ttft, total, tokens))
        except BaseException as error:  # noqa: BLE001 - reported after the join
            errors.append(error)

    started = time.perf_counter()
    threads = [threading.Thread(target=agent_loop, args=(agent,)) for agent in range(len(personas))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    return results, wall


def summarise(turns: list[Turn], wall: float) -> dict[str, Any]:
    cold = [turn.ttft_s for turn in turns if turn.turn == 0]
    returning = [turn.ttft_s for turn in turns if turn.turn > 0]
    cold_p50 = statistics.median(cold)
    returning_p50 = statistics.median(returning) if returning else float("nan")
    # After the first token: how fast replies stream while the other agents share the machine.
    per_token = [(turn.total_s - turn.ttft_s) / (turn.tokens - 1) for turn in turns if turn.tokens > 1]
    return {"cold_ttft_ms": cold_p50 * 1000, "returning_ttft_ms": returning_p50 * 1000,
            "returning_vs_cold": returning_p50 / cold_p50, "wall_s": wall, "requests": len(turns),
            "generated_tokens": sum(turn.tokens for turn in turns),
            "inter_token_ms": statistics.median(per_token) * 1000 if per_token else float("nan")}


def _hal0_metrics(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    wanted = ("hal0_prompt_tokens_cached_total", "hal0_prompt_tokens_computed_total", "hal0_prompt_cache_hits_total",
              "hal0_prompt_cache_misses_total", "hal0_prompt_cache_ram_bytes")
    values: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0]
        if name in wanted:
            values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return values


def bench_side(side: str, start: Any, personas: list[str], args: argparse.Namespace, chat: bool = False, lead: str | None = None) -> dict[str, Any]:
    process = start()
    try:
        # Warm-up on text no agent sends, so no side starts with a cold process or a cached persona.
        with httpx.Client(base_url=process.url, timeout=600) as client:
            client.post("/v1/completions", json={"model": "bench", "prompt": "warm up " * 8, "max_tokens": 4}).raise_for_status()
        time.sleep(SETTLE_S)
        turns, wall = run_workload(process.url, "bench", personas, args.turns, args.reply_tokens, chat, agent_header=process.name == "hal0", lead=lead)
        result = {"side": side, **summarise(turns, wall)}
        if process.name == "hal0":
            result["metrics"] = _hal0_metrics(process.url)
        return result
    finally:
        process.stop()
        time.sleep(SETTLE_S)


def run_streams(url: str, streams: int, tokens: int, round_: int) -> tuple[float, float]:
    """`streams` concurrent streaming completions of `tokens` tokens, each prompt new from its first
    word (no cache helps either side); returns the generated tokens/s of them all and the median TTFT."""
    results: list[tuple[float, float, int]] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        prompt = f"{WORDS[(index + round_) % len(WORDS)]} {round_}-{index}: the history of the printing press begins"
        body = {"model": "bench", "prompt": prompt, "max_tokens": tokens, "temperature": 0, "seed": 1}  # greedy: both sides write the same tokens
        with httpx.Client(base_url=url, timeout=600, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            _, ttft, total, count = _stream(client, "/v1/completions", body, {})
        with lock:
            results.append((ttft, total, count))

    started = time.perf_counter()
    threads = [threading.Thread(target=one, args=(index,)) for index in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return sum(count for _, _, count in results) / wall, statistics.median(ttft for ttft, _, _ in results)


def bench_streams(sides: list[tuple[str, Any]], streams: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Raw speed, no cache involved: both sides up at once, rounds interleaved so drift hits them alike."""
    processes = [(name, start()) for name, start in sides]
    try:
        for _, process in processes:
            with httpx.Client(base_url=process.url, timeout=600) as client:
                client.post("/v1/completions", json={"model": "bench", "prompt": "warm up " * 8, "max_tokens": 4}).raise_for_status()
        time.sleep(SETTLE_S)
        measured: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in processes}
        for round_ in range(args.stream_rounds):
            for name, process in processes:
                measured[name].append(run_streams(process.url, streams, args.stream_tokens, round_))
        return [{"side": name, "streams": streams, "tokens_per_s": statistics.median(rate for rate, _ in values),
                 "ttft_ms": statistics.median(ttft for _, ttft in values) * 1000} for name, values in measured.items()]
    finally:
        for _, process in processes:
            process.stop()
        time.sleep(SETTLE_S)


def bench_model(model: Path, label: str, server: Path | None, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from llama_cpp import Llama

    vocab = Llama(model_path=str(model), vocab_only=True, verbose=False)

    def count(text: str) -> int:
        return len(vocab.tokenize(text.encode(), add_bos=True))

    def hal0(port: int, slots: int, cache_mib: int | None = None, scope: str | None = None, system_prompt: str | None = None,
             chat_format: str | None = None) -> Any:
        entry: dict[str, Any] = {"id": "bench", "path": str(model), "default": True, "n_ctx": slots * args.slot_ctx, "parallel": slots,
                                 "n_threads": args.threads, "n_threads_batch": args.threads}
        if cache_mib is not None:
            entry["prompt_cache_mib"] = cache_mib
        if scope is not None:
            entry["prompt_cache_scope"] = scope
        if chat_format is not None:
            entry["chat_format"] = chat_format
        sections: dict[str, Any] = {}
        if system_prompt is not None:
            # Every bench agent (agent-N) is unknown to the config, so it gets the default agent's persona.
            sections["agents"] = {"approvals": {"path": str(workdir / f"approvals-{port}.db")},
                                  "personas": [{"id": "anonymous", "system_prompt": system_prompt}]}
        return lambda: start_hal0(workdir, port, [entry], server={"queue_limit": 64}, **sections)

    def peer(port: int, slots: int) -> Any:
        assert server is not None
        return lambda: start_llama_server(server, model, port, args.threads, slots, args.slot_ctx, workdir)

    runs: dict[str, list[dict[str, Any]]] = {run: [] for run in RUNS}
    personas = [system_prompt(agent, args.system_tokens, count) for agent in range(args.agents)]
    many = [system_prompt(agent, args.system_tokens, count) for agent in range(args.beyond_factor * args.slots)]
    if "agents" in args.runs:
        runs["agents"].append(bench_side("hal0", hal0(18541, args.slots), personas, args))
        runs["agents"].append(bench_side("hal0 prompt_cache_scope: shared", hal0(18547, args.slots, scope="shared"), personas, args))
        if server is not None:
            runs["agents"].append(bench_side("llama-server", peer(18542, args.slots), personas, args))
    if "common_prefix" in args.runs:
        preamble = "Shared instructions for every agent of the team. " + system_prompt(len(WORDS) - 1, args.system_tokens // 2, count)
        # The preamble is the system message (the clients', or the persona's that hal0 puts first): all
        # three sides send the model the same text. Gemma in its own format, as config/hal0.yaml ships it.
        gemma = "gemma" if str(vocab.metadata.get("general.architecture", "")).startswith("gemma") else None
        runs["common_prefix"].append(bench_side("hal0 (agent scope)", hal0(18556, args.slots, chat_format=gemma), personas, args,
                                                chat=True, lead=preamble))
        runs["common_prefix"].append(bench_side("hal0 prompt_cache_scope: shared", hal0(18557, args.slots, scope="shared", chat_format=gemma),
                                                personas, args, chat=True, lead=preamble))
        runs["common_prefix"].append(bench_side("hal0 (agent scope), preamble as the persona's system_prompt",
                                                hal0(18558, args.slots, system_prompt=preamble, chat_format=gemma), personas, args, chat=True, lead=""))
    if "beyond_slots" in args.runs:
        runs["beyond_slots"].append(bench_side("hal0", hal0(18543, args.slots), many, args))
        runs["beyond_slots"].append(bench_side("hal0 prompt_cache_mib: 0", hal0(18544, args.slots, cache_mib=0), many, args))
        if server is not None:
            runs["beyond_slots"].append(bench_side("llama-server", peer(18545, args.slots), many, args))
    if "chat" in args.runs:
        runs["chat"].append(bench_side("hal0 chat", hal0(18546, args.slots), personas, args, chat=True))
    if "streams" in args.runs:
        # 1 stream on hal0's shipped single-sequence engine (parallel: 1), then N streams on N slots.
        for port, slots in ((18550, 1), (18552, 4), (18554, 8)):
            sides = [("hal0", hal0(port, slots))] + ([("llama-server", peer(port + 1, slots))] if server is not None else [])
            runs["streams"].extend(bench_streams(sides, slots, args))
    vocab.close()
    return {"model": label, "path": str(model), "threads": args.threads, "slots": args.slots, "slot_ctx": args.slot_ctx,
            "agents": args.agents, "beyond_agents": len(many), "turns": args.turns, "reply_tokens": args.reply_tokens,
            "system_tokens": args.system_tokens, "llama_server": str(server) if server else None, "runs": runs}


def print_model(entry: dict[str, Any]) -> None:
    print(f"\n{entry['model']}: {entry['agents']} agents ({entry['beyond_agents']} beyond the slots) on {entry['slots']} slots x "
          f"{entry['slot_ctx']}, {entry['turns']} turns, {entry['reply_tokens']}-token replies, ~{entry['system_tokens']}-token personas")
    print("| run | side | cold TTFT ms | returning TTFT ms | returning/cold | inter-token ms | wall s | cached/computed tokens |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for run, sides in entry["runs"].items():
        if run == "streams":
            continue
        for side in sides:
            metrics = side.get("metrics", {})
            cached = f"{metrics.get('hal0_prompt_tokens_cached_total', 0):.0f}/{metrics.get('hal0_prompt_tokens_computed_total', 0):.0f}" if metrics else "—"
            print(f"| {run} | {side['side']} | {side['cold_ttft_ms']:.0f} | {side['returning_ttft_ms']:.0f} | "
                  f"{side['returning_vs_cold']:.2f} | {side['inter_token_ms']:.0f} | {side['wall_s']:.1f} | {cached} |")


def print_streams(entry: dict[str, Any]) -> None:
    rows = entry["runs"].get("streams", [])
    if not rows:
        return
    print(f"\n{entry['model']}: raw speed, N concurrent streams on N slots, tokens/s of all streams (median of rounds)")
    print("| streams | side | tokens/s | TTFT ms | vs llama-server |")
    print("| --- | --- | --- | --- | --- |")
    peers = {row["streams"]: row["tokens_per_s"] for row in rows if row["side"] == "llama-server"}
    for row in rows:
        ratio = f"{row['tokens_per_s'] / peers[row['streams']]:.2f}x" if row["streams"] in peers else "—"
        print(f"| {row['streams']} | {row['side']} | {row['tokens_per_s']:.1f} | {row['ttft_ms']:.0f} | {ratio} |")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=6)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--slot-ctx", type=int, default=2048)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--reply-tokens", type=int, default=24)
    parser.add_argument("--system-tokens", type=int, default=1100)
    parser.add_argument("--beyond-factor", type=int, default=2, help="agents per slot in the beyond_slots run")
    parser.add_argument("--stream-tokens", type=int, default=64, help="tokens per request in the streams run")
    parser.add_argument("--stream-rounds", type=int, default=3, help="rounds per side in the streams run")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--model", type=Path, help="only this GGUF (default: the tiny model, and gemma3-270m when installed)")
    parser.add_argument("--llama-server", help="the llama-server binary (default: $HAL0_LLAMA_SERVER or image/llama-server's cache)")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS), help="which runs (default: all)")
    args = parser.parse_args(argv)
    from hal0.inference.tiny_model import write_test_model

    server = find_llama_server(args.llama_server)
    if server is None:
        print(f"llama-server not found (build it with {ROOT / 'image' / 'llama-server'}, slow): the peer side is skipped", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="hal0-bench-agents-"))
    if args.model is not None:
        models = [(args.model, args.model.stem)]
    else:
        models = [(write_test_model(workdir / "tiny.gguf", n_ctx=args.slot_ctx), "tiny")]
        gemma = next((path for path in GEMMA if path.is_file()), None)
        if gemma is not None:
            models.append((gemma, "gemma3-270m"))
    results = {"models": [bench_model(path, label, server, args, workdir) for path, label in models]}
    out = write_result("bench_agents", results)
    for entry in results["models"]:
        print_model(entry)
        print_streams(entry)
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
