"""GET /health: 503 while the start-up models load or after one failed (with the reason), 200 when serving.

On-demand models are listed with their state but never make the box unhealthy: a failed on-demand load is a
503 for the requests that wanted it, not for the whole box."""

from __future__ import annotations

import socket
import time

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hal0.api.generation import services_of


async def health(request: Request) -> JSONResponse:
    services = services_of(request)
    state = services.lifecycle.health
    statuses = services.lifecycle.statuses()
    # Kept short (a fleet's proxy polls this): the full lifecycle view is /v1/models.
    models = [{"id": model.id, "state": model.state, "load": model.load, **({"error": model.error} if model.error else {})}
              for model in statuses]
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
        body["reason"] = "; ".join(f"{model.id}: {model.error}" for model in statuses if model.error and model.load == "startup")
    return JSONResponse(body, status_code=200 if state == "ok" else 503)


routes = [Route("/health", health, methods=["GET"])]
