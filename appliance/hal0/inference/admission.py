"""Admission: who of the requests for one model may wait, and who of the waiting gets the next slot.

One `Admission` per model is the only count of its requests (running plus waiting, for its load or for a
slot), so the queue limit, the Retry-After it answers and the queue depth operators see all read one number.
Its `FairGate` is the semaphore of the model's slots and decides the order: the next free slot goes to the
waiting agent served least recently (one never served first), round-robin across agents and FIFO within one,
as a scheduler gives each process its turn; a plain FIFO would let one agent that queues many requests starve
everyone behind it. An unload takes every slot at once (`exclusive`), after the requests running and before
the ones waiting, which then find the model gone and load it again.

Everything here runs on the event loop: no lock is needed.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

_FORGET_AFTER = 4096  # served-order entries kept for agents that are not waiting


class QueueFull(Exception):
    """The model's wait queue is full; retry after `retry_after` seconds."""

    def __init__(self, model_id: str, retry_after: int) -> None:
        super().__init__(f"model {model_id!r} is busy and its queue is full; retry after {retry_after}s")
        self.retry_after = retry_after


class FairGate:
    """`capacity` places handed out fairly across agents; `exclusive()` takes them all."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.holders = 0
        # agent -> its waiting futures, FIFO; OrderedDict keeps first-arrival order for ties.
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._served: dict[str, int] = {}  # agent -> ticket of its last grant (higher = more recent)
        self._tickets = itertools.count()
        self._exclusive: deque[asyncio.Future[None]] = deque()  # unloads waiting for every place
        self.exclusive_held = False

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    @asynccontextmanager
    async def slot(self, agent: str) -> AsyncIterator[None]:
        """Hold one of the gate's places for `agent`, waiting for its fair turn."""
        await self._acquire(agent)
        try:
            yield
        finally:
            self._release(1)

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold every place: after the holders leave, before any waiter."""
        if self.holders == 0 and not self._exclusive:
            self.holders, self.exclusive_held = self.capacity, True
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._exclusive.append(future)
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release_exclusive()
                elif future in self._exclusive:
                    self._exclusive.remove(future)
                raise
        try:
            yield
        finally:
            self._release_exclusive()

    def _release_exclusive(self) -> None:
        self.exclusive_held = False
        self._release(self.capacity)

    async def _acquire(self, agent: str) -> None:
        if self.holders < self.capacity and not self._waiting and not self._exclusive:
            self._grant(agent)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(agent, deque()).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(1)  # granted in the same instant the waiter was cancelled: hand it on
            else:
                self._drop(agent, future)
            raise

    def _drop(self, agent: str, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(agent)
        if queue is not None and future in queue:
            queue.remove(future)
            if not queue:
                del self._waiting[agent]

    def _grant(self, agent: str) -> None:
        self.holders += 1
        self._served[agent] = next(self._tickets)
        if len(self._served) > _FORGET_AFTER:
            for name in [name for name in self._served if name not in self._waiting][: len(self._served) // 2]:
                del self._served[name]

    def _release(self, places: int) -> None:
        self.holders -= places
        while self._exclusive:
            if self.holders > 0:
                return  # an unload waits for the running to leave; nobody new goes before it
            future = self._exclusive.popleft()
            if not future.cancelled():
                self.holders, self.exclusive_held = self.capacity, True
                future.set_result(None)
                return
        while self.holders < self.capacity and self._waiting:
            # Least recently served first; never served (-1) before anyone; ties by arrival order.
            agent = min(self._waiting, key=lambda name: self._served.get(name, -1))
            queue = self._waiting[agent]
            future = queue.popleft()
            if not queue:
                del self._waiting[agent]
            if future.cancelled():
                continue
            self._grant(agent)
            future.set_result(None)


@dataclass(eq=False)
class Ticket:
    """One admitted request (or an admin load): its place in the model's count until it leaves."""

    agent: str | None  # None: an admin load, which waits for no slot


@dataclass
class Admission:
    """One model's requests: the count, the queue limit, the fair order and the slots."""

    model_id: str
    slots: int
    tickets: set[Ticket] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.gate = FairGate(self.slots)

    @property
    def admitted(self) -> int:
        """Requests (and admin loads) admitted: waiting for the load, for a slot, or running."""
        return len(self.tickets)

    @property
    def running(self) -> int:
        """Requests holding a slot (an unload holding them all is no request)."""
        return 0 if self.gate.exclusive_held else self.gate.holders

    @property
    def waiting(self) -> int:
        return max(0, self.admitted - self.running)

    def retry_after(self, loading_s: float = 0.0) -> int:
        """Seconds until a slot is likely free: the rest of a load in progress plus about a second per
        request already waiting."""
        return max(1, math.ceil(loading_s) + self.waiting)

    def enter(self, agent: str | None, queue_limit: int | None, loading_s: float = 0.0) -> Ticket:
        """Count one more request, or raise QueueFull when `slots + queue_limit` are already admitted
        (`queue_limit` None: an admin load, never refused)."""
        if queue_limit is not None and self.admitted >= self.slots + queue_limit:
            raise QueueFull(self.model_id, self.retry_after(loading_s))
        ticket = Ticket(agent)
        self.tickets.add(ticket)
        return ticket

    def leave(self, ticket: Ticket) -> None:
        self.tickets.discard(ticket)

    def slot(self, ticket: Ticket) -> AbstractAsyncContextManager[None]:
        """Wait for the ticket's fair turn at one of the model's slots, and hold it."""
        return self.gate.slot(ticket.agent or "")

    def exclusive(self) -> AbstractAsyncContextManager[None]:
        """Every slot at once (an unload): after the requests running, before the ones waiting."""
        return self.gate.exclusive()


__all__ = ["Admission", "FairGate", "QueueFull", "Ticket"]
