"""Running a generation for an HTTP request: admission, cancellation on disconnect, SSE streaming.

The model's turn is taken before the response starts, so a full queue is a clean 503 and never a
half-sent stream. A stream holds the turn until its worker has really stopped, whatever way the
client leaves.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from hal0.api.errors import ApiError, bad_request, not_found, overloaded, unavailable
from hal0.inference import Guard, ModelRuntime, ModelUnavailable, QueueFull, UnknownModel
from hal0.services import Services


def value_error_code(error: ValueError) -> str:
    """llama-cpp-python raises ValueError both for a prompt over the context and for other bad values."""
    text = str(error).lower()
    return "context_length_exceeded" if "context" in text or "exceed" in text else "invalid_value"


def services_of(request: Request) -> Services:
    return request.app.state.services


def lookup_model(services: Services, model_id: str | None) -> ModelRuntime:
    try:
        return services.models.get(model_id)
    except UnknownModel as error:
        raise not_found(str(error), param="model", code="model_not_found") from None


def new_guard(services: Services) -> Guard:
    return Guard(deadline=time.perf_counter() + services.config.server.request_timeout_s)


async def enter_turn(stack: AsyncExitStack, runtime: ModelRuntime, queue_limit: int) -> None:
    """Take the model's turn on `stack`, turning queue and load problems into API errors."""
    try:
        await stack.enter_async_context(runtime.turn(queue_limit))
    except QueueFull as error:
        raise overloaded(str(error), error.retry_after) from None
    except ModelUnavailable as error:
        raise unavailable(str(error)) from None


@asynccontextmanager
async def cancel_on_disconnect(request: Request, guard: Guard) -> AsyncIterator[None]:
    """Set the guard's cancel flag if the client goes away while we work for it."""

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                guard.cancel.set()
                return

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()


async def run_to_completion(
    request: Request, runtime: ModelRuntime, work: Callable[[Any, Guard], Any]
) -> tuple[Any, Guard]:
    services = services_of(request)
    guard = new_guard(services)
    async with AsyncExitStack() as stack:
        await enter_turn(stack, runtime, services.config.server.queue_limit)
        async with cancel_on_disconnect(request, guard):
            try:
                result = await runtime.run(work, guard)
            except ValueError as error:  # llama-cpp-python's word for a request it cannot run
                raise bad_request(str(error), code=value_error_code(error)) from None
            except RuntimeError as error:  # llama_decode failed for this input: the request, not the server
                raise bad_request(f"generation failed: {error}", code="generation_failed") from None
    if guard.cancel.is_set():
        raise ApiError(499, "client closed the request", code="client_closed")
    return result, guard


class GenerationStream(StreamingResponse):
    """An SSE response that always releases its model turn and stops its worker when it ends."""

    def __init__(self, events: AsyncIterator[str], guard: Guard, release: Callable[[], Awaitable[None]]) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._events = events
        self._guard = guard
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._guard.cancel.set()
            await self._events.aclose()  # type: ignore[attr-defined]
            await self._release()


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def start_stream(
    request: Request,
    runtime: ModelRuntime,
    work: Callable[[Any, Guard], Iterator[dict[str, Any]]],
    usage_chunk: Callable[[Guard], dict[str, Any] | None],
) -> GenerationStream:
    services = services_of(request)
    guard = new_guard(services)
    stack = AsyncExitStack()
    await enter_turn(stack, runtime, services.config.server.queue_limit)

    async def events() -> AsyncIterator[str]:
        try:
            async for chunk in runtime.stream(work, guard):
                chunk["model"] = runtime.id
                yield sse(chunk)
        except ValueError as error:
            yield sse({"error": {"message": str(error), "type": "invalid_request_error", "code": value_error_code(error)}})
        except RuntimeError as error:
            yield sse({"error": {"message": f"generation failed: {error}", "type": "invalid_request_error", "code": "generation_failed"}})
        else:
            final = usage_chunk(guard)
            if final is not None:
                final["model"] = runtime.id
                yield sse(final)
            yield "data: [DONE]\n\n"
        finally:
            services.metrics.record_generation(runtime.id, guard.prompt_tokens, guard.generated, guard.ttft)

    return GenerationStream(events(), guard, stack.aclose)
