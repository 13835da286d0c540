"""GET /openapi.json: an OpenAPI 3.1 description of the REST API, generated from the pydantic
request models the handlers validate with, so the description cannot drift from the code."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hal0 import __version__
from hal0.api.approvals import DecisionBody
from hal0.api.memory import AddBody, PatchBody
from hal0.api.messages import CountTokensRequest, MessagesRequest
from hal0.api.responses import ResponsesRequest
from hal0.api.schemas import (
    ApplyTemplateRequest,
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    EmbeddingRequest,
    TokenizeRequest,
)

_BODIES: tuple[type[BaseModel], ...] = (ChatCompletionRequest, CompletionRequest, EmbeddingRequest, ResponsesRequest, MessagesRequest,
                                        CountTokensRequest, ApplyTemplateRequest, TokenizeRequest, DetokenizeRequest, AddBody, PatchBody,
                                        DecisionBody)

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
# The Messages API answers errors in Anthropic's shape.
_ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {"type": "object", "required": ["type", "message"],
                  "properties": {"type": {"type": "string"}, "message": {"type": "string"}}},
    },
}
_AGENT = {
    "name": "X-hal0-Agent",
    "in": "header",
    "required": False,
    "description": "The calling agent's id (a label, not authentication).",
    "schema": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"},
}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _responses(ok: int, *errors: int, stream: bool = False, error: str = "Error") -> dict[str, Any]:
    success: dict[str, Any] = {"description": "OK", **_json({"type": "object"})}
    if stream:
        success["content"]["text/event-stream"] = {"schema": {"type": "string"}}
    responses = {str(ok): success}
    for status in errors:
        responses[str(status)] = {"description": "Error", **_json({"$ref": f"#/components/schemas/{error}"})}
    return responses


def _operation(summary: str, ok: int, *errors: int, body: type[BaseModel] | None = None, agent: bool = False,
               params: list[dict[str, Any]] | None = None, stream: bool = False, body_required: bool = True,
               error: str = "Error") -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": _responses(ok, *errors, stream=stream, error=error)}
    parameters = [*([_AGENT] if agent else []), *(params or [])]
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": body_required, **_json(_ref(body))}
    return operation


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _path_id() -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1, "maxLength": 64}}


def build_openapi() -> dict[str, Any]:
    _, schemas = models_json_schema([(model, "validation") for model in _BODIES], ref_template="#/components/schemas/{model}")
    components = {**schemas.get("$defs", {}), "Error": _ERROR, "AnthropicError": _ANTHROPIC_ERROR}
    states = {"type": "string", "enum": ["pending", "approved", "executing", "executed", "failed", "denied", "expired"]}
    limit = {"type": "integer", "minimum": 1, "maximum": 1000}
    paths = {
        "/health": {"get": _operation("Readiness: 200 when serving, 503 while loading or after a failed load", 200, 503)},
        "/v1/models": {"get": _operation("Configured models", 200)},
        "/v1/chat/completions": {"post": _operation("Chat completion (OpenAI-compatible)", 200, 400, 404, 413, 429, 503,
                                                    body=ChatCompletionRequest, agent=True, stream=True)},
        "/v1/completions": {"post": _operation("Text completion (OpenAI-compatible)", 200, 400, 404, 413, 429, 503,
                                               body=CompletionRequest, agent=True, stream=True)},
        "/v1/responses": {"post": _operation("Response (OpenAI's Responses API, stateless: nothing is stored)", 200, 400, 404, 413, 429, 503,
                                             body=ResponsesRequest, agent=True, stream=True)},
        "/v1/messages": {"post": _operation("Message (Anthropic's Messages API)", 200, 400, 404, 413, 429, 503, 529,
                                            body=MessagesRequest, agent=True, stream=True, error="AnthropicError")},
        "/v1/messages/count_tokens": {"post": _operation("Count a message's input tokens (Anthropic's Messages API)", 200, 400, 404, 413, 503,
                                                         body=CountTokensRequest, agent=True, error="AnthropicError")},
        "/v1/embeddings": {"post": _operation("Embeddings (OpenAI-compatible)", 200, 400, 404, 413, 429, 503,
                                              body=EmbeddingRequest, agent=True)},
        "/apply-template": {"post": _operation("The prompt a chat completions body would feed the model (llama-server's)", 200, 400, 404, 413, 503,
                                               body=ApplyTemplateRequest, agent=True)},
        "/tokenize": {"post": _operation("Text to the model's tokens (llama-server's)", 200, 400, 404, 413, 503, body=TokenizeRequest, agent=True)},
        "/detokenize": {"post": _operation("The model's tokens to text (llama-server's)", 200, 400, 404, 413, 503, body=DetokenizeRequest,
                                           agent=True)},
        "/api/memory": {
            "get": _operation("List or search the caller's memory", 200, 400, 404, agent=True,
                              params=[_query("q", {"type": "string"}), _query("tag", {"type": "string"}),
                                      _query("limit", limit), _query("cursor", {"type": "string"})]),
            "post": _operation("Remember an item", 201, 400, 403, 404, 413, 422, 429, body=AddBody, agent=True),
            "delete": _operation("Forget the whole namespace (queued for approval: 202)", 202, 400, 403, 404, agent=True),
        },
        "/api/memory/{id}": {
            "parameters": [_path_id()],
            "get": _operation("One memory item", 200, 400, 404, agent=True),
            "patch": _operation("Edit a memory item", 200, 400, 404, 413, body=PatchBody, agent=True),
            "delete": _operation("Forget one item", 200, 400, 404, agent=True),
        },
        "/api/approvals": {"get": _operation("The approval queue, pending first (an agent's: admin:list_approvals)", 200, 400, 403, 429, agent=True,
                                             params=[_query("state", states), _query("agent", {"type": "string"}), _query("limit", limit)])},
        "/api/approvals/{id}": {"parameters": [_path_id()], "get": _operation("One approval and its audit trail", 200, 404, agent=True)},
        "/api/approvals/{id}/approve": {"parameters": [_path_id()],
                                        "post": _operation("Approve and run (humans only)", 200, 400, 403, 404, 409, 413, 421, body=DecisionBody,
                                                        body_required=False)},
        "/api/approvals/{id}/deny": {"parameters": [_path_id()],
                                     "post": _operation("Deny (humans only)", 200, 400, 403, 404, 409, 413, 421, body=DecisionBody,
                                                        body_required=False)},
        "/api/whoami": {"get": _operation("Who hal0 believes the caller is: agent, persona, source (header or default), peer",
                                          200, 400, 403, agent=True)},
        "/api/audit": {"get": _operation("The append-only audit log", 200, 400,
                                         params=[_query("approval_id", {"type": "string"}), _query("limit", limit)])},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "hal0", "version": __version__,
                 "description": "hal0's REST API. No built-in auth or TLS: put a reverse proxy in front (see the README)."},
        "paths": paths,
        "components": {"schemas": components},
    }


async def openapi(_request: Request) -> JSONResponse:
    return JSONResponse(build_openapi())


routes = [Route("/openapi.json", openapi, methods=["GET"])]
