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
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

_FORGET_AFTER = 4096  # served-order entries kept for agents that are not waiting


class QueueFull(Exception):
    """The model's wait queue is full; retry after `retry_after` seconds."""

    def __init__(self, model_id: str, retry_after: int, evicted: bool = False) -> None:
        why = "its queue is full and this client holds more of it than the newest" if evicted else "its queue is full"
        super().__init__(f"model {model_id!r} is busy and {why}; retry after {retry_after}s")
        self.retry_after = retry_after


class Hold:
    """One place held at a FairGate; `pass_turn` lets the waiting go first between pieces of long work."""

    def __init__(self, gate: FairGate, agent: str) -> None:
        self._gate = gate
        self._agent = agent
        self.held = True

    async def pass_turn(self) -> None:
        """Give the place to whoever waits (fair order: this agent was just served, so others go first) and
        wait for it again; at once when nobody waits."""
        if not self._gate.contended:
            return
        self.held = False
        self._gate._release(1)
        await self._gate._acquire(self._agent)
        self.held = True


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

    @property
    def contended(self) -> bool:
        """Someone (a request, an unload) waits for a place."""
        return bool(self._waiting or self._exclusive)

    @asynccontextmanager
    async def slot(self, agent: str) -> AsyncIterator[Hold]:
        """Hold one of the gate's places for `agent`, waiting for its fair turn."""
        await self._acquire(agent)
        hold = Hold(self, agent)
        try:
            yield hold
        finally:
            if hold.held:
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

    agent: str | None  # None: an admin load, which waits for no slot and is never evicted
    peer: str | None = None  # the TCP peer's address: the queue is shared by address first
    hold: Hold | None = None  # its slot, once it has one
    evicted: bool = False
    waiter: asyncio.Task[object] | None = None  # the task waiting for the slot: cancelled when evicted

    @property
    def waiting(self) -> bool:
        return self.hold is None and self.agent is not None and not self.evicted


class Admission:
    """One model's requests: the count, the queue limit, the fair order and the slots.

    When the queue is full, the request refused is one of whoever holds most of it, not the newcomer's
    (issue 29: one agent queueing many requests, or many made-up agent ids, locked the others out). Agent
    ids are labels a client chooses (unless a trusted proxy sets them), so places are counted by TCP peer
    address first and by agent id within one address: made-up ids from one address share that address's
    part. Behind a reverse proxy every request has the proxy's address and the ids (which the proxy
    authenticated) decide. The newcomer is refused when its own address (then its own id) would hold as many
    places as anyone else's; otherwise the latest waiting request of the heaviest holder is refused (503 +
    Retry-After) and the newcomer takes its place. Requests running are never cut off.
    """

    def __init__(self, model_id: str, slots: int) -> None:
        self.model_id = model_id
        self.slots = slots
        self.tickets: list[Ticket] = []  # in order of admission
        self.gate = FairGate(slots)

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

    def enter(self, agent: str | None, peer: str | None, queue_limit: int | None, loading_s: float = 0.0) -> Ticket:
        """Count one more request. When `slots + queue_limit` are already admitted, refuse (QueueFull) the
        newcomer or, when someone else holds more of the queue, that holder's latest waiting request
        (`queue_limit` None: an admin load, never refused)."""
        if queue_limit is not None and self.admitted >= self.slots + queue_limit:
            victim = self._heaviest_waiting(agent, peer)
            if victim is None:
                raise QueueFull(self.model_id, self.retry_after(loading_s))
            self._evict(victim)
        ticket = Ticket(agent, peer, waiter=asyncio.current_task())
        self.tickets.append(ticket)
        return ticket

    def _heaviest_waiting(self, agent: str | None, peer: str | None) -> Ticket | None:
        """The waiting request to refuse instead of the newcomer's: the latest of a holder that holds more
        places than the newcomer's address would, else (within the newcomer's address) more than its id would."""
        counted = [ticket for ticket in self.tickets if ticket.agent is not None]
        newcomer = Ticket(agent, peer)
        for key, level in ((_by_peer, counted), (_by_agent, [ticket for ticket in counted if ticket.peer == peer])):
            shares = Counter(key(ticket) for ticket in level)
            mine = shares[key(newcomer)] + 1
            for holder, held in shares.most_common():
                if held <= mine:
                    break
                waiting = [ticket for ticket in level if key(ticket) == holder and ticket.waiting]
                if waiting:
                    return waiting[-1]  # the one that has waited least
        return None

    def _evict(self, ticket: Ticket) -> None:
        ticket.evicted = True
        self.tickets.remove(ticket)
        if ticket.waiter is not None:
            ticket.waiter.cancel()

    def refusal(self, ticket: Ticket) -> QueueFull:
        """What an evicted request answers."""
        return QueueFull(self.model_id, self.retry_after(), evicted=True)

    def leave(self, ticket: Ticket) -> None:
        if ticket in self.tickets:
            self.tickets.remove(ticket)

    @asynccontextmanager
    async def slot(self, ticket: Ticket) -> AsyncIterator[Hold]:
        """Wait for the ticket's fair turn at one of the model's slots, and hold it."""
        async with self.gate.slot(ticket.agent or "") as hold:
            ticket.hold = hold
            try:
                yield hold
            finally:
                ticket.hold = None

    def exclusive(self) -> AbstractAsyncContextManager[None]:
        """Every slot at once (an unload): after the requests running, before the ones waiting."""
        return self.gate.exclusive()


def _by_peer(ticket: Ticket) -> object:
    return ticket.peer


def _by_agent(ticket: Ticket) -> object:
    return ticket.agent


__all__ = ["Admission", "FairGate", "Hold", "QueueFull", "Ticket"]
