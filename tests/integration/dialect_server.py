"""One `hal0 serve` on the tiny model per test module, for the dialect suites (the Responses and
Messages APIs): each test sends a few requests, so starting a server per test would dominate."""

from __future__ import annotations

import os
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from hal0.inference.tiny_model import write_test_model

from tests.conftest import Server, free_port, tiny_config

# A persona whose replies stop at the first ASCII letter, digit or space: the tiny model's random
# weights never end a turn by themselves, and an agent runner needs a reply that completes.
STOPPING_AGENT = "stops-early"
LIMITED_AGENT = "limited"
PROMPTED_AGENT = "prompted"
SYSTEM_PROMPT = "You are hal0's test persona. " * 8


def personas() -> list[dict[str, Any]]:
    return [
        {"id": STOPPING_AGENT, "params": {"stop": list(string.ascii_letters + string.digits + " ")}},
        {"id": LIMITED_AGENT, "limits": {"max_tokens": 4}},
        {"id": PROMPTED_AGENT, "system_prompt": SYSTEM_PROMPT},
    ]


def start_dialect_server(root: Path) -> Server:
    port = free_port()
    config = tiny_config(write_test_model(root / "tiny.gguf"), port,
                         agents={"personas": personas(), "approvals": {"path": str(root / "approvals.db")}})
    path = root / "hal0.yaml"
    path.write_text(yaml.safe_dump(config))
    log = root / "hal0.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "hal0.cli", "serve", "--config", str(path)], stdout=out,
                                   stderr=subprocess.STDOUT, env=os.environ.copy())
    server = Server(path, port, process, log)
    try:
        server.wait_healthy()
    except BaseException:
        server.stop()
        raise
    return server
