"""REST for memory: /api/memory and /api/memory/{id}, namespace from X-hal0-Agent.

Every route runs the catalogue's memory tool (hal0.tools), so REST and MCP share one
implementation. While memory is disabled each route answers 404 saying how to enable it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hal0.api.body import ascii_int, parse_json
from hal0.api.errors import ApiError, bad_request, refused
from hal0.api.generation import services_of
from hal0.api.identity import agent_of
from hal0.memory import InvalidInputError, ItemNotFoundError, LimitExceededError, MemoryDisabledError
from hal0.tools import ToolContext, tool
from hal0.tools.gated import ToolRefusedError, call_tool
from hal0.tools.memory import NewText, Tags, Text


class AddBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Text  # the remember tool's own argument types: REST's schema says what MCP's does
    tags: Tags = None
    metadata: dict[str, Any] | None = None


class PatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: NewText = None
    tags: Tags = None
    metadata: dict[str, Any] | None = Field(None, description="A new object replaces the metadata; null removes it.")


def _call(request: Request) -> ToolContext:
    services = services_of(request)
    if not services.memory.enabled:
        # Checked before identity: a disabled feature answers the same to everyone.
        raise _disabled()
    return ToolContext(services=services, agent=agent_of(request, services))


def _disabled() -> ApiError:
    return ApiError(404, str(MemoryDisabledError()), code="memory_disabled")


async def _run(name: str, call: ToolContext, arguments: dict[str, Any]) -> dict[str, Any]:
    try:
        return await call_tool(tool(f"memory:{name}"), call, arguments)
    except ToolRefusedError as error:
        raise refused(str(error), error.code, error.retry_after) from None
    except MemoryDisabledError:
        raise _disabled() from None
    except InvalidInputError as error:
        raise bad_request(str(error), param=error.field) from None
    except ItemNotFoundError as error:
        raise ApiError(404, str(error), param="id", code=error.code) from None
    except LimitExceededError as error:
        status = 413 if error.code == "memory_item_too_large" else 422
        raise ApiError(status, str(error), code=error.code) from None


def _int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    number = ascii_int(value)
    if number is None:
        raise bad_request(f"{name} must be a positive integer, got {value!r}", param=name)
    return number


def _limit(request: Request) -> int:
    return services_of(request).config.server.max_body_bytes


async def collection(request: Request) -> JSONResponse:
    call = _call(request)
    if request.method == "POST":
        body = await parse_json(request, AddBody, _limit(request))
        return JSONResponse(await _run("remember", call, body.model_dump()), status_code=201)
    if request.method == "DELETE":
        # Forgetting a whole namespace is destructive: the default policy queues it for a human.
        result = await _run("forget_all", call, {})
        return JSONResponse(result, status_code=202 if result.get("status") == "pending" else 200)
    params = request.query_params
    common = {"tag": params.get("tag") or None, "limit": _int_param(request, "limit"), "cursor": params.get("cursor")}
    query = params.get("q")
    if query:
        return JSONResponse(await _run("recall", call, {"query": query, **common}))
    return JSONResponse(await _run("list", call, common))


async def item(request: Request) -> JSONResponse:
    call = _call(request)
    item_id = request.path_params["id"]
    if request.method == "PATCH":
        body = await parse_json(request, PatchBody, _limit(request))
        if not body.model_fields_set:
            raise bad_request("nothing to change; send text, tags and/or metadata", code="invalid_json")
        # `"metadata": null` clears it, as in a JSON merge patch; absent leaves it as it is.
        clear = "metadata" in body.model_fields_set and body.metadata is None
        return JSONResponse(await _run("update", call, {"id": item_id, **body.model_dump(), "clear_metadata": clear}))
    if request.method == "DELETE":
        result = await _run("forget", call, {"id": item_id})
        return JSONResponse(result, status_code=202 if result.get("status") == "pending" else 200)
    return JSONResponse(await _run("get", call, {"id": item_id}))


routes = [
    Route("/api/memory", collection, methods=["GET", "POST", "DELETE"]),
    Route("/api/memory/{id}", item, methods=["GET", "PATCH", "DELETE"]),
]
