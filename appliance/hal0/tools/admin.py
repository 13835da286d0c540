"""Admin tools: what the box is doing, and the privileged actions that change it."""

from __future__ import annotations

import time
from typing import Annotated, Any

from pydantic import Field

from hal0.agents.approvals import State
from hal0.inference import ModelUnavailable, UnknownModel
from hal0.tools.spec import ToolContext, ToolFailedError, ToolSpec

ModelArg = Annotated[str, Field(description="Model id, as listed by list_models.")]
StateArg = Annotated[State | None, Field(description="Only approvals in this state, e.g. pending.")]
LimitArg = Annotated[int, Field(description="At most this many, pending first, then newest (1 to 1000).", ge=1, le=1000)]


def _models(call: ToolContext) -> list[dict[str, Any]]:
    lifecycle = call.services.lifecycle
    rows = []
    for model in lifecycle.statuses():
        config = lifecycle.runtime(model.id).config
        rows.append({
            "id": model.id,
            "default": model.id == lifecycle.default_id,
            "n_gpu_layers": config.n_gpu_layers,
            "n_ctx": config.n_ctx,
            "queue_depth": model.waiting,
            "busy": model.running > 0,
            **model.as_json(),
        })
    return rows


async def status(call: ToolContext) -> dict[str, Any]:
    services = call.services
    server = services.config.server
    models = _models(call)
    return {
        "version": services.version,
        "uptime_s": round(time.time() - services.started_at, 1),
        "bind": f"{server.bind}:{server.port}",
        "state": services.lifecycle.health,
        "models": models,
        "memory": {"enabled": services.memory.enabled},
        "queue_depth": sum(model["queue_depth"] for model in models),
        "agent": call.agent,
    }


async def list_models(call: ToolContext) -> dict[str, Any]:
    return {"models": _models(call)}


async def get_config(call: ToolContext) -> dict[str, Any]:
    loaded = call.services.loaded
    return {"path": loaded.path, "config": loaded.config.model_dump(mode="json")}


async def list_approvals(call: ToolContext, state: StateArg = None, limit: LimitArg = 100) -> dict[str, Any]:
    """The caller's own approvals, as GET /api/approvals answers the same agent. On the event loop,
    like the REST route: the store's one connection is not read from several threads at once."""
    store = call.services.approvals
    items = store.list(state=state, agent=call.agent, limit=limit)
    return {"approvals": [item.as_dict() for item in items], "pending": store.pending_count(agent=call.agent)}


def _known(call: ToolContext, model: object) -> str:
    """The model's id, or an immediate error naming the models there are (the lifecycle's own lookup)."""
    if not isinstance(model, str) or not model:
        raise ToolFailedError("model must name a configured model (see list_models)")
    try:
        return call.services.lifecycle.runtime(model).id
    except UnknownModel as error:
        raise ToolFailedError(str(error)) from None


def _known_model(call: ToolContext, arguments: dict[str, Any]) -> None:
    # Checked before the policy: an unknown model is an immediate error, never a queued approval.
    _known(call, arguments.get("model"))


async def load_model(call: ToolContext, model: ModelArg) -> dict[str, Any]:
    lifecycle = call.services.lifecycle
    try:
        # The same lifecycle as a request's load: it evicts under server.max_loaded_models and shares a
        # load already in progress.
        status, changed = await lifecycle.load(_known(call, model), timeout=call.services.config.server.request_timeout_s)
    except ModelUnavailable as error:
        raise ToolFailedError(str(error)) from None
    return {"model": status.id, "changed": changed, **status.as_json()}


async def unload_model(call: ToolContext, model: ModelArg) -> dict[str, Any]:
    status, changed = await call.services.lifecycle.unload(_known(call, model))
    return {"model": status.id, "changed": changed, **status.as_json()}


async def reload_config(call: ToolContext) -> dict[str, Any]:
    result = await call.services.reload_off_loop()
    if not result.ok:
        raise ToolFailedError(result.message)
    return {"reloaded": True, "message": result.message, "restart_needed": result.restart_needed}


TOOLS = (
    ToolSpec("admin", "status", "Server status",
             "Version, uptime, bind address, models with load state, idle deadline and GPU layers, memory on/off, queue depth.",
             status, read_only=True, destructive=False, idempotent=True),
    ToolSpec("admin", "list_models", "List models",
             "Configured models with their load state (unloaded, loading, ready, failed), since when, idle deadline and settings.",
             list_models, read_only=True, destructive=False, idempotent=True),
    ToolSpec("admin", "get_config", "Effective config", "The effective configuration (read-only).",
             get_config, read_only=True, destructive=False, idempotent=True),
    ToolSpec("admin", "list_approvals", "List approvals",
             "Your approvals (pending first, then newest), optionally in one state; a human decides them.",
             list_approvals, read_only=True, destructive=False, idempotent=True),
    ToolSpec("admin", "load_model", "Load a model", "Load a configured model into memory (no-op when loaded); under server.max_loaded_models it first "
             "unloads the least recently used idle, unpinned model.",
             load_model, read_only=False, destructive=False, idempotent=True, privileged=True, check=_known_model),
    ToolSpec("admin", "unload_model", "Unload a model",
             "Unload a model once its running requests end; the next request for it loads it again.",
             unload_model, read_only=False, destructive=True, idempotent=True, privileged=True, check=_known_model),
    ToolSpec("admin", "reload_config", "Reload config",
             "Re-read and validate the config file; policy changes apply at once, a bad file is refused.",
             reload_config, read_only=False, destructive=False, idempotent=True, privileged=True),
)
