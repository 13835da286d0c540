"""The bridge from a generation on a worker thread to the event loop: `Generation`.

The run (generate.py) happens on the model's worker thread; its events reach the caller through a
queue, so the event loop never waits on llama.cpp. Leaving the iteration early (client gone) cancels
the run and waits until the worker has really stopped, so the model's slot is never overlapped.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any

from hal0.inference.generate import LoadedModel, run
from hal0.inference.task import Event, Finish, Task


class Cancelled(Exception):
    """The caller cancelled the work (its client went away)."""


class Generation:
    """One task running on a model: iterate `events()`; `cancel()` stops it within a token.

    `record` is called once, on the worker thread, with the run's Finish (the one place a
    generation's metrics are recorded, whatever the dialect or engine)."""

    def __init__(self, model: LoadedModel, task: Task, worker: Executor, record: Callable[[Finish], None]) -> None:
        self._loaded = model
        self._task = task
        self._worker = worker
        self._record = record
        self._cancel = threading.Event()
        self.finish: Finish | None = None

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    async def events(self) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        started = time.perf_counter()

        def produce() -> None:
            try:
                for event in run(self._loaded, self._task, self._cancel, started):
                    if isinstance(event, Finish):
                        self.finish = event
                        self._record(event)
                    loop.call_soon_threadsafe(items.put_nowait, ("event", event))
            except BaseException as error:  # noqa: BLE001 - handed to the consumer
                loop.call_soon_threadsafe(items.put_nowait, ("error", error))
            finally:
                loop.call_soon_threadsafe(items.put_nowait, ("end", None))

        worker = loop.run_in_executor(self._worker, produce)
        try:
            while True:
                kind, value = await items.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise value
                yield value
        finally:
            self._cancel.set()
            await until_done(worker)


async def until_done(worker: asyncio.Future[None]) -> None:
    """Wait for `worker` (a generation's thread, a stream's producer) even while the caller is being cancelled
    (a client that left mid-stream; anyio re-delivers the cancellation at every await): the slot is released,
    and the tokens generated are known, only once the worker has really stopped. The cancellation is
    re-raised after; the worker's own outcome is its own (it is not raised here)."""
    cancelled = False
    while not worker.done():
        try:
            await asyncio.shield(worker)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:  # noqa: BLE001 - its failure is for whoever reads its result
            break
    if cancelled:
        raise asyncio.CancelledError


__all__ = ["Cancelled", "Generation", "until_done"]
