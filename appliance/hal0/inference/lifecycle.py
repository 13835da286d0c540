"""Which models are in memory, and when: start-up loads, loads on demand, keep-alive, the loaded-model limit.

The runtime (runtime.py) knows how to load, unload and run one model; this module decides when. Every
request for a model goes through `use()`: it is admitted by the model's `Admission` first (so a model with
requests running or waiting is never unloaded), then waits for the model to be ready, starting its load if
nobody has, then takes the runtime's turn. Concurrent first requests therefore wait on one load; the load is
a task of its own, so a client that goes away while waiting cancels nothing.

Loads and unloads happen one at a time (`_changes`): two loads would only compete for the same disk and
memory, and the loaded-model limit is decided in one place. Loading one more model than
`server.max_loaded_models` allows first unloads the least recently used idle, unpinned model; when none is
idle the load waits (bounded: it gives up as soon as nobody waits for it any more, and every waiter has a
deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import enum
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from hal0 import faults
from hal0.inference.admission import Admission, Hold, Ticket
from hal0.inference.offload import Offload
from hal0.inference.registry import ModelRegistry
from hal0.inference.runtime import ModelRuntime
from hal0.inference.state import ModelState, ModelUnavailable

log = logging.getLogger("hal0.inference")

_IDLE_TICK_S = 0.25  # how often idle deadlines are checked; keep_alive is at least 1s


class LoadReason(enum.StrEnum):
    STARTUP = "startup"
    REQUEST = "request"
    ADMIN = "admin"


class UnloadReason(enum.StrEnum):
    KEEP_ALIVE = "keep_alive"
    EVICTED = "evicted"
    ADMIN = "admin"


class LifecycleObserver(Protocol):
    """Metrics hooks (called on the event loop)."""

    def model_loaded(self, model: str, reason: str, seconds: float) -> None: ...

    def model_load_failed(self, model: str, reason: str) -> None: ...

    def model_unloaded(self, model: str, reason: str) -> None: ...


class StillLoading(ModelUnavailable):
    """The model did not become ready within the request's deadline; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ModelStatus:
    """What an operator sees of one configured model. Times are Unix timestamps."""

    id: str
    state: ModelState
    load: str  # startup | on_demand
    pinned: bool
    keep_alive_s: float | None
    since: float | None  # ready since, or loading since
    last_used: float | None
    idle_deadline: float | None  # when keep_alive unloads it; None while in use or without keep_alive
    error: str | None
    running: int
    waiting: int  # for the load or for a turn
    slots: int
    offload: Offload | None = None  # where it runs, as llama.cpp's load log says; None unless ready

    def as_json(self) -> dict[str, object]:
        """The lifecycle fields the full views show (/v1/models, the admin tools)."""
        return {
            "state": self.state, "load": self.load, "pinned": self.pinned, "keep_alive_s": self.keep_alive_s,
            "since": self.since, "last_used": self.last_used, "idle_deadline": self.idle_deadline,
            **({"error": self.error} if self.error else {}),
            "offload": self.offload.as_json() if self.offload is not None else None,
        }


@dataclass
class _Entry:
    runtime: ModelRuntime
    last_used: float = 0.0  # monotonic
    ready_since: float | None = None  # monotonic
    load_task: asyncio.Task[None] | None = None
    load_started: float | None = None  # monotonic
    last_load_s: float | None = None  # how long the last successful load took (for Retry-After)

    @property
    def admission(self) -> Admission:
        return self.runtime.admission

    @property
    def loading(self) -> bool:
        return self.load_task is not None and not self.load_task.done()

    @property
    def idle(self) -> bool:
        return self.admission.admitted == 0 and not self.loading


def _wall(monotonic: float | None) -> float | None:
    return None if monotonic is None else time.time() - (time.monotonic() - monotonic)


def _return_freed_memory() -> None:
    """Hand the heap pages llama.cpp just freed back to the OS, so an unload really lowers RSS.

    glibc keeps freed arenas for reuse; after unloading a model nothing will reuse them soon."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)


class Lifecycle:
    """The load state of every configured model, and the one place that changes it."""

    def __init__(self, registry: ModelRegistry, max_loaded: int | None) -> None:
        self._registry = registry
        self._max_loaded = max_loaded
        self._entries = {runtime.id: _Entry(runtime) for runtime in registry}
        self._changes = asyncio.Lock()
        self._freed = asyncio.Event()  # set when a model may have become evictable
        self._started = False  # every start-up model has been tried
        self.observer: LifecycleObserver | None = None

    # ---- the request path ------------------------------------------------------------------

    def runtime(self, model_id: str | None) -> ModelRuntime:
        """The runtime for an id (None: the default model); raises UnknownModel. Loads nothing."""
        return self._registry.get(model_id)

    @asynccontextmanager
    async def use(self, runtime: ModelRuntime, agent: str, peer: str | None, queue_limit: int, timeout: float) -> AsyncIterator[Hold]:
        """Admit `agent`'s request (from TCP peer `peer`), have the model ready (loading it if needed) and hold
        a slot, taken in the model's fair order (admission.py). Yields the slot's Hold.

        QueueFull when the model's queue is full (or, while waiting, when a newcomer took this request's place
        because its client held most of the queue); ModelUnavailable (StillLoading past `timeout`) when it
        cannot be loaded."""
        entry = self._entries[runtime.id]
        ticket = entry.admission.enter(agent, peer, queue_limit, self._loading_left(entry))
        try:
            async with AsyncExitStack() as stack:
                try:
                    hold = await self._ready_turn(entry, ticket, stack, timeout)
                except asyncio.CancelledError:
                    if not ticket.evicted:
                        raise
                    current = asyncio.current_task()
                    if current is not None:
                        current.uncancel()  # the cancellation was the eviction's, now answered as QueueFull
                    raise entry.admission.refusal(ticket) from None
                ticket.waiter = None  # running: never evicted
                yield hold
        finally:
            self._release(entry, ticket)

    async def _ready_turn(self, entry: _Entry, ticket: Ticket, stack: AsyncExitStack, timeout: float) -> Hold:
        runtime = entry.runtime
        for attempt in (1, 2):
            await self._ready(entry, LoadReason.REQUEST, timeout)
            try:
                return await stack.enter_async_context(runtime.turn(ticket))
            except ModelUnavailable:
                # An admin unloaded it between its load and our turn: load it again, once.
                if attempt == 2 or runtime.state is ModelState.FAILED:
                    raise
        raise AssertionError("unreachable")

    def _release(self, entry: _Entry, ticket: Ticket) -> None:
        entry.admission.leave(ticket)
        entry.last_used = time.monotonic()
        if entry.admission.admitted == 0:
            self._freed.set()

    async def _ready(self, entry: _Entry, reason: LoadReason, timeout: float) -> None:
        runtime = entry.runtime
        deadline = time.monotonic() + timeout
        # A loop: an admin may unload the model right after the load we waited for; then we load it again.
        while runtime.state is not ModelState.READY or entry.loading:
            task = self._load_task(entry, reason)  # a model that failed before is tried again
            try:
                # shield: a waiter that leaves (deadline, client gone) never cancels the load for the others.
                await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise StillLoading(f"model {runtime.id!r} is not loaded yet after {timeout:g}s; retry later",
                                   self._retry_after(entry)) from None
            if runtime.state is ModelState.FAILED:
                raise ModelUnavailable(f"model {runtime.id!r} failed to load: {runtime.error}")

    def _load_task(self, entry: _Entry, reason: LoadReason) -> asyncio.Task[None]:
        """The model's load in progress, or a new one: one load, however many wait for it."""
        if entry.load_task is None or entry.load_task.done():
            entry.load_task = asyncio.create_task(self._load(entry, reason), name=f"hal0-load-{entry.runtime.id}")
        return entry.load_task

    def _loading_left(self, entry: _Entry) -> float:
        """Seconds the load in progress likely still takes (as long as the last one took), 0 when none."""
        if entry.loading and entry.load_started is not None:
            return max(0.0, (entry.last_load_s or 1.0) - (time.monotonic() - entry.load_started))
        return 0.0

    def _retry_after(self, entry: _Entry) -> int:
        """Seconds until a slot is likely free (Admission.retry_after, counting a load in progress)."""
        return entry.admission.retry_after(self._loading_left(entry))

    # ---- loads and unloads -----------------------------------------------------------------

    async def _load(self, entry: _Entry, reason: LoadReason) -> None:
        runtime = entry.runtime
        entry.load_started = time.monotonic()
        async with self._changes:
            if runtime.state is ModelState.READY:
                return
            if not await self._make_room(entry):
                log.info("model %s: load abandoned, no request waits for it any more", runtime.id)
                return
            entry.load_started = started = time.monotonic()
            await asyncio.sleep(faults.delay("slow-load"))
            await runtime.load()
            seconds = time.monotonic() - started
        if runtime.state is ModelState.READY:
            entry.ready_since = entry.last_used = time.monotonic()
            entry.last_load_s = seconds
            log.info("model %s loaded (%s) in %.2fs", runtime.id, reason.value, seconds)
            if self.observer is not None:
                self.observer.model_loaded(runtime.id, reason.value, seconds)
        elif self.observer is not None:
            self.observer.model_load_failed(runtime.id, reason.value)

    def _loaded(self) -> list[_Entry]:
        return [entry for entry in self._entries.values() if entry.runtime.state is ModelState.READY]

    async def _make_room(self, entry: _Entry) -> bool:
        """Unload least recently used idle, unpinned models until one more fits. Called holding `_changes`.

        False when nobody waits for this load any more (every waiter has left: timeout or gone)."""
        limit = self._max_loaded
        while limit is not None and len(self._loaded()) >= limit:
            candidates = [other for other in self._loaded() if other is not entry and other.idle and not other.runtime.config.pinned]
            if candidates:
                victim = min(candidates, key=lambda other: other.last_used)
                log.info("model %s evicted (least recently used) to load %s", victim.runtime.id, entry.runtime.id)
                await self._unload_now(victim, UnloadReason.EVICTED)
                continue
            if entry.admission.admitted == 0 and self._started:
                return False
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._freed.wait(), 1.0)  # a model went idle, or re-check who waits
        return True

    async def _unload_now(self, entry: _Entry, reason: UnloadReason) -> None:
        """Unload (waiting for its running requests). Called holding `_changes`."""
        await entry.runtime.unload()
        entry.ready_since = None
        await asyncio.get_running_loop().run_in_executor(None, _return_freed_memory)
        log.info("model %s unloaded (%s)", entry.runtime.id, reason.value)
        if self.observer is not None:
            self.observer.model_unloaded(entry.runtime.id, reason.value)

    async def load(self, model_id: str, timeout: float) -> tuple[ModelStatus, bool]:
        """Load a model for an admin (evicting as a request would). (status, changed); raises UnknownModel
        or ModelUnavailable."""
        runtime = self.runtime(model_id)
        entry = self._entries[runtime.id]
        changed = runtime.state is not ModelState.READY
        ticket = entry.admission.enter(None, None, None)  # wanted while it loads: never evicted, the load not abandoned
        try:
            await self._ready(entry, LoadReason.ADMIN, timeout)
        finally:
            self._release(entry, ticket)
        return self.status(runtime), changed

    async def unload(self, model_id: str) -> tuple[ModelStatus, bool]:
        """Unload a model for an admin, after its running requests. (status, changed); raises UnknownModel."""
        runtime = self.runtime(model_id)
        entry = self._entries[runtime.id]
        async with self._changes:
            changed = runtime.state is ModelState.READY
            if changed:
                await self._unload_now(entry, UnloadReason.ADMIN)
        return self.status(runtime), changed

    # ---- start-up and keep-alive -------------------------------------------------------------

    async def run(self) -> None:
        """Load the start-up models (one at a time), then unload idle models past their keep_alive.

        Runs for the life of the server; cancel it at shutdown."""
        for entry in self._entries.values():
            if entry.runtime.config.load == "startup":
                await asyncio.shield(self._load_task(entry, LoadReason.STARTUP))
        self._started = True
        while True:
            await self._expire_idle()
            await asyncio.sleep(_IDLE_TICK_S)

    async def _expire_idle(self) -> None:
        now = time.monotonic()
        for entry in self._entries.values():
            keep_alive = entry.runtime.config.keep_alive_s
            if keep_alive is None or entry.runtime.state is not ModelState.READY or not entry.idle:
                continue
            if now - entry.last_used >= keep_alive:
                async with self._changes:
                    # Re-checked under the lock: a request may have arrived while we waited for it.
                    if entry.runtime.state is ModelState.READY and entry.idle and time.monotonic() - entry.last_used >= keep_alive:
                        await self._unload_now(entry, UnloadReason.KEEP_ALIVE)

    # ---- what operators see ------------------------------------------------------------------

    def status(self, runtime: ModelRuntime) -> ModelStatus:
        entry = self._entries[runtime.id]
        config = runtime.config
        state, since = self._state(entry)
        admission = entry.admission
        deadline = None
        if state is ModelState.READY and admission.admitted == 0 and config.keep_alive_s is not None:
            deadline = _wall(entry.last_used + config.keep_alive_s)
        return ModelStatus(
            id=runtime.id, state=state, load=config.load, pinned=config.pinned, keep_alive_s=config.keep_alive_s,
            since=_wall(since), last_used=_wall(entry.last_used) if entry.last_used else None, idle_deadline=deadline,
            error=runtime.error if state is ModelState.FAILED else None, running=admission.running,
            waiting=admission.waiting, slots=runtime.slots, offload=runtime.offload if state is ModelState.READY else None,
        )

    def _state(self, entry: _Entry) -> tuple[ModelState, float | None]:
        """What operators see, and since when (monotonic): a load in progress, or a start-up model queued
        behind another's load, is LOADING (/health says loading too)."""
        runtime = entry.runtime
        if entry.loading:
            return ModelState.LOADING, entry.load_started
        if runtime.state is ModelState.READY:
            return ModelState.READY, entry.ready_since
        if runtime.state is ModelState.FAILED:
            return ModelState.FAILED, None
        if runtime.config.load == "startup" and not self._started and runtime.loaded_at is None:
            return ModelState.LOADING, None
        return ModelState.UNLOADED, None

    def statuses(self) -> list[ModelStatus]:
        return [self.status(runtime) for runtime in self._registry]

    @property
    def default_id(self) -> str:
        return self._registry.default_id

    @property
    def loaded_count(self) -> int:
        return len(self._loaded())

    @property
    def health(self) -> str:
        """`loading` until every start-up model has been tried, then `failed` while one of them is failed,
        else `ok`. On-demand models never make the box unhealthy."""
        if not self._started:
            return "loading"
        startup = [entry.runtime for entry in self._entries.values() if entry.runtime.config.load == "startup"]
        return "failed" if any(runtime.state is ModelState.FAILED for runtime in startup) else "ok"
