"""Continuous batching: several requests decoded together in one llama.cpp context ("slots").

One scheduler thread per model owns a context with `parallel` sequences, each with its own KV
stream of `slot_ctx` tokens. Every step it builds one llama_batch holding the next token of each
generating slot plus a chunk of any prompt still being read, decodes it once, and picks each slot's
next token with its job's TokenStep (job.py), as the one-at-a-time engine does. A small model on a CPU is bound by reading its weights, so one
step over four sequences costs little more than over one: that is the throughput this buys.

A finished request leaves its KV in its slot, and the slot records exactly which tokens that is
(prompt tokens decoded, generated tokens fed back). A new request takes the slot that serves it
best (`choose_slot`: the agent's own, the longest common prefix, an empty one, the least recently
used) and decodes only what the slot does not already hold; the prompt cache
(prompt_cache.py) trims the slot, and saves and restores slot states through host RAM.

Requests talk to the scheduler through queues only. A request submits its `TokenJob` and reads
sampled tokens from the job's own unbounded queue, so a slow reader never stalls the decode loop; turning
tokens into text, UTF-8 and stop strings happens on the request's own thread (see generate.py).

Numerics: a sequence's logits do not depend on which other sequences share its batch as far as
llama.cpp's kernels compute each row alike. F32 weights do (to float rounding; greedy output is
identical, tested); quantized weights on the CPU switch kernels by the number of rows in a batch
(repacked Q4_K: 1-3 rows vs 4 or more), so a greedy run may take the other branch at a near-tie,
exactly as in llama.cpp's own server.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy

from hal0.inference.backend import close_context, context_pointer, model_of, new_context, thread_setter
from hal0.inference.job import TokenJob, TokenStep
from hal0.inference.prompt_cache import SHARED, CacheKey, PromptCache, PromptObserver, as_tokens
from hal0.inference.task import FinishReason
from hal0.inference.threads import ThreadGovernor

log = logging.getLogger("hal0.inference")

END = "end"  # (END, FinishReason)
NEXT = "next"  # (NEXT, Sampled): one generated token
ERROR = "error"  # (ERROR, exception)


class StepObserver(Protocol):
    """Told about every decode step (metrics), on the scheduler thread."""

    def decode_step(self, generated: int, batch_tokens: int) -> None: ...


@dataclass(eq=False)
class _Slot:
    seq: int
    request: TokenJob | None = None
    step: TokenStep | None = None  # the request's token choice
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet decoded
    # Exactly the tokens whose KV the sequence holds, position by position; it outlives the request.
    tokens: list[int] = field(default_factory=list)
    staged: list[int] = field(default_factory=list)  # in this step's batch; held once it decodes
    n_past: int = 0  # the next position: len(tokens) between steps
    agent: str | None = None  # whose request the slot holds or last held
    key: CacheKey = SHARED  # the CacheKey of that request: who may reuse what of `tokens`
    used: int = 0  # admission counter value when it was last taken (least recently used = lowest)
    last: int | None = None  # sampled token to feed at the next step
    logits_at: int = -1  # index in this step's batch whose logits this slot samples


class BatchScheduler:
    """The decode loop over `n_slots` sequences of one model."""

    def __init__(
        self,
        llama: Any,
        *,
        n_slots: int,
        slot_ctx: int,
        n_batch: int,
        n_ubatch: int,
        default_seed: int | None,
        prompt_cache_bytes: int = 0,
        observer: StepObserver | None = None,
        prompt_observer: PromptObserver | None = None,
        governor: ThreadGovernor | None = None,
    ) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._llama_model = model_of(llama)
        self._vocab = self._llama_model.vocab
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.n_slots = n_slots
        self.slot_ctx = slot_ctx
        self._n_batch = n_batch
        self._default_seed = default_seed
        self._observer = observer
        params = type(llama.context_params).from_buffer_copy(llama.context_params)
        params.n_ctx = slot_ctx * n_slots
        params.n_batch = n_batch
        params.n_ubatch = min(n_batch, n_ubatch)
        params.n_seq_max = n_slots
        # One KV stream per sequence: a slot's attention only ever covers its own cells, and one
        # long conversation can never use up the cache of the others.
        params.kv_unified = False
        params.embeddings = False
        self._context = new_context(self._llama_model, params)
        self._ctx_ptr = context_pointer(self._context)
        self._governor = governor
        self._set_threads = thread_setter(self._ctx_ptr)
        self._memory = llama_cpp.llama_get_memory(self._ctx_ptr)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._slots = [_Slot(seq) for seq in range(n_slots)]
        self._cache = PromptCache(self._ctx_ptr, self._llama_model.model, prompt_cache_bytes, prompt_observer)
        self._admissions = 0
        self._inbox: queue.SimpleQueue[TokenJob | None] = queue.SimpleQueue()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="hal0-batch", daemon=True)
        self._thread.start()

    @property
    def model(self) -> Any:
        """The llama-cpp-python model the slots run (backend.model_of: its vocabulary, for the engine)."""
        return self._llama_model

    @property
    def busy_slots(self) -> int:
        return sum(1 for slot in self._slots if slot.request is not None)

    def submit(self, request: TokenJob) -> None:
        """Queue a request; the caller (admission) guarantees a slot will be free for it."""
        if len(request.prompt) >= self.slot_ctx:
            raise ValueError(f"Requested tokens ({len(request.prompt)}) exceed context window of {self.slot_ctx}")
        if not request.prompt:
            raise ValueError("the prompt is empty")
        self._inbox.put(request)

    def wait_freed(self, request: TokenJob) -> None:
        """Block until the scheduler has ended `request` (its reader set `done` or `cancel`), reading
        away the tokens it still sent; returns at once if the scheduler has stopped."""
        while self._thread.is_alive():
            try:
                kind, _ = request.out.get(timeout=0.5)
            except queue.Empty:
                continue
            if kind in (END, ERROR):
                return

    def close(self) -> None:
        self._closing = True
        self._inbox.put(None)
        self._thread.join(timeout=30)
        if self._batch is not None:
            self._llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        self._cache.clear()  # the states belong to this context: they go with it
        close_context(self._context)

    # --- the scheduler thread -------------------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            try:
                self._admit()
                if not self._closing:
                    self._step()
            except BaseException as error:  # a bug here must end requests, never hang them
                log.exception("batch scheduler step failed")
                for slot in self._slots:
                    if slot.request is not None:
                        self._finish(slot, ERROR, error)
        for slot in self._slots:
            if slot.request is not None:
                self._finish(slot, END, FinishReason.CANCELLED)

    def _admit(self) -> None:
        idle = all(slot.request is None for slot in self._slots)
        while True:
            try:
                # Block only when there is nothing to decode; otherwise take what has arrived.
                request = self._inbox.get() if idle else self._inbox.get_nowait()
            except queue.Empty:
                return
            if request is None:
                return
            prompt = as_tokens(request.prompt)
            slot = choose_slot(self._slots, self._cache, prompt, request.agent, request.cache_key)
            if slot is None:  # admission is bounded by the slot count; never expected
                request.out.put((ERROR, RuntimeError("no free slot")))
                continue
            try:
                self._start(slot, request, prompt)
            except Exception as error:  # this request ends, and its slot is cleared; the others go on
                log.exception("starting a request in slot %d failed", slot.seq)
                self._finish(slot, ERROR, error)
            idle = False

    def _start(self, slot: _Slot, request: TokenJob, prompt: numpy.ndarray) -> None:
        slot.request = request  # first: a failure below ends this request (see _admit)
        keep = self._cache.prepare(slot.seq, as_tokens(slot.tokens), prompt, slot.key, request.cache_key)
        self._admissions += 1
        slot.agent = request.agent
        slot.key = request.cache_key
        slot.used = self._admissions
        slot.tokens = list(request.prompt[:keep])
        slot.staged = []
        slot.step = TokenStep(request, self._llama_model, self._n_vocab, self._default_seed)
        slot.pending = list(request.prompt[keep:])
        slot.n_past = keep
        slot.last = None

    def _step(self) -> None:
        for slot in self._slots:
            ended = slot.request.interrupted() if slot.request is not None else None
            if ended is not None:
                self._finish(slot, END, ended)
        batch = self._batch
        n = 0
        # Generating slots first: one token each, so their pace never depends on prompt lengths.
        for slot in self._slots:
            slot.logits_at = -1
            if slot.request is not None and slot.last is not None:
                self._put(batch, n, slot.last, slot.n_past, slot.seq, True)
                slot.staged.append(slot.last)
                slot.logits_at = n
                slot.n_past += 1
                n += 1
        # Then prompt chunks, oldest request first, in what is left of n_batch.
        waiting = sorted((slot for slot in self._slots if slot.request is not None and slot.pending), key=lambda s: s.request.submitted)  # type: ignore[union-attr]
        for slot in waiting:
            room = self._n_batch - n
            if room <= 0:
                break
            chunk, slot.pending = slot.pending[:room], slot.pending[room:]
            slot.staged.extend(chunk)
            for offset, token in enumerate(chunk):
                last = not slot.pending and offset == len(chunk) - 1
                self._put(batch, n, token, slot.n_past, slot.seq, last)
                if last:
                    slot.logits_at = n
                slot.n_past += 1
                n += 1
        if n == 0:
            return
        batch.n_tokens = n
        governor = self._governor
        if governor is not None:
            governor.apply(self._set_threads)
        started = time.perf_counter()
        code = self._llama_cpp.llama_decode(self._ctx_ptr, batch)
        if governor is not None and code == 0 and not waiting:  # generation steps only: one token per slot
            governor.record(n, time.perf_counter() - started)
        if code != 0:
            # What a failed decode left in the KV is unknown: every slot in the batch ends and is cleared.
            error = RuntimeError(f"llama_decode returned {code}")
            for slot in self._slots:
                if slot.request is not None and slot.staged:
                    self._finish(slot, ERROR, error)
            return
        for slot in self._slots:
            if slot.staged:
                slot.tokens.extend(slot.staged)
                slot.staged = []
        sampled = 0
        for slot in self._slots:
            if slot.request is not None and slot.logits_at >= 0:
                sampled += 1
                try:
                    self._sample(slot)
                except Exception as error:  # one request's sampling problem ends that request only
                    log.exception("sampling failed for slot %d", slot.seq)
                    self._finish(slot, ERROR, error)
        if self._observer is not None:
            self._observer.decode_step(sampled, n)

    @staticmethod
    def _put(batch: Any, index: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch.token[index] = token
        batch.pos[index] = pos
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = seq
        batch.logits[index] = logits

    def _sample(self, slot: _Slot) -> None:
        request, step = slot.request, slot.step
        assert request is not None and step is not None
        sampled = step.sample(self._ctx_ptr, slot.logits_at)
        if isinstance(sampled, FinishReason):
            self._finish(slot, END, sampled)
            return
        request.out.put((NEXT, sampled))
        slot.last = sampled.token
        ended = step.ended(slot.n_past, self.slot_ctx)
        if ended is not None:
            self._finish(slot, END, ended)

    def _finish(self, slot: _Slot, kind: str, value: Any) -> None:
        request = slot.request
        slot.request = None
        slot.pending = []
        slot.last = None
        # The KV stays for the next request that shares its prefix (slot.tokens says what it is);
        # after an error what it holds is not known for sure, so it goes.
        if kind == ERROR or slot.staged:
            self._llama_cpp.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
            slot.tokens, slot.staged, slot.n_past = [], [], 0
        if slot.step is not None:
            slot.step.close()
            slot.step = None
        if request is not None:
            request.out.put((kind, value))


# A slot serving less than this share of the prompt is not chosen for its prefix (llama-server's
# --slot-prompt-similarity default): every prompt shares its first token (BOS) with every slot.
_MIN_PREFIX_SHARE = 0.1


def choose_slot(slots: list[_Slot], cache: PromptCache, prompt: numpy.ndarray, agent: str | None, key: CacheKey = SHARED) -> _Slot | None:
    """The idle slot for `prompt`: the one holding this agent's last sequence when the prompt
    continues it, else the one serving the longest prefix of it, else an empty one, else this
    agent's own, else the least recently used; None if all are busy.

    A slot chosen for its prefix loses the rest of what it holds (to the RAM cache, or for good), so
    an empty slot goes first unless the prefix is at least half of what that slot holds; and an agent
    that must displace someone displaces itself first. (Requests without X-hal0-Agent all carry the
    default agent: the prefix rules, not identity, place them.) A prefix counts only as far as `key`
    may reuse it, so where another agent's slot would serve more changes nothing.
    """
    idle = [slot for slot in slots if slot.request is None]
    if not idle:
        return None
    own = max((slot for slot in idle if agent is not None and slot.agent == agent and slot.tokens), key=lambda slot: slot.used, default=None)
    if own is not None and cache.usable(own.seq, as_tokens(own.tokens), prompt, key.reusable(own.key)) > 1:
        return own
    empty = next((slot for slot in idle if not slot.tokens), None)
    served = [(cache.usable(slot.seq, as_tokens(slot.tokens), prompt, key.reusable(slot.key)), slot) for slot in idle if slot.tokens]
    if served:
        same, best = max(served, key=lambda pair: (pair[0], pair[1].used))
        if same > 1 and same >= _MIN_PREFIX_SHARE * len(prompt) and (empty is None or 2 * same >= len(best.tokens)):
            return best
    return empty or own or min(idle, key=lambda slot: slot.used)
