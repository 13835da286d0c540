"""One `hal0 serve` on the tiny model per test module, for the dialect suites (the Responses and
Messages APIs): each test sends a few requests, so starting a server per test would dominate."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from hal0.inference.tiny_model import write_test_model

from tests.conftest import Server, free_port, serve, tiny_config

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
    config = tiny_config(write_test_model(root / "tiny.gguf"), free_port(),
                         agents={"personas": personas(), "approvals": {"path": str(root / "approvals.db")}})
    return serve(root, config)
