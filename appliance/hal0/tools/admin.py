"""Admin tools: what the box is doing, and the privileged actions that change it."""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import Field

from hal0.agents.approvals import State
from hal0.inference import LoadState, UnknownModel
from hal0.tools.spec import ToolCall, ToolFailedError, ToolSpec

ModelArg = Annotated[str, Field(description="Model id, as listed by list_models.")]
StateArg = Annotated[State | None, Field(description="Only approvals in this state, e.g. pending.")]
LimitArg = Annotated[int, Field(description="At most this many, pending first, then newest (1 to 1000).", ge=1, le=1000)]


def _models(call: ToolCall) -> list[dict[str, Any]]:
    return [
        {
            "id": runtime.id,
            "state": runtime.state.value,
            "default": runtime.id == call.services.models.default_id,
            "n_gpu_layers": runtime.config.n_gpu_layers,
            "n_ctx": runtime.config.n_ctx,
            "queue_depth": runtime.waiting,
            "busy": runtime.busy,
            **({"error": runtime.error} if runtime.error else {}),
        }
        for runtime in call.services.models
    ]


async def status(call: ToolCall) -> dict[str, Any]:
    services = call.services
    server = services.config.server
    models = _models(call)
    return {
        "version": services.version,
        "uptime_s": round(time.time() - services.started_at, 1),
        "bind": f"{server.bind}:{server.port}",
        "state": services.models.state,
        "models": models,
        "memory": {"enabled": services.memory.enabled},
        "queue_depth": sum(model["queue_depth"] for model in models),
        "agent": call.agent,
    }


async def list_models(call: ToolCall) -> dict[str, Any]:
    return {"models": _models(call)}


async def get_config(call: ToolCall) -> dict[str, Any]:
    loaded = call.services.loaded
    return {"path": loaded.path, "config": loaded.config.model_dump(mode="json")}


async def list_approvals(call: ToolCall, state: StateArg = None, limit: LimitArg = 100) -> dict[str, Any]:
    """The caller's own approvals, as GET /api/approvals answers the same agent. On the event loop,
    like the REST route: the store's one connection is not read from several threads at once."""
    store = call.services.approvals
    items = store.list(state=state, agent=call.agent, limit=limit)
    return {"approvals": [item.as_dict() for item in items], "pending": store.pending_count(agent=call.agent)}


def _runtime(call: ToolCall, model: str):  # noqa: ANN202 - a ModelRuntime
    try:
        return call.services.models.get(model)
    except UnknownModel as error:
        raise ToolFailedError(str(error)) from None


async def load_model(call: ToolCall, model: ModelArg) -> dict[str, Any]:
    runtime = _runtime(call, model)
    if runtime.state in (LoadState.READY, LoadState.LOADING):
        return {"model": runtime.id, "state": runtime.state.value, "changed": False}
    await runtime.load()
    if runtime.state is LoadState.FAILED:
        raise ToolFailedError(f"model {runtime.id!r} failed to load: {runtime.error}")
    return {"model": runtime.id, "state": runtime.state.value, "changed": True}


async def unload_model(call: ToolCall, model: ModelArg) -> dict[str, Any]:
    runtime = _runtime(call, model)
    if runtime.state is not LoadState.READY:
        return {"model": runtime.id, "state": runtime.state.value, "changed": False}
    await runtime.unload()
    return {"model": runtime.id, "state": runtime.state.value, "changed": True}


async def reload_config(call: ToolCall) -> dict[str, Any]:
    result = call.services.reload()
    if not result.ok:
        raise ToolFailedError(result.message)
    return {"reloaded": True, "message": result.message, "restart_needed": result.restart_needed}


TOOLS = (
    ToolSpec("admin", "status", "Server status",
             "Version, uptime, bind address, models with load state and GPU layers, memory on/off, queue depth.",
             status, read_only=True, destructive=False, idempotent=True),
    ToolSpec("admin", "list_models", "List models", "Configured models with their load state and settings.",
             list_models, read_only=True, destructive=False, idempotent=True),
    ToolSpec("admin", "get_config", "Effective config", "The effective configuration (read-only).",
             get_config, read_only=True, destructive=False, idempotent=True),
    ToolSpec("admin", "list_approvals", "List approvals",
             "Your approvals (pending first, then newest), optionally in one state; a human decides them.",
             list_approvals, read_only=True, destructive=False, idempotent=True),
    ToolSpec("admin", "load_model", "Load a model", "Load a configured model into memory (no-op when loaded).",
             load_model, read_only=False, destructive=False, idempotent=True, privileged=True),
    ToolSpec("admin", "unload_model", "Unload a model",
             "Unload a model; requests for it fail until it is loaded again.",
             unload_model, read_only=False, destructive=True, idempotent=True, privileged=True),
    ToolSpec("admin", "reload_config", "Reload config",
             "Re-read and validate the config file; policy changes apply at once, a bad file is refused.",
             reload_config, read_only=False, destructive=False, idempotent=True, privileged=True),
)
