"""A config reload (SIGHUP) and the dashboard's Config tab read the file off the event loop, and an alias bomb
is refused, against a real `hal0 serve` (issue 20: a bomb on SIGHUP held /health for 12 s, RSS 2.8 GB).

To make "off the loop" observable without timing anything, the config path becomes a FIFO: opening it
blocks until a writer comes. While the reading thread waits there, the server must keep answering.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import Server
from tests.unit.test_config_yaml_bounds import LAUGHS


def _feed(fifo: Path, text: str) -> threading.Thread:
    """Write `text` into the FIFO once the server opens it for reading (a thread: opening blocks until then)."""
    def write() -> None:
        with fifo.open("w") as out:
            out.write(text)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def _as_fifo(server: Server) -> tuple[Path, str]:
    good = server.config_path.read_text()
    server.config_path.unlink()
    os.mkfifo(server.config_path)
    return server.config_path, good


def test_a_reload_blocked_on_the_file_does_not_block_requests(start_server: Callable[..., Server]) -> None:
    server = start_server()
    fifo, good = _as_fifo(server)
    server.reload()  # the reload thread now waits in open() until a writer comes
    for _ in range(5):
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    assert httpx.post(f"{server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=60).status_code == 200
    writer = _feed(fifo, LAUGHS)  # a billion laughs: refused, the running config kept
    writer.join(30)
    assert not writer.is_alive()
    for _ in range(300):  # the refusal is logged once the reload thread has read and checked the file (<= 15 s)
        if "expands to more than" in server.log():
            break
        time.sleep(0.05)
    assert "config reload refused" in server.log() and "expands to more than 20000 values" in server.log()
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    fifo.unlink()
    fifo.write_text(good)


def test_the_config_tab_reads_the_file_off_the_loop(start_server: Callable[..., Server]) -> None:
    server = start_server()
    fifo, good = _as_fifo(server)
    page: list[httpx.Response] = []
    reader = threading.Thread(target=lambda: page.append(httpx.get(f"{server.url}/ui/config", timeout=60)), daemon=True)
    reader.start()
    for _ in range(5):  # the tab's check of the file on disk waits on the FIFO; everything else answers
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
    writer = _feed(fifo, LAUGHS)
    writer.join(30)
    reader.join(60)
    assert page and page[0].status_code == 200
    assert "expands to more than 20000 values" in page[0].text
    fifo.unlink()
    fifo.write_text(good)
