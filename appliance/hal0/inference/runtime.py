"""One model in memory: its load state, its single worker thread and its bounded wait queue.

llama.cpp contexts are not thread-safe, so each model owns exactly one worker thread and runs one
generation at a time. Requests beyond the one running wait in a bounded queue; one more than
`queue_limit` is refused at once (QueueFull -> 503 + Retry-After) rather than piling up.

A running generation is never cut off by a newer request. It ends when it is done, when its
client goes away (the caller sets `cancel`), or at its deadline; both are checked by a stopping
criterion inside llama.cpp's token loop, so cancellation frees the model within one token.

With `parallel` > 1 the model has that many slots instead of one turn: a BatchScheduler thread
decodes all running requests together (batching.py), each request runs its chat handler and
text assembly on a thread of its own (completion.py), and the queue holds requests beyond the
slots. `parallel: 1` keeps the single-turn path above, unchanged.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from hal0.config.models import ModelConfig
from hal0.inference.batching import BatchScheduler
from hal0.inference.completion import SlotLlama

log = logging.getLogger("hal0.inference")

_SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}
_POOLING_MEAN = 1
_SPARE_CTX = 256  # context of the Llama object when the scheduler owns the real one


class RuntimeObserver(Protocol):
    """Metrics hooks a runtime calls (from any thread)."""

    def queue_wait(self, model: str, seconds: float) -> None: ...

    def decode_step(self, model: str, generated: int, batch_tokens: int) -> None: ...


class _StepReporter:
    """Adapts the scheduler's per-step callback to the runtime's observer, naming the model."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self._runtime = runtime

    def decode_step(self, generated: int, batch_tokens: int) -> None:
        observer = self._runtime.observer
        if observer is not None:
            observer.decode_step(self._runtime.id, generated, batch_tokens)


class LoadState(enum.StrEnum):
    PENDING = "pending"
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADED = "unloaded"


class QueueFull(Exception):
    """The model's wait queue is full; retry after `retry_after` seconds."""

    def __init__(self, model_id: str, retry_after: int) -> None:
        super().__init__(f"model {model_id!r} is busy and its queue is full; retry after {retry_after}s")
        self.retry_after = retry_after


class ModelUnavailable(Exception):
    """The model is not loaded (still loading, failed, or unloaded)."""


@dataclass
class Guard:
    """Per-request state read inside llama.cpp's token loop (on the worker thread)."""

    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: float = float("inf")
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    timed_out: bool = False
    prompt_tokens: int = 0
    generated: int = 0
    context_limit: int = 0  # set by the runtime: stop cleanly before llama.cpp runs out of KV cache

    def __call__(self, input_ids: Any, _logits: Any) -> bool:
        # Called once per generated token; at the first call input_ids holds the evaluated prompt.
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
            self.prompt_tokens = len(input_ids)
        self.generated += 1
        if self.context_limit and len(input_ids) >= self.context_limit - 1:
            return True  # a full context ends the generation (finish "length"-like), not llama_decode failing
        if now > self.deadline:
            self.timed_out = True
            return True
        return self.cancel.is_set()

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started


def _llama_class() -> type:
    from llama_cpp import Llama, StoppingCriteriaList

    class GuardedLlama(Llama):  # type: ignore[misc]
        """Llama whose every completion (chat handlers call create_completion too) obeys the
        guard of the request running on this model's worker thread."""

        hal0_guard: Guard | None = None

        def create_completion(self, *args: Any, **kwargs: Any) -> Any:
            guard = self.hal0_guard
            if guard is not None:
                criteria = kwargs.get("stopping_criteria") or StoppingCriteriaList()
                kwargs["stopping_criteria"] = StoppingCriteriaList([*criteria, guard])
            return super().create_completion(*args, **kwargs)

    return GuardedLlama


def llama_kwargs(config: ModelConfig, verbose: bool) -> dict[str, Any]:
    """The llama-cpp-python constructor arguments for a model config."""
    kwargs: dict[str, Any] = {
        "model_path": config.path,
        "n_gpu_layers": config.n_gpu_layers,
        "main_gpu": config.main_gpu,
        "split_mode": _SPLIT_MODES[config.split_mode],
        "n_ctx": config.n_ctx,
        "n_batch": config.n_batch,
        "n_ubatch": config.n_ubatch,
        "flash_attn": config.flash_attn,
        "offload_kqv": config.offload_kqv,
        "use_mmap": config.use_mmap,
        "use_mlock": config.use_mlock,
        "chat_format": config.chat_format,
        "verbose": verbose,
    }
    if config.seed >= 0:
        kwargs["seed"] = config.seed
    if config.tensor_split is not None:
        kwargs["tensor_split"] = list(config.tensor_split)
    if config.n_threads is not None:
        kwargs["n_threads"] = config.n_threads
    if config.n_threads_batch is not None:
        kwargs["n_threads_batch"] = config.n_threads_batch
    return kwargs


class ModelRuntime:
    """A configured model and, once loaded, its llama.cpp instance."""

    def __init__(self, config: ModelConfig, *, verbose: bool = False) -> None:
        self.config = config
        self.state = LoadState.PENDING
        self.error: str | None = None
        self.loaded_at: float | None = None
        self._verbose = verbose or config.n_gpu_layers != 0  # so the journal shows "offloaded N/M layers"
        self._llama: Any = None
        self._embedder: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hal0-{config.id}")
        self._admitted = 0  # running + waiting
        self._turn = asyncio.Lock()
        self.observer: RuntimeObserver | None = None
        # Slots (parallel > 1): a semaphore instead of the single turn, a thread per running
        # request for its chat handler and text, and the scheduler once loaded.
        self.slots = config.parallel
        self._slot_sem = asyncio.Semaphore(self.slots)
        self._requests = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix=f"hal0-{config.id}-req") if self.slots > 1 else None
        self._scheduler: BatchScheduler | None = None

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def waiting(self) -> int:
        return max(0, self._admitted - self.slots)

    @property
    def busy_slots(self) -> int:
        return min(self._admitted, self.slots)

    @property
    def busy(self) -> bool:
        return self._admitted > 0

    async def load(self) -> None:
        self.state = LoadState.LOADING
        self.error = None
        try:
            self._llama = await asyncio.get_running_loop().run_in_executor(self._executor, self._load_sync)
        except Exception as error:  # noqa: BLE001 - any load failure is reported, the server stays up
            self.state = LoadState.FAILED
            self.error = f"{type(error).__name__}: {error}"
            log.error("model %s failed to load from %s: %s", self.id, self.config.path, self.error)
            return
        self.state = LoadState.READY
        self.loaded_at = time.time()
        log.info("model %s ready (%s, n_gpu_layers=%s)", self.id, self.config.path, self.config.n_gpu_layers)

    def _load_sync(self) -> Any:
        import os

        if not os.path.isfile(self.config.path):
            raise FileNotFoundError(f"model file not found: {self.config.path}")
        kwargs = llama_kwargs(self.config, self._verbose)
        if self.slots == 1:
            return _llama_class()(**kwargs)
        # The Llama serves tokenizer, metadata and chat handler; the scheduler's own context
        # (n_seq_max = parallel) holds the KV cache, so the Llama's context is kept tiny.
        kwargs["n_ctx"] = kwargs["n_batch"] = kwargs["n_ubatch"] = _SPARE_CTX
        llama = _llama_class()(**kwargs)
        self._scheduler = BatchScheduler(
            llama,
            n_slots=self.slots,
            slot_ctx=self.config.slot_ctx,
            n_batch=self.config.n_batch,
            n_ubatch=self.config.n_ubatch,
            default_seed=self.config.seed if self.config.seed >= 0 else None,
            observer=_StepReporter(self),
        )
        return llama

    async def unload(self) -> None:
        async with self._turn:
            for _ in range(self.slots):  # wait for every running request to end
                await self._slot_sem.acquire()
            try:
                llama, embedder, scheduler = self._llama, self._embedder, self._scheduler
                self._llama = self._embedder = self._scheduler = None
                self.state = LoadState.UNLOADED
                await asyncio.get_running_loop().run_in_executor(self._executor, _close, scheduler, llama, embedder)
            finally:
                for _ in range(self.slots):
                    self._slot_sem.release()

    def close(self) -> None:
        _close(self._scheduler, self._llama, self._embedder)
        self._llama = self._embedder = self._scheduler = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._requests is not None:
            self._requests.shutdown(wait=False, cancel_futures=True)

    @asynccontextmanager
    async def turn(self, queue_limit: int) -> AsyncIterator[None]:
        """Wait for one of this model's generation slots, or raise QueueFull at once."""
        if self.state is not LoadState.READY:
            raise ModelUnavailable(self._unavailable_reason())
        if self._admitted >= self.slots + queue_limit:
            raise QueueFull(self.id, retry_after=max(1, self.waiting))
        self._admitted += 1
        asked = time.perf_counter()
        try:
            async with self._turn if self.slots == 1 else self._slot_sem:
                if self.observer is not None:
                    self.observer.queue_wait(self.id, time.perf_counter() - asked)
                if self.state is not LoadState.READY:
                    raise ModelUnavailable(self._unavailable_reason())
                yield
        finally:
            self._admitted -= 1

    def _unavailable_reason(self) -> str:
        if self.state is LoadState.FAILED:
            return f"model {self.id!r} failed to load: {self.error}"
        return f"model {self.id!r} is {self.state.value}"

    @property
    def _worker(self) -> ThreadPoolExecutor:
        return self._requests or self._executor

    async def run(self, work: Callable[[Any, Guard], Any], guard: Guard) -> Any:
        """Run `work(llama, guard)` on the worker thread. Call inside `turn()`."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._guarded, work, guard)

    def _guarded(self, work: Callable[[Any, Guard], Any], guard: Guard) -> Any:
        if self._scheduler is not None:
            return work(SlotLlama(self._llama, self._scheduler, guard), guard)
        self._llama.hal0_guard = guard
        try:
            return work(self._llama, guard)
        finally:
            self._llama.hal0_guard = None

    async def stream(self, work: Callable[[Any, Guard], Iterator[Any]], guard: Guard) -> AsyncIterator[Any]:
        """Run a streaming `work` on the worker thread and yield its items here. Call inside `turn()`.

        Leaving the loop early (client gone) sets the guard's cancel flag; the turn is held until
        the worker thread has really stopped, so the next request never overlaps it.
        """
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def produce() -> None:
            try:
                for item in self._guarded_iter(work, guard):
                    if guard.cancel.is_set():
                        break
                    loop.call_soon_threadsafe(items.put_nowait, ("item", item))
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
            guard.cancel.set()
            await asyncio.shield(worker)

    def _guarded_iter(self, work: Callable[[Any, Guard], Iterator[Any]], guard: Guard) -> Iterator[Any]:
        if self._scheduler is not None:
            yield from work(SlotLlama(self._llama, self._scheduler, guard), guard)
            return
        self._llama.hal0_guard = guard
        try:
            yield from work(self._llama, guard)
        finally:
            self._llama.hal0_guard = None

    async def embed(self, inputs: list[str]) -> dict[str, Any]:
        """Embeddings through a second llama.cpp context over the same (memory-mapped) weights."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._embed_sync, inputs)

    def _embed_sync(self, inputs: list[str]) -> dict[str, Any]:
        if self._embedder is None:
            from llama_cpp import Llama

            kwargs = llama_kwargs(self.config, self._verbose)
            kwargs.update(embedding=True, pooling_type=_POOLING_MEAN)
            self._embedder = Llama(**kwargs)
        return self._embedder.create_embedding(inputs)

    def tokenize(self, text: str) -> list[int]:
        return self._llama.tokenize(text.encode(), add_bos=False, special=True) if self._llama else []


def _close(*instances: Any) -> None:
    for instance in instances:
        if instance is not None:
            instance.close()
