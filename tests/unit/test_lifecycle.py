"""Lifecycle and Admission in process, over runtimes whose load needs no GGUF file: everything else (the
registry, ModelRuntime.turn and its unload, the admission count, the fair gate) is the real code, on a real
event loop. Load on demand, keep_alive, the loaded-model limit with pinned models, the queue limit and its
Retry-After, the fair order between agents, and an unload that waits for the requests running."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hal0.config.models import ModelConfig
from hal0.inference.admission import QueueFull
from hal0.inference.lifecycle import Lifecycle, StillLoading
from hal0.inference.registry import ModelRegistry
from hal0.inference.runtime import ModelRuntime
from hal0.inference.state import ModelState, ModelUnavailable


class FakeRuntime(ModelRuntime):
    """A ModelRuntime whose load is instant (or waits for `hold_loads`, or fails), counting loads and unloads."""

    def __init__(self, config: ModelConfig, *, verbose: bool = False) -> None:
        super().__init__(config, verbose=verbose)
        self.loads = 0
        self.unloads = 0
        self.hold_loads: asyncio.Event | None = None
        self.fail = False

    async def load(self) -> None:
        self.state = ModelState.LOADING
        self.loads += 1
        if self.hold_loads is not None:
            await self.hold_loads.wait()
        if self.fail:
            self.state, self.error = ModelState.FAILED, "OSError: no such file"
            return
        self.state, self.error, self.loaded_at = ModelState.READY, None, time.time()

    async def unload(self) -> None:
        await super().unload()  # the real one: it waits for every slot
        self.unloads += 1


class Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def model_loaded(self, model: str, reason: str, seconds: float) -> None:
        self.seen.append(("loaded", model, reason))

    def model_load_failed(self, model: str, reason: str) -> None:
        self.seen.append(("failed", model, reason))

    def model_unloaded(self, model: str, reason: str) -> None:
        self.seen.append(("unloaded", model, reason))


def lifecycle_of(*models: dict[str, Any], max_loaded: int | None = None) -> tuple[Lifecycle, dict[str, FakeRuntime], Observer]:
    configs = [ModelConfig.model_validate({"path": "/nonexistent.gguf", "load": "on_demand", **model}) for model in models]
    registry = ModelRegistry(configs, runtime=FakeRuntime)
    lifecycle = Lifecycle(registry, max_loaded)
    lifecycle.observer = observer = Observer()
    return lifecycle, {runtime.id: runtime for runtime in registry}, observer  # type: ignore[misc]


_HOLDERS: list[Holder] = []


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        try:
            await asyncio.wait_for(scenario(), 10)
        finally:
            # Let every request leave: a failed assertion must fail the test, not leave asyncio.run waiting on
            # a request whose cancellation Python 3.11's wait_for swallowed (a load finishing in the same instant).
            for holder in _HOLDERS:
                holder.go.set()
            _HOLDERS.clear()

    asyncio.run(bounded())


async def settle(turns: int = 5) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool], within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


class Holder:
    """One request through `lifecycle.use`, holding its slot until released; records when it got in."""

    def __init__(self, lifecycle: Lifecycle, runtime: ModelRuntime, agent: str, order: list[str] | None = None,
                 peer: str | None = "10.0.0.1", queue_limit: int = 8, timeout: float = 5.0) -> None:
        self.go = asyncio.Event()
        self.inside = asyncio.Event()
        self.name = agent

        async def body() -> None:
            async with lifecycle.use(runtime, agent, peer, queue_limit, timeout):
                if order is not None:
                    order.append(agent)
                self.inside.set()
                await self.go.wait()

        self.task = asyncio.create_task(body())
        _HOLDERS.append(self)

    async def done(self) -> None:
        self.go.set()
        await self.task


# ---- loads ---------------------------------------------------------------------------------------

def test_an_on_demand_model_loads_once_for_its_concurrent_first_requests() -> None:
    async def scenario() -> None:
        lifecycle, runtimes, observer = lifecycle_of({"id": "m"})
        runtime = runtimes["m"]
        runtime.hold_loads = asyncio.Event()
        assert lifecycle.status(runtime).state is ModelState.UNLOADED
        first, second = Holder(lifecycle, runtime, "a"), Holder(lifecycle, runtime, "b")
        await settle()
        assert lifecycle.status(runtime).state is ModelState.LOADING and lifecycle.status(runtime).waiting == 2
        runtime.hold_loads.set()
        await first.inside.wait()
        assert runtime.loads == 1 and runtime.state is ModelState.READY
        await first.done()
        await second.done()
        assert runtime.loads == 1 and observer.seen == [("loaded", "m", "request")]
        status = lifecycle.status(runtime)
        assert (status.running, status.waiting) == (0, 0)

    run(scenario)


def test_a_load_past_the_timeout_is_still_loading_and_a_failed_load_is_unavailable() -> None:
    async def scenario() -> None:
        lifecycle, runtimes, observer = lifecycle_of({"id": "m"})
        runtime = runtimes["m"]
        runtime.hold_loads = asyncio.Event()
        with pytest.raises(StillLoading) as raised:
            async with lifecycle.use(runtime, "a", None, 4, 0.05):
                pass
        assert raised.value.retry_after >= 1
        runtime.fail = True
        runtime.hold_loads.set()
        with pytest.raises(ModelUnavailable, match="failed to load: OSError: no such file"):
            async with lifecycle.use(runtime, "a", None, 4, 5):
                pass
        assert lifecycle.status(runtime).error == "OSError: no such file"
        assert ("failed", "m", "request") in observer.seen
        assert runtime.admission.admitted == 0  # the refused requests left the count

    run(scenario)


def test_keep_alive_unloads_an_idle_model_but_never_one_in_use() -> None:
    async def scenario() -> None:
        lifecycle, runtimes, observer = lifecycle_of({"id": "m", "keep_alive": "1s"})
        runtime = runtimes["m"]
        background = asyncio.create_task(lifecycle.run())
        try:
            holder = Holder(lifecycle, runtime, "a")
            await holder.inside.wait()
            assert lifecycle.status(runtime).idle_deadline is None  # in use: no deadline
            await asyncio.sleep(1.3)  # past keep_alive, but the request still runs
            assert runtime.state is ModelState.READY and runtime.unloads == 0
            await holder.done()
            assert lifecycle.status(runtime).idle_deadline is not None
            # The state turns UNLOADED a moment before the observer hears why: wait for both.
            await until(lambda: runtime.state is ModelState.UNLOADED and observer.seen[-1] == ("unloaded", "m", "keep_alive"), within=6)
            assert runtime.unloads == 1
        finally:
            background.cancel()

    run(scenario)


# ---- the loaded-model limit ------------------------------------------------------------------

async def use_once(lifecycle: Lifecycle, runtime: ModelRuntime) -> None:
    async with lifecycle.use(runtime, "a", None, 4, 5):
        pass


def test_the_limit_evicts_the_least_recently_used_unpinned_model() -> None:
    async def scenario() -> None:
        lifecycle, runtimes, observer = lifecycle_of({"id": "pinned", "pinned": True}, {"id": "old"}, {"id": "recent"}, {"id": "new"},
                                                     max_loaded=3)
        for name in ("pinned", "old", "recent"):  # pinned is the least recently used of all
            await use_once(lifecycle, runtimes[name])
            await asyncio.sleep(0.01)
        await use_once(lifecycle, runtimes["new"])
        assert {name for name, runtime in runtimes.items() if runtime.state is ModelState.READY} == {"pinned", "recent", "new"}
        assert ("unloaded", "old", "evicted") in observer.seen and lifecycle.loaded_count == 3
        await use_once(lifecycle, runtimes["old"])  # loads again, evicting the next least recently used
        assert runtimes["recent"].state is ModelState.UNLOADED and runtimes["pinned"].state is ModelState.READY

    run(scenario)


def test_a_model_in_use_is_not_evicted_the_load_waits_for_it_to_go_idle() -> None:
    async def scenario() -> None:
        lifecycle, runtimes, _ = lifecycle_of({"id": "busy"}, {"id": "next"}, max_loaded=1)
        holder = Holder(lifecycle, runtimes["busy"], "a")
        await holder.inside.wait()
        waiting = asyncio.create_task(use_once(lifecycle, runtimes["next"]))
        await asyncio.sleep(0.1)
        assert not waiting.done() and runtimes["next"].state is ModelState.UNLOADED and runtimes["busy"].unloads == 0
        await holder.done()
        await waiting
        assert runtimes["busy"].state is ModelState.UNLOADED and runtimes["next"].state is ModelState.READY

    run(scenario)


def test_with_every_loaded_model_pinned_the_load_waits_and_its_waiter_times_out() -> None:
    async def scenario() -> None:
        lifecycle, runtimes, _ = lifecycle_of({"id": "pinned", "pinned": True}, {"id": "other"}, max_loaded=1)
        await use_once(lifecycle, runtimes["pinned"])
        with pytest.raises(StillLoading):
            async with lifecycle.use(runtimes["other"], "a", None, 4, 0.2):
                pass
        assert runtimes["pinned"].state is ModelState.READY and runtimes["other"].loads == 0

    run(scenario)


# ---- admission: the queue limit and the fair order -------------------------------------------------

def test_a_full_queue_refuses_the_newcomer_with_retry_after() -> None:
    async def scenario() -> None:
        lifecycle, runtimes, _ = lifecycle_of({"id": "m"})
        runtime = runtimes["m"]
        holders = [Holder(lifecycle, runtime, "a", queue_limit=2) for _ in range(3)]  # one running, two waiting
        await holders[0].inside.wait()
        await settle()
        status = lifecycle.status(runtime)
        assert (status.running, status.waiting) == (1, 2)
        with pytest.raises(QueueFull) as raised:
            async with lifecycle.use(runtime, "a", "10.0.0.1", 2, 5):
                pass
        assert raised.value.retry_after == 2  # about a second per request waiting
        assert "queue is full" in str(raised.value)
        for holder in holders:
            await holder.done()
        assert runtime.admission.admitted == 0

    run(scenario)


def test_a_newcomer_from_another_client_takes_the_place_of_the_heaviest_client_s_latest_waiter() -> None:
    async def scenario() -> None:
        lifecycle, runtimes, _ = lifecycle_of({"id": "m"})
        runtime = runtimes["m"]
        greedy = [Holder(lifecycle, runtime, "a", queue_limit=2) for _ in range(3)]
        await greedy[0].inside.wait()
        await settle()
        newcomer = Holder(lifecycle, runtime, "b", peer="10.0.0.2", queue_limit=2)
        await settle()
        with pytest.raises(QueueFull, match="holds more of it"):
            await greedy[2].task  # the latest waiter of the client holding most of the queue
        assert not greedy[1].task.done()
        for holder in (greedy[0], newcomer, greedy[1]):
            await holder.done()

    run(scenario)


def test_the_next_slot_goes_to_the_agent_served_least_recently() -> None:
    async def scenario() -> None:
        lifecycle, runtimes, _ = lifecycle_of({"id": "m"})
        runtime = runtimes["m"]
        order: list[str] = []
        holders = [Holder(lifecycle, runtime, agent, order) for agent in ("a", "a", "a", "b", "c")]
        await holders[0].inside.wait()
        await settle()
        for _ in holders:  # release whoever runs, one at a time
            running = next(holder for holder in holders if holder.inside.is_set() and not holder.task.done())
            await running.done()
            await settle()
        assert order == ["a", "b", "c", "a", "a"]  # b and c, never served, before a's backlog

    run(scenario)


def test_two_slots_run_two_requests_at_once() -> None:
    async def scenario() -> None:
        lifecycle, runtimes, _ = lifecycle_of({"id": "m", "parallel": 2})
        runtime = runtimes["m"]
        holders = [Holder(lifecycle, runtime, agent) for agent in ("a", "b", "c")]
        await holders[1].inside.wait()
        await settle()
        assert [holder.inside.is_set() for holder in holders] == [True, True, False]
        assert (lifecycle.status(runtime).running, lifecycle.status(runtime).waiting) == (2, 1)
        for holder in holders:
            await holder.done()

    run(scenario)


# ---- unloads -------------------------------------------------------------------------------

def test_an_unload_waits_for_the_running_request_and_goes_before_the_waiting_one() -> None:
    async def scenario() -> None:
        lifecycle, runtimes, observer = lifecycle_of({"id": "m"})
        runtime = runtimes["m"]
        running = Holder(lifecycle, runtime, "a")
        await running.inside.wait()
        waiting = Holder(lifecycle, runtime, "b")
        await settle()
        unload = asyncio.create_task(lifecycle.unload("m"))
        await asyncio.sleep(0.05)
        assert not unload.done() and runtime.state is ModelState.READY  # the running request is never cut off
        await running.done()
        _, changed = await unload
        assert changed and runtime.unloads == 1 and ("unloaded", "m", "admin") in observer.seen
        await waiting.inside.wait()  # it found the model gone and loaded it again
        assert runtime.loads == 2 and runtime.state is ModelState.READY
        await waiting.done()
        status, changed = await lifecycle.unload("m")
        assert changed and status.state is ModelState.UNLOADED
        assert (await lifecycle.unload("m"))[1] is False  # already unloaded: nothing changed

    run(scenario)


def test_an_admin_load_loads_and_says_whether_it_changed_anything() -> None:
    async def scenario() -> None:
        lifecycle, runtimes, observer = lifecycle_of({"id": "m"})
        status, changed = await lifecycle.load("m", 5)
        assert changed and status.state is ModelState.READY and observer.seen == [("loaded", "m", "admin")]
        assert (await lifecycle.load("m", 5))[1] is False
        assert runtimes["m"].loads == 1

    run(scenario)
