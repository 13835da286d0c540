"""Dashboard view helpers without a server: posture, formatting, rates, memory namespaces."""

from __future__ import annotations

from pathlib import Path

from hal0.config import load_text
from hal0.dashboard.mcp_view import gate_hosts, gate_origins
from hal0.dashboard.render import duration, size
from hal0.dashboard.status import posture
from hal0.memory import Limits, MemoryStore

CONFIG = "models:\n  - {id: m, path: /m.gguf, default: true}\nmcp:\n  allowed_hosts: [box.lan]\n"


def test_posture_follows_the_bind_address() -> None:
    assert posture("0.0.0.0", 8080).name == "open LAN"
    assert posture("127.0.0.1", 8080).name == "proxied"
    assert posture("192.0.2.5", 8080).name == "one interface"


def test_formatting() -> None:
    assert duration(3725) == "1h 2m 5s"
    assert duration(90061) == "1d 1h 1m"
    assert size(512) == "512 B" and size(3 * 1024 * 1024) == "3.0 MiB"


def test_gate_entries_name_their_source() -> None:
    loaded = load_text(CONFIG, "hal0.yaml", {"HAL0_MCP_ALLOWED_HOSTS": "env.lan"})
    hosts = {entry.value: entry.source for entry in gate_hosts(loaded)}
    assert hosts["box.lan"].startswith("file") and hosts["env.lan"].startswith("env") and hosts["127.0.0.1"].startswith("built in")
    origins = {entry.value: entry.source for entry in gate_origins(loaded)}
    assert origins["http://env.lan"] == "derived from allowed_hosts"
    explicit = load_text(CONFIG + "  allowed_origins: [https://ui.lan]\n", "hal0.yaml", {})
    assert {entry.value: entry.source for entry in gate_origins(explicit)}["https://ui.lan"] == "file (mcp.allowed_origins)"
    off = load_text(CONFIG, "hal0.yaml", {"HAL0_MCP_ALLOWED_HOSTS": "*"})
    assert [entry.source for entry in gate_hosts(off)] == ["env $HAL0_MCP_ALLOWED_HOSTS"]


def test_memory_namespaces_count_per_agent(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "memory.db")
    limits = Limits(max_items=10, max_item_bytes=1000)
    for namespace, text in [("bob", "one"), ("alice", "two"), ("bob", "three")]:
        store.add(namespace, text, limits)
    assert store.namespaces() == [("alice", 1), ("bob", 2)]
    store.close()
