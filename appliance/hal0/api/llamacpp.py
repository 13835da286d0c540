"""llama-server's prompt endpoints: POST /apply-template, /tokenize and /detokenize.

Request and response shapes are llama-server's (tools/server/server-context.cpp), with `model`
choosing the model as on the other routes (a persona's model when it names none). They need the
model loaded, not a turn: the template and the tokenizer only read its vocabulary, so they answer
at once even while it generates, and count against no quota.

/apply-template answers the prompt hal0 would feed the model for that chat completions body (the
persona's system prompt included), after the chat template, before tokenizing; like llama-server
it leaves out a BOS the tokenizer adds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hal0.agents.request import GenerationRequest
from hal0.api.body import parse_json
from hal0.api.errors import bad_request, unavailable
from hal0.api.generation import lookup_model, services_of, task_error
from hal0.api.openai import chat_request
from hal0.api.schemas import ApplyTemplateRequest, DetokenizeRequest, TokenizeRequest
from hal0.api.tasks import generation_task, personalised
from hal0.inference import InvalidTask, ModelRuntime, ModelUnavailable
from hal0.inference.generate import LoadedModel, chat_prompt
from hal0.inference.tokens import BadToken, detokenize, tokenize, with_pieces


def _loaded(runtime: ModelRuntime) -> LoadedModel:
    try:
        return runtime.loaded()
    except ModelUnavailable as error:
        raise unavailable(str(error)) from None


def _model_of(request: Request, model: str | None) -> str | None:
    """The model a request naming `model` gets: the persona's when it names none."""
    return personalised(request, GenerationRequest(model=model))[1].model


async def apply_template(request: Request) -> Response:
    services = services_of(request)
    body = await parse_json(request, ApplyTemplateRequest, services.config.server.max_body_bytes)
    runtime, task = generation_task(request, chat_request(body))
    model = _loaded(runtime)
    try:
        rendered = await asyncio.to_thread(chat_prompt, model.template, task, body.add_generation_prompt, model.tool_syntax is not None)
    except InvalidTask as error:
        raise task_error(error) from None
    return JSONResponse({"prompt": rendered.prompt})


async def tokenize_text(request: Request) -> Response:
    services = services_of(request)
    body = await parse_json(request, TokenizeRequest, services.config.server.max_body_bytes)
    llama = _loaded(lookup_model(services, _model_of(request, body.model))).llama

    def work() -> list[Any]:
        tokens = tokenize(llama, body.content, body.add_special, body.parse_special)
        return with_pieces(llama, tokens) if body.with_pieces else tokens

    try:
        return JSONResponse({"tokens": await asyncio.to_thread(work)})
    except BadToken as error:
        raise bad_request(str(error), param="content") from None


async def detokenize_tokens(request: Request) -> Response:
    services = services_of(request)
    body = await parse_json(request, DetokenizeRequest, services.config.server.max_body_bytes)
    llama = _loaded(lookup_model(services, _model_of(request, body.model))).llama
    try:
        return JSONResponse({"content": await asyncio.to_thread(detokenize, llama, body.tokens)})
    except BadToken as error:
        raise bad_request(str(error), param="tokens") from None


routes = [
    Route("/apply-template", apply_template, methods=["POST"]),
    Route("/tokenize", tokenize_text, methods=["POST"]),
    Route("/detokenize", detokenize_tokens, methods=["POST"]),
]
