"""What the Overview and Models tabs show: the box's identity, posture, and each model's lifecycle state."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from hal0.firstboot import firstboot_error
from hal0.services import Services
from hal0.tools.policy import persona_limits

_ALL_INTERFACES = ("0.0.0.0", "::", "[::]")
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class Posture:
    name: str  # "open LAN" | "proxied" | "one interface"
    detail: str


def posture(bind: str, port: int) -> Posture:
    """The security posture the bind address implies (see the security posture doc: no auth in hal0)."""
    if bind in _ALL_INTERFACES:
        return Posture("open LAN", f"bound to {bind}:{port}: every endpoint, this dashboard included, is open to anything "
                       "that reaches the port; keep it on a trusted LAN or put a reverse proxy with auth in front")
    if bind in _LOOPBACK:
        return Posture("proxied", f"bound to loopback ({bind}:{port}): only this box, e.g. a reverse proxy that "
                       "terminates TLS and authenticates, can reach hal0")
    return Posture("one interface", f"bound to {bind}:{port}: open to anything that reaches that address")


def model_rows(services: Services) -> list[dict[str, Any]]:
    rows = []
    lifecycle = services.lifecycle
    now = time.time()
    for model in lifecycle.statuses():
        config = lifecycle.runtime(model.id).config
        try:
            file_size: int | None = os.stat(config.path).st_size
        except OSError:
            file_size = None
        rows.append({
            "id": model.id,
            "default": model.id == lifecycle.default_id,
            "state": model.state,
            "error": model.error,
            "load": model.load,
            "pinned": model.pinned,
            "keep_alive_s": model.keep_alive_s,
            "since": model.since,
            # How long it has been idle, and how long until keep_alive unloads it (None: busy or never).
            "idle_s": now - model.last_used if model.last_used is not None and model.running + model.waiting == 0 else None,
            "unload_in_s": max(0.0, model.idle_deadline - now) if model.idle_deadline is not None else None,
            "path": config.path,
            "size": file_size,
            "n_ctx": config.n_ctx,
            "n_gpu_layers": config.n_gpu_layers,
            # What llama.cpp did with them (its load log), beside what the config asked: None unless loaded.
            "offload": model.offload.as_json() if model.offload is not None else None,
            "parallel": config.parallel,
            "n_threads": lifecycle.runtime(model.id).n_threads,
            "slots": model.slots,
            "busy_slots": model.running,
            "queue_depth": model.waiting,
            "prompt_cache": services.metrics.prompt_cache(model.id),
            "prompt_cache_mib": config.prompt_cache_mib,
        })
    return rows


def agent_rows(services: Services) -> list[dict[str, Any]]:
    """Per-agent usage in the last minute against the persona's quotas: who is busy, who is limited."""
    agents = services.config.agents
    rows = []
    for row in services.quotas.snapshot():
        label, limits = persona_limits(agents, row["agent"])
        rows.append({**row, "persona": label, "requests_per_minute": limits.requests_per_minute,
                     "tokens_per_minute": limits.tokens_per_minute, "max_concurrent": limits.max_concurrent})
    return rows


def overview(services: Services) -> dict[str, Any]:
    server = services.config.server
    models = model_rows(services)
    pending = services.approvals_if_present()
    return {
        "version": services.version,
        "hostname": socket.gethostname(),
        "config_digest": services.loaded.digest,
        "uptime_s": time.time() - services.started_at,
        "started_at": services.started_at,
        "bind": f"{server.bind}:{server.port}",
        "posture": posture(server.bind, server.port),
        "state": services.lifecycle.health,
        "models": models,
        "queue_depth": sum(model["queue_depth"] for model in models),
        "memory_enabled": services.memory.enabled,
        "pending_approvals": pending.pending_count() if pending is not None else 0,
        "last_reload": services.last_reload,
        "firstboot_error": firstboot_error(),
        "agents": agent_rows(services),
    }
