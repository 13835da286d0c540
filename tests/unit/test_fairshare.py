"""The fair-share gate on its own, on a real event loop: round-robin across agents, FIFO within one."""

from __future__ import annotations

import asyncio

from hal0.inference.admission import FairGate


async def _run(gate: FairGate, arrivals: list[str]) -> list[str]:
    """Each arrival takes the gate, holds it until told to go, and records when it got in."""
    order: list[str] = []
    release: dict[int, asyncio.Event] = {}

    async def one(index: int, agent: str) -> None:
        async with gate.slot(agent):
            order.append(f"{agent}{index}")
            release[index] = asyncio.Event()
            await release[index].wait()

    tasks = []
    for index, agent in enumerate(arrivals):
        tasks.append(asyncio.create_task(one(index, agent)))
        await asyncio.sleep(0)  # arrive in this order
    while len(order) < len(arrivals):
        await asyncio.sleep(0)
        for index in list(release):
            release.pop(index).set()  # let whoever holds the gate finish
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return order


def test_one_slot_round_robin_across_agents_fifo_within_one() -> None:
    gate = FairGate(1)
    order = asyncio.run(_run(gate, ["a"] * 6 + ["b"] + ["c", "c"]))
    # a0 runs at once; then b and c, never served, go before a's backlog; then a, c, a, a...
    assert order[:3] == ["a0", "b6", "c7"]
    assert [entry for entry in order if entry.startswith("a")] == ["a0", "a1", "a2", "a3", "a4", "a5"]
    assert order.index("c8") < order.index("a3")
    assert gate.holders == 0 and gate.waiting == 0


def test_two_slots_let_two_through_and_a_cancelled_waiter_gives_its_turn_away() -> None:
    async def scenario() -> list[str]:
        gate = FairGate(2)
        got: list[str] = []
        hold = asyncio.Event()

        async def one(name: str) -> None:
            async with gate.slot(name[0]):
                got.append(name)
                await hold.wait()

        first = [asyncio.create_task(one(name)) for name in ("a1", "a2")]
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(one(name)) for name in ("a3", "b1")]
        await asyncio.sleep(0)
        assert got == ["a1", "a2"] and gate.waiting == 2
        waiting[1].cancel()  # b gives up while waiting
        await asyncio.sleep(0)
        assert gate.waiting == 1
        hold.set()
        await asyncio.gather(*first, waiting[0])
        assert gate.holders == 0
        return got

    assert asyncio.run(scenario()) == ["a1", "a2", "a3"]
