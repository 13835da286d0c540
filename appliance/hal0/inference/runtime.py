"""One model in memory: its load state, its single worker thread and its admission (admission.py).

llama.cpp contexts are not thread-safe, so each model owns exactly one worker thread and runs one
generation at a time. Requests beyond the one running wait in a bounded queue, counted and ordered by
the model's `Admission`; one more than `queue_limit` is refused at once (QueueFull -> 503 + Retry-After).

A running generation is never cut off by a newer request. It ends when it is done, when its
client goes away (the caller sets `cancel`), or at its deadline; both are checked by a stopping
criterion inside llama.cpp's token loop, so cancellation frees the model within one token.

With `parallel` > 1 the model has that many slots instead of one turn: a BatchScheduler thread
decodes all running requests together (batching.py), each request runs its template and text
assembly on a thread of its own, and the queue holds requests beyond the slots.

Either way a request is a Task run by `start(task)`: the same code (generate.py) over one of two
engines (engines.py), bridged to the event loop by a Generation (bridge.py); its metrics are recorded
here, once, when it ends. Embeddings run in a context of their own (embeddings.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Protocol

from hal0.config.models import ModelConfig
from hal0.inference.admission import Admission, Hold, Ticket
from hal0.inference.backend import captured_log, layer_count
from hal0.inference.batching import BatchScheduler
from hal0.inference.bridge import Generation, until_done
from hal0.inference.devices import check_offload, devices
from hal0.inference.embeddings import EMBED_GROUP, Embedder, check_embedding, merge_embeddings
from hal0.inference.engines import BatchedEngine, SingleEngine
from hal0.inference.generate import LoadedModel, task_prompt
from hal0.inference.native_tools import tool_syntax
from hal0.inference.offload import Offload, OffloadUnknown, read_load_log
from hal0.inference.prompt_cache import MIB, CacheSize, PromptReuse
from hal0.inference.state import ModelState, ModelUnavailable
from hal0.inference.task import Finish, Task
from hal0.inference.templates import template_for
from hal0.inference.threads import ThreadGovernor, effective_threads

log = logging.getLogger("hal0.inference")

_SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}
_SPARE_CTX = 256  # context of the Llama object when the scheduler owns the real one


class RuntimeObserver(Protocol):
    """Metrics hooks a runtime calls (from any thread)."""

    def queue_wait(self, model: str, seconds: float) -> None: ...

    def decode_step(self, model: str, generated: int, batch_tokens: int) -> None: ...

    def record_generation(self, model: str, prompt_tokens: int, generated_tokens: int, ttft: float | None) -> None: ...

    def prompt_reuse(self, model: str, reuse: PromptReuse) -> None: ...

    def prompt_cache_size(self, model: str, size: CacheSize) -> None: ...


class _EngineReporter:
    """Adapts the engines' reports (decode steps, prompt reuse, RAM cache size) to the runtime's
    observer, naming the model."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self._runtime = runtime

    def decode_step(self, generated: int, batch_tokens: int) -> None:
        observer = self._runtime.observer
        if observer is not None:
            observer.decode_step(self._runtime.id, generated, batch_tokens)

    def prompt_reuse(self, reuse: PromptReuse) -> None:
        observer = self._runtime.observer
        if observer is not None:
            observer.prompt_reuse(self._runtime.id, reuse)

    def prompt_cache_size(self, size: CacheSize) -> None:
        observer = self._runtime.observer
        if observer is not None:
            observer.prompt_cache_size(self._runtime.id, size)


def llama_kwargs(config: ModelConfig, verbose: bool, threads: int) -> dict[str, Any]:
    """The llama-cpp-python constructor arguments for a model config run with `threads` threads."""
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
        # Sliding-window layers (Gemma 3) keep only their window of KV, as in llama-server: a full-size
        # cache would attend over every cell of the context on those layers too. The prompt cache
        # checks that a reused prefix still has the cells it needs (prompt_cache.usable_prefix).
        "swa_full": False,
    }
    if config.seed >= 0:
        kwargs["seed"] = config.seed
    if config.tensor_split is not None:
        kwargs["tensor_split"] = list(config.tensor_split)
    kwargs["n_threads"] = threads
    kwargs["n_threads_batch"] = config.n_threads_batch or threads
    return kwargs


class ModelRuntime:
    """A configured model and, once loaded, its llama.cpp instance."""

    def __init__(self, config: ModelConfig, *, verbose: bool = False) -> None:
        self.config = config
        self.state = ModelState.UNLOADED
        self.error: str | None = None
        self.loaded_at: float | None = None
        self.offload: Offload | None = None  # where the loaded model runs, from llama.cpp's load log
        self._verbose = verbose or config.n_gpu_layers != 0  # so the journal shows llama.cpp's per-layer device assignment
        # null means the physical cores this process may use, not llama-cpp-python's cpu_count // 2;
        # the batched scheduler copies the Llama's context params, so both modes run alike.
        self.n_threads = effective_threads(config.n_threads)
        self._llama: Any = None
        self._loaded: LoadedModel | None = None
        self._embedder = Embedder(lambda: llama_kwargs(self.config, self._verbose, self.n_threads))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hal0-{config.id}")
        self.observer: RuntimeObserver | None = None
        # Slots (parallel > 1): a thread per running request for its chat handler and text, and the
        # scheduler once loaded. The admission counts the model's requests and hands out its slots.
        self.slots = config.parallel
        self.admission = Admission(config.id, self.slots)
        self._requests = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix=f"hal0-{config.id}-req") if self.slots > 1 else None
        self._scheduler: BatchScheduler | None = None
        self._single: SingleEngine | None = None

    @property
    def id(self) -> str:
        return self.config.id

    async def load(self) -> None:
        self.state = ModelState.LOADING
        self.error = None
        try:
            self._llama = await asyncio.get_running_loop().run_in_executor(self._executor, self._load_sync)
        except Exception as error:  # noqa: BLE001 - any load failure is reported, the server stays up
            self.state = ModelState.FAILED
            self.error = f"{type(error).__name__}: {error}"
            log.error("model %s failed to load from %s: %s", self.id, self.config.path, self.error)
            return
        self.state = ModelState.READY
        self.loaded_at = time.time()
        log.info("model %s ready (%s, n_gpu_layers=%s): %s", self.id, self.config.path, self.config.n_gpu_layers, _describe(self.offload))

    def _load_sync(self) -> Any:
        import os

        if not os.path.isfile(self.config.path):
            raise FileNotFoundError(f"model file not found: {self.config.path}")
        check_offload(self.id, self.config.n_gpu_layers)  # never silently on the CPU
        self.offload = None
        # Everything llama.cpp logs while the model and its contexts are made says where they went.
        with captured_log() as load_log:
            llama = self._construct()
        try:
            self.offload = read_load_log(load_log, devices(), layer_count(llama))
        except OffloadUnknown as error:
            log.warning("model %s: where its layers run is not reported: %s", self.id, error)
        return llama

    def _construct(self) -> Any:
        """The model's Llama, its engine and LoadedModel (on the model's worker thread)."""
        from llama_cpp import Llama

        kwargs = llama_kwargs(self.config, self._verbose, self.n_threads)
        seed = self.config.seed if self.config.seed >= 0 else None
        # The prompt cache is made with the engine, over its context: a new load starts it empty.
        cache_bytes = self.config.prompt_cache_mib * MIB
        # A model's one decode loop (the single engine or the scheduler) owns its governor.
        governor = ThreadGovernor(kwargs["n_threads"], kwargs["n_threads_batch"]) if self.config.adaptive_threads else None
        if self.slots == 1:
            llama = Llama(**kwargs)
            engine = SingleEngine(llama, seed, cache_bytes, _EngineReporter(self), governor)
            self._single = engine
            template = template_for(llama, self.config.chat_template_file)
            self._loaded = LoadedModel(llama, template, engine, self.config.prompt_cache_scope, tool_syntax(template, self.config.tool_format))
            return llama
        # The Llama serves tokenizer, metadata and chat template; the scheduler's own context
        # (n_seq_max = parallel) holds the KV cache, so the Llama's context is kept tiny.
        kwargs["n_ctx"] = kwargs["n_batch"] = kwargs["n_ubatch"] = _SPARE_CTX
        llama = Llama(**kwargs)
        template = template_for(llama, self.config.chat_template_file)
        self._scheduler = BatchScheduler(
            llama,
            n_slots=self.slots,
            slot_ctx=self.config.slot_ctx,
            n_batch=self.config.n_batch,
            n_ubatch=self.config.n_ubatch,
            default_seed=self.config.seed if self.config.seed >= 0 else None,
            prompt_cache_bytes=cache_bytes,
            observer=_EngineReporter(self),
            prompt_observer=_EngineReporter(self),
            governor=governor,
        )
        syntax = tool_syntax(template, self.config.tool_format)
        self._loaded = LoadedModel(llama, template, BatchedEngine(self._scheduler), self.config.prompt_cache_scope, syntax)
        return llama

    async def unload(self) -> None:
        async with self.admission.exclusive():  # after every running request, before those waiting
            llama, scheduler, single = self._llama, self._scheduler, self._single
            constraints = self._loaded.constraints if self._loaded is not None else None
            self._llama = self._scheduler = self._single = self._loaded = None
            self.offload = None
            self.state = ModelState.UNLOADED
            # The constraint engine first: its thread may still be reading the vocabulary the Llama frees.
            await asyncio.get_running_loop().run_in_executor(self._executor, _close, constraints, single, scheduler, llama, self._embedder)

    def close(self) -> None:
        _close(self._loaded.constraints if self._loaded is not None else None, self._single, self._scheduler, self._llama, self._embedder)
        self._llama = self._scheduler = self._single = self._loaded = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._requests is not None:
            self._requests.shutdown(wait=False, cancel_futures=True)

    @asynccontextmanager
    async def turn(self, ticket: Ticket) -> AsyncIterator[Hold]:
        """Wait for `ticket`'s fair turn at one of this model's slots and hold it; ModelUnavailable when the
        model is not (or no longer, after an unload) loaded."""
        if self.state is not ModelState.READY:
            raise ModelUnavailable(self._unavailable_reason())
        asked = time.perf_counter()
        async with self.admission.slot(ticket) as hold:
            if self.observer is not None:
                self.observer.queue_wait(self.id, time.perf_counter() - asked)
            if self.state is not ModelState.READY:
                raise ModelUnavailable(self._unavailable_reason())
            yield hold

    def _unavailable_reason(self) -> str:
        if self.state is ModelState.FAILED:
            return f"model {self.id!r} failed to load: {self.error}"
        return f"model {self.id!r} is {self.state.value}"

    @property
    def _worker(self) -> ThreadPoolExecutor:
        return self._requests or self._executor

    def start(self, task: Task) -> Generation:
        """The task as a Generation to iterate. Call inside `turn()`."""
        if self._loaded is None:
            raise ModelUnavailable(self._unavailable_reason())
        return Generation(self._loaded, task, self._worker, self._record)

    def _record(self, finish: Finish) -> None:
        observer = self.observer
        if observer is not None:
            observer.record_generation(self.id, finish.usage.prompt_tokens, finish.usage.completion_tokens, finish.ttft)

    async def embed(self, inputs: list[str], cancel: threading.Event, deadline: float, hold: Hold) -> dict[str, Any]:
        """Embeddings of `inputs` (embeddings.py), a few at a time on the model's worker thread, holding
        `hold` (the request's slot, from `turn()`).

        Between pieces the slot goes to whoever waits (`Hold.pass_turn`), so a long list does not hold the
        model from other agents; a set `cancel` (client gone) raises Cancelled and a `deadline` (perf_counter,
        server.request_timeout_s) passed EmbeddingTimeout, each within one piece."""
        loop = asyncio.get_running_loop()
        pieces: list[dict[str, Any]] = []
        for first in range(0, len(inputs), EMBED_GROUP):
            if first:
                await hold.pass_turn()
                if self.state is not ModelState.READY:  # unloaded while another had the slot
                    raise ModelUnavailable(self._unavailable_reason())
            check_embedding(cancel, deadline)
            worker = loop.run_in_executor(self._executor, self._embedder.embed, inputs[first : first + EMBED_GROUP], first)
            try:
                pieces.append(await asyncio.shield(worker))
            except asyncio.CancelledError:
                cancel.set()
                await until_done(worker)  # the slot is held until the worker has really stopped
                raise
        result = merge_embeddings(pieces)
        if self.observer is not None:
            self.observer.record_generation(self.id, result["usage"]["prompt_tokens"], 0, None)
        return result

    async def count_tokens(self, task: Task) -> int:
        """How many prompt tokens `task` would take, without running it (no turn needed: the
        template and the tokenizer only read the model's vocabulary)."""
        if self._loaded is None:
            raise ModelUnavailable(self._unavailable_reason())
        tokens, _stops = await asyncio.to_thread(task_prompt, self._loaded, task)
        return len(tokens)

    @property
    def tool_format(self) -> str | None:
        """How replies call tools: what the loaded template gave (native or generic), else what the
        config asks (None: decided at load)."""
        if self._loaded is not None:
            return "native" if self._loaded.tool_syntax is not None else "generic"
        return self.config.tool_format

    def loaded_or_none(self) -> LoadedModel | None:
        """The loaded model, or None while it is not loaded (it may be by the time a request runs)."""
        return self._loaded

    def loaded(self) -> LoadedModel:
        """The loaded model (tokenizer, template) for work that needs no turn; ModelUnavailable if none."""
        if self._loaded is None:
            raise ModelUnavailable(self._unavailable_reason())
        return self._loaded

    def tokenize(self, text: str) -> list[int]:
        return self._llama.tokenize(text.encode(), add_bos=False, special=True) if self._llama else []


def _describe(offload: Offload | None) -> str:
    """One line for the journal: what llama.cpp did with the layers."""
    if offload is None:
        return "offload not known"
    where = ", ".join(f"{use.device.name} {use.layers}" for use in offload.devices if use.layers)
    return f"{offload.layers_offloaded}/{offload.layers_total} layers offloaded ({offload.backend}; layers on {where})"


def _close(*instances: Any) -> None:
    for instance in instances:
        if instance is not None:
            instance.close()


__all__ = ["ModelRuntime", "RuntimeObserver", "llama_kwargs"]
