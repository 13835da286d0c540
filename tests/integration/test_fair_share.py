"""Fair share over real HTTP and real llama.cpp: one slot, agent A queues 6 generations, then B
sends 1; B is served within the first 3, not 7th (the issue's test)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server

NO_EOS = {"2": -100, "4": -100, **{str(5 + byte): -100 for byte in range(128, 256)}}
# The first generation is long (seconds, with a context big enough for it), so the rest queue behind it
# while it runs; the others are short.
LONG, SHORT, N_CTX = 7000, 16, 8192


def queue_depth(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(r'^hal0_queue_depth\{model="tiny"\} ([0-9.]+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def wait_for_depth(server: Server, depth: int) -> None:
    deadline = time.monotonic() + 30
    while queue_depth(server) < depth:
        assert time.monotonic() < deadline, f"the queue never reached {depth}"
        time.sleep(0.01)


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_one_agent_queueing_many_cannot_starve_another(start_server: Callable[..., Server], tiny_model: Path, path: str) -> None:
    server = start_server(models=[{"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": N_CTX, "n_threads": 1}])

    def body(max_tokens: int) -> dict:
        common = {"max_tokens": max_tokens, "temperature": 0, "logit_bias": NO_EOS}
        return {"prompt": "the", **common} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "the"}], **common}

    finished: list[str] = []
    lock = threading.Lock()
    statuses: list[int] = []

    def send(agent: str, index: int) -> None:
        tokens = LONG if (agent, index) == ("agent-a", 0) else SHORT
        response = httpx.post(f"{server.url}{path}", json=body(tokens), headers={"X-hal0-Agent": agent}, timeout=120)
        with lock:
            statuses.append(response.status_code)
            finished.append(f"{agent}{index}")

    threads = []
    for index in range(6):
        threads.append(threading.Thread(target=send, args=("agent-a", index)))
        threads[-1].start()
        wait_for_depth(server, index)  # a0 runs, a1..a5 wait in arrival order
    threads.append(threading.Thread(target=send, args=("agent-b", 0)))
    threads[-1].start()
    wait_for_depth(server, 6)
    for thread in threads:
        thread.join(300)
    assert statuses == [200] * 7, statuses
    assert finished.index("agent-b0") <= 2, finished  # FIFO would make it 7th
