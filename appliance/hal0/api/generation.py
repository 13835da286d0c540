"""Running a generation for an HTTP request: admission, cancellation on disconnect, SSE streaming.

A dialect builds an inference Task and hands it here with a function that turns the task's events
into its wire chunks. The model's turn is taken, and the task's first event awaited, before the
response starts: a full queue is a clean 503 and a task that cannot run (prompt over the context,
bad bias ids, an unsupported schema) a clean 400, never a half-sent stream. A stream holds the
turn until its worker has really stopped, whatever way the client leaves, and no longer: what the client
has not read yet waits in a bounded outbox (GenerationStream).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from hal0.agents.quotas import Lease, QuotaExceededError
from hal0.api.errors import ApiError, bad_request, not_found, overloaded, rate_limited, unavailable
from hal0.api.identity import agent_of, peer_of
from hal0.api.protocol import ABORT_KEY
from hal0.inference import (
    Cancelled,
    EmbeddingFailed,
    EmbeddingTimeout,
    Event,
    Finish,
    GenerationFailed,
    Hold,
    InvalidTask,
    ModelRuntime,
    ModelUnavailable,
    QueueFull,
    StillLoading,
    Task,
    UnknownModel,
    check_task,
    until_done,
)
from hal0.services import Services
from hal0.tools.policy import admit_generation

Encode = Callable[[Event], Iterable[dict[str, Any]]]
T = TypeVar("T")


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
    slot: Hold | None = None  # the model's slot, once the turn is taken


async def hold_model(stack: AsyncExitStack, request: Request, runtime: ModelRuntime) -> Held:
    """The caller's pass through its persona's quotas, then the model's turn, both held on `stack`: closing
    it releases the turn and finishes the lease, counting the tokens `Held.tokens` reports by then."""
    held = Held(admit(request))  # the persona's quotas, before the request waits for the model
    # However it ends, the lease's place is freed and the tokens used are counted.
    stack.callback(lambda: held.lease.finish(held.tokens()))
    held.slot = await enter_turn(stack, services_of(request), runtime, request, held.lease.agent)
    return held


async def enter_turn(stack: AsyncExitStack, services: Services, runtime: ModelRuntime, request: Request, agent: str) -> Hold:
    """Take the model's turn on `stack` through its lifecycle (which loads it first when it is not in
    memory and admits the request in the model's fair order), turning queue and load problems into API
    errors. A client that goes away while waiting gives up its place (499); a load it started goes on for
    the others."""
    server = services.config.server
    use = services.lifecycle.use(runtime, agent, peer_of(request), server.queue_limit, server.request_timeout_s)
    try:
        return await _unless_disconnected(request, stack.enter_async_context(use))
    except QueueFull as error:
        raise overloaded(str(error), error.retry_after) from None
    except StillLoading as error:
        raise unavailable(str(error), retry_after=error.retry_after) from None
    except ModelUnavailable as error:
        raise unavailable(str(error)) from None


async def _unless_disconnected(request: Request, waiting: Awaitable[T]) -> T:
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
    return work.result()


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


async def check(task: Task, runtime: ModelRuntime | None = None) -> None:
    """Refuse, before the task takes a quota lease or a place in the queue, what can be known not to
    run: a schema or grammar that cannot be enforced. Compiling one is CPU work (a large schema takes
    a good fraction of a second) and goes to a thread, never the event loop; the result is cached,
    so the run itself pays nothing more (a loaded model's native call grammar is compiled here too)."""
    model = runtime.loaded_or_none() if runtime is not None else None
    try:
        await asyncio.to_thread(check_task, task, model)
    except InvalidTask as error:
        raise task_error(error) from None


def task_error(error: InvalidTask | GenerationFailed) -> ApiError:
    if isinstance(error, InvalidTask):
        return bad_request(str(error), param=error.param, code=error.code)
    return bad_request(f"generation failed: {error}", code="generation_failed")


async def run_to_completion(request: Request, runtime: ModelRuntime, task: Task) -> list[Event]:
    """All events of `task` (checked: api.tasks.prepare), or an API error (499 when the client left)."""
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
    deadline = deadline_of(services_of(request))  # it includes the time spent queued, as a generation's
    async with AsyncExitStack() as stack:
        held = await hold_model(stack, request, runtime)
        assert held.slot is not None
        async with cancel_on_disconnect(request, cancel.set):
            try:
                raw = await runtime.embed(inputs, cancel, deadline, held.slot)
            except Cancelled:
                raise ApiError(499, "client closed the request", code="client_closed") from None
            except InvalidTask as error:
                raise task_error(error) from None
            except EmbeddingTimeout as error:
                raise ApiError(504, f"{error}; send fewer inputs per request", type="server_error", code="timeout") from None
            except (EmbeddingFailed, ModelUnavailable) as error:
                raise unavailable(f"embeddings failed: {error}") from None
        held.tokens = lambda: raw["usage"]["prompt_tokens"]
    return raw


class _Outbox:
    """What a stream has produced and not yet sent, bounded in bytes. One producer, one consumer, on the loop."""

    def __init__(self, bound: int) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._bound = bound
        self._changed = asyncio.Event()
        self._closed = False

    async def put(self, data: bytes, timeout: float) -> bool:
        """Add `data`, waiting at most `timeout` seconds for room; False when the consumer did not make room
        in time (or is gone). A chunk always fits an empty box, so one larger than the bound still goes."""
        deadline = time.monotonic() + timeout
        while self._size and self._size + len(data) > self._bound:
            remaining = deadline - time.monotonic()
            if self._closed or remaining <= 0:
                return False
            self._changed.clear()  # the consumer is not waiting: the box is not empty
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        self._chunks.append(data)
        self._size += len(data)
        self._changed.set()
        return True

    async def get(self) -> bytes | None:
        """Everything waiting, as one piece; None once closed and empty."""
        while not self._chunks:
            if self._closed:
                return None
            self._changed.clear()  # the producer is not waiting: the box is empty
            await self._changed.wait()
        data = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        self._changed.set()
        return data

    def close(self) -> None:
        self._closed = True
        self._changed.set()

    def discard(self) -> None:
        self._chunks.clear()
        self._size = 0
        self.close()


class GenerationStream(Response):
    """An SSE response that frees its model turn as soon as the generation ends, not when the client has
    read it all (issue 29: a client that stops reading must not hold the model).

    A producer task runs the generation into a bounded outbox (server.stream_buffer_bytes); the response
    sends from it. The turn and the quota lease are released when the producer ends, which is after the
    worker has really stopped, so the tokens it generated are counted however the client left. A client
    that leaves stops the generation; one that does not drain the outbox within server.stream_send_timeout_s
    (a send that makes no progress, or a generation waiting for room) has its generation stopped and its
    connection dropped."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[str], stop: Callable[[], None], release: Callable[[], Awaitable[None]],
                 buffer_bytes: int, send_timeout: float) -> None:
        # No Response.__init__: with no body it would declare Content-Length: 0 (as StreamingResponse avoids).
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._events = events
        self._stop = stop
        self._release = release
        self._outbox = _Outbox(buffer_bytes)
        self._timeout = send_timeout
        self._stalled = False  # the producer found no room in time

    async def _produce(self) -> None:
        try:
            async for text in self._events:
                if not await self._outbox.put(text.encode(), self._timeout):
                    self._stalled = True
                    self._stop()
                    break
        finally:
            await self._events.aclose()  # type: ignore[attr-defined]  # waits for the worker to stop
            await self._release()
            self._outbox.close()

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._stop()  # the client left: stop generating for nobody
        self._outbox.discard()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        producer = asyncio.create_task(self._produce())
        watcher = asyncio.create_task(self._watch(receive))
        try:
            if not await self._send_all(send):
                self._stop()
                self._outbox.discard()
                abort = scope.get(ABORT_KEY)
                if abort is not None:
                    abort()  # drop the connection: what it has not read is discarded, not kept for it
        finally:
            watcher.cancel()
            self._stop_unless_done(producer)
            await until_done(producer)

    def _stop_unless_done(self, producer: asyncio.Task[None]) -> None:
        if not producer.done():
            self._stop()

    async def _send_all(self, send: Send) -> bool:
        """Send the head and whatever the producer makes; False when the client did not drain in time."""
        messages = [{"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}]
        while True:
            for message in messages:
                try:
                    await asyncio.wait_for(send(message), self._timeout)
                except TimeoutError:
                    return False
            if messages[-1].get("more_body") is False:
                return True
            data = await self._outbox.get()
            if self._stalled:
                return False
            messages = [{"type": "http.response.body", "body": data or b"", "more_body": data is not None}]


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
    request: Request, runtime: ModelRuntime, task: Task, encode: Encode, wire: Wire = OPENAI_WIRE
) -> GenerationStream:
    """An SSE stream of `encode(event)` chunks for each event of `task` (checked: api.tasks.prepare), then `wire.done`."""
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

    server = services_of(request).config.server
    return GenerationStream(events(), generation.cancel, stack.aclose, server.stream_buffer_bytes, server.stream_send_timeout_s)
