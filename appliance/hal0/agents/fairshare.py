"""Fair share: who of the requests waiting for a model gets the next free slot.

A plain FIFO lets one agent that queues many requests starve everyone behind them. Here the next
free slot goes to the waiting agent served least recently (one that has never been served first),
round-robin across agents and FIFO within one, as a scheduler gives each process its turn.

The component knows nothing of models or HTTP: one `FairGate` per model, capacity = its slots.
Admission (api/generation.py) hands `gate.slot(agent)` to the model runtime's `turn()`, which
counts the request as waiting (queue depth, queue limit) and enters the slot before its own lock
or semaphore; since the gate lets at most `capacity` requests through, that lock then only ever
waits for an unload. Everything runs on the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

_FORGET_AFTER = 4096  # served-order entries kept for agents that are not waiting


class FairGate:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.holders = 0
        # agent -> its waiting futures, FIFO; OrderedDict keeps first-arrival order for ties.
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self._served: dict[str, int] = {}  # agent -> ticket of its last grant (higher = more recent)
        self._tickets = itertools.count()

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
            self._release()

    async def _acquire(self, agent: str) -> None:
        if self.holders < self.capacity and not self._waiting:
            self._grant(agent)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(agent, deque()).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # granted in the same instant the waiter was cancelled: hand it on
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

    def _release(self) -> None:
        self.holders -= 1
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


class FairShare:
    """The gates of all models, made on first use."""

    def __init__(self) -> None:
        self._gates: dict[str, FairGate] = {}

    def gate(self, model: str, capacity: int) -> FairGate:
        """The model's gate; `capacity` (its slots) changes only with a restart, which makes a new one."""
        gate = self._gates.get(model)
        if gate is None:
            gate = self._gates[model] = FairGate(capacity)
        return gate
