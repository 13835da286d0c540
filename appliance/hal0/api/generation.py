"""Running a generation for an HTTP request: admission, cancellation on disconnect, SSE streaming.

A dialect builds an inference Task and hands it here with a function that turns the task's events
into its wire chunks. The model's turn is taken, and the task's first event awaited, before the
response starts: a full queue is a clean 503 and a task that cannot run (prompt over the context,
bad bias ids, an unsupported schema) a clean 400, never a half-sent stream. A stream holds the
turn until its worker has really stopped, whatever way the client leaves.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from hal0.agents.quotas import Lease, QuotaExceededError
from hal0.api.errors import ApiError, bad_request, not_found, overloaded, rate_limited, unavailable
from hal0.api.identity import agent_of
from hal0.inference import (
    Cancelled,
    EmbeddingFailed,
    Event,
    Finish,
    GenerationFailed,
    InvalidTask,
    ModelRuntime,
    ModelUnavailable,
    QueueFull,
    StillLoading,
    UnknownModel,
    check_task,
)
from hal0.services import Services
from hal0.tools.policy import admit_generation

Encode = Callable[[Event], Iterable[dict[str, Any]]]


def services_of(request: Request) -> Services:
    return request.app.state.services


def lookup_model(services: Services, model_id: str | None) -> ModelRuntime:
    try:
        return services.models.get(model_id)
    except UnknownModel as error:
        raise not_found(str(error), param="model", code="model_not_found") from None


def admit(request: Request) -> Lease:
    """The caller's pass through its persona's quotas (429 with a true Retry-After when over one).
    The lease is held, counting towards max_concurrent, until the generation ends."""
    services = services_of(request)
    try:
        return admit_generation(services.config.agents, services.quotas, agent_of(request, services))
    except QuotaExceededError as error:
        raise rate_limited(str(error), error.retry_after, error.quota) from None


def _used(generation: Any) -> int:
    """Tokens (prompt plus generated) a generation used, for tokens_per_minute (0 if it never finished)."""
    finish = getattr(generation, "finish", None)
    return finish.usage.total_tokens if finish is not None else 0


def deadline_of(services: Services) -> float:
    """The request's deadline on the perf_counter clock (it includes time spent queued)."""
    return time.perf_counter() + services.config.server.request_timeout_s


@dataclass
class Held:
    """What a request holds while the model works for it: its quota lease, which counts `tokens()` when it ends."""

    lease: Lease
    tokens: Callable[[], int] = lambda: 0


async def hold_model(stack: AsyncExitStack, request: Request, runtime: ModelRuntime) -> Held:
    """The caller's pass through its persona's quotas, then the model's turn, both held on `stack`: closing
    it releases the turn and finishes the lease, counting the tokens `Held.tokens` reports by then."""
    held = Held(admit(request))  # the persona's quotas, before the request waits for the model
    # However it ends, the lease's place is freed and the tokens used are counted.
    stack.callback(lambda: held.lease.finish(held.tokens()))
    await enter_turn(stack, services_of(request), runtime, request, held.lease.agent)
    return held


async def enter_turn(stack: AsyncExitStack, services: Services, runtime: ModelRuntime, request: Request, agent: str) -> None:
    """Take the model's turn on `stack` through its lifecycle (which loads it first when it is not in
    memory and admits the request in the model's fair order), turning queue and load problems into API
    errors. A client that goes away while waiting gives up its place (499); a load it started goes on for
    the others."""
    server = services.config.server
    entering = stack.enter_async_context(services.lifecycle.use(runtime, agent, server.queue_limit, server.request_timeout_s))
    try:
        await _unless_disconnected(request, entering)
    except QueueFull as error:
        raise overloaded(str(error), error.retry_after) from None
    except StillLoading as error:
        raise unavailable(str(error), retry_after=error.retry_after) from None
    except ModelUnavailable as error:
        raise unavailable(str(error)) from None


async def _unless_disconnected(request: Request, waiting: Awaitable[Any]) -> None:
    work = asyncio.ensure_future(waiting)
    gone = asyncio.create_task(_disconnect(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not work.done():
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        raise ApiError(499, "client closed the request while waiting for the model", code="client_closed")
    work.result()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


@asynccontextmanager
async def cancel_on_disconnect(request: Request, cancel: Callable[[], None]) -> AsyncIterator[None]:
    """Call `cancel` if the client goes away while we work for it."""

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                cancel()
                return

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()


async def check(task: Any) -> None:
    """Refuse, before the task takes a quota lease or a place in the queue, what can be known not to
    run: a schema or grammar that cannot be enforced. Compiling one is CPU work (a large schema takes
    a good fraction of a second) and goes to a thread, never the event loop; the result is cached,
    so the run itself pays nothing more."""
    try:
        await asyncio.to_thread(check_task, task)
    except InvalidTask as error:
        raise task_error(error) from None


def task_error(error: InvalidTask | GenerationFailed) -> ApiError:
    if isinstance(error, InvalidTask):
        return bad_request(str(error), param=error.param, code=error.code)
    return bad_request(f"generation failed: {error}", code="generation_failed")


async def run_to_completion(request: Request, runtime: ModelRuntime, task: Any) -> list[Event]:
    """All events of `task`, or an API error (499 when the client left)."""
    await check(task)
    async with AsyncExitStack() as stack:
        held = await hold_model(stack, request, runtime)
        generation = runtime.start(task)
        held.tokens = lambda: _used(generation)
        async with cancel_on_disconnect(request, generation.cancel):
            try:
                events = [event async for event in generation.events()]
            except (InvalidTask, GenerationFailed) as error:
                raise task_error(error) from None
    if generation.cancelled and (generation.finish is None or generation.finish.reason == "cancelled"):
        raise ApiError(499, "client closed the request", code="client_closed")
    return events


async def run_embeddings(request: Request, runtime: ModelRuntime, inputs: list[str]) -> dict[str, Any]:
    """The embeddings of `inputs` (data and usage), held and counted like a generation, or an API error."""
    cancel = threading.Event()
    async with AsyncExitStack() as stack:
        held = await hold_model(stack, request, runtime)
        async with cancel_on_disconnect(request, cancel.set):
            try:
                raw = await runtime.embed(inputs, cancel)
            except Cancelled:
                raise ApiError(499, "client closed the request", code="client_closed") from None
            except InvalidTask as error:
                raise task_error(error) from None
            except EmbeddingFailed as error:
                raise unavailable(f"embeddings failed: {error}") from None
        held.tokens = lambda: raw["usage"]["prompt_tokens"]
    return raw


class GenerationStream(StreamingResponse):
    """An SSE response that always releases its model turn and stops its worker when it ends."""

    def __init__(self, events: AsyncIterator[str], stop: Callable[[], None], release: Callable[[], Awaitable[None]]) -> None:
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._events = events
        self._stop = stop
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stop()
            await self._events.aclose()  # type: ignore[attr-defined]
            await self._release()


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def named_sse(data: dict[str, Any]) -> str:
    """An SSE event named by its payload's `type` (the Responses and Messages APIs' framing)."""
    return f"event: {data['type']}\n{sse(data)}"


def _openai_stream_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "code": "generation_failed"}}


@dataclass(frozen=True)
class Wire:
    """How a dialect frames its stream: each chunk, the line that ends it, an error after the start."""

    frame: Callable[[dict[str, Any]], str] = sse
    done: str = "data: [DONE]\n\n"
    error: Callable[[str], dict[str, Any]] = _openai_stream_error


OPENAI_WIRE = Wire()


async def start_stream(
    request: Request, runtime: ModelRuntime, task: Any, encode: Encode, wire: Wire = OPENAI_WIRE
) -> GenerationStream:
    """An SSE stream of `encode(event)` chunks for each event of `task`, then `wire.done`."""
    await check(task)
    stack = AsyncExitStack()  # released with the stream's turn
    try:
        held = await hold_model(stack, request, runtime)
    except BaseException:
        await stack.aclose()
        raise
    generation = runtime.start(task)
    held.tokens = lambda: _used(generation)
    source = generation.events()
    try:
        first = await anext(source)
    except (InvalidTask, GenerationFailed) as error:
        await source.aclose()
        await stack.aclose()
        raise task_error(error) from None
    except BaseException:
        generation.cancel()
        await source.aclose()
        await stack.aclose()
        raise

    async def events() -> AsyncIterator[str]:
        event: Event = first
        try:
            while True:
                for chunk in encode(event):
                    yield wire.frame(chunk)
                if isinstance(event, Finish):
                    break
                event = await anext(source)
        except GenerationFailed as error:
            yield wire.frame(wire.error(f"generation failed: {error}"))
        except StopAsyncIteration:  # cancelled before its Finish
            return
        else:
            if wire.done:
                yield wire.done
        finally:
            await source.aclose()

    return GenerationStream(events(), generation.cancel, stack.aclose)
