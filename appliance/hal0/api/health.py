"""GET /health: 503 while loading or after a failed load (with the reason), 200 when serving."""

from __future__ import annotations

import socket
import time

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hal0.api.generation import services_of


async def health(request: Request) -> JSONResponse:
    services = services_of(request)
    state = services.models.state
    models = [
        {"id": runtime.id, "state": runtime.state.value, **({"error": runtime.error} if runtime.error else {})}
        for runtime in services.models
    ]
    body: dict[str, object] = {
        "status": state,
        "version": services.version,
        # Who this box is in a fleet: behind a load-balancing proxy, these spot a straggler.
        "hostname": socket.gethostname(),
        "config_digest": services.loaded.digest,
        "uptime_s": round(time.time() - services.started_at, 1),
        "models": models,
    }
    if state == "failed":
        body["reason"] = "; ".join(f"{model['id']}: {model['error']}" for model in models if "error" in model)
    return JSONResponse(body, status_code=200 if state == "ok" else 503)


routes = [Route("/health", health, methods=["GET"])]
