"""The two ways a model runs generations, behind one interface.

An engine takes token ids and sampling (a TokenJob) and yields sampled tokens until the job ends:
at an end-of-generation token (STOP), at its token budget or the end of its context (LENGTH), or
when cancelled or past its deadline. Both choose every token with the same TokenStep (job.py);
everything above tokens (templates, text, stop strings, tool calls, logprob text) is the same for
both and lives in generate.py.

- SingleEngine (`parallel: 1`): one generation at a time on the model's own llama.cpp context,
  reusing the KV cache of the previous prompt's common prefix, with the RAM prompt cache behind it
  (prompt_cache.py).
- BatchedEngine (`parallel` > 1): the BatchScheduler decodes all running jobs together.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Protocol

from hal0.inference.backend import context_of, model_of, thread_setter
from hal0.inference.batching import END, ERROR, BatchScheduler
from hal0.inference.job import Sampled, TokenJob, TokenStep
from hal0.inference.prompt_cache import SHARED, CacheKey, PromptCache, PromptObserver, as_tokens
from hal0.inference.task import FinishReason, GenerationFailed
from hal0.inference.threads import ThreadGovernor

__all__ = ["BatchedEngine", "Engine", "Sampled", "SingleEngine", "TokenJob"]


class Engine(Protocol):
    """Runs TokenJobs on the calling thread (a worker thread of the runtime)."""

    @property
    def context(self) -> int:
        """Tokens one sequence may hold: prompt plus generated."""
        ...

    def generate(self, job: TokenJob) -> Iterator[Sampled]:
        """Yield the job's tokens; closing the iterator early ends the job at once (the sequence
        keeps what it decoded, for the next prompt that begins the same way)."""
        ...


class SingleEngine:
    """One generation at a time on the Llama's context (the runtime's single turn guarantees it)."""

    def __init__(self, llama: Any, default_seed: int | None, prompt_cache_bytes: int = 0, observer: PromptObserver | None = None,
                 governor: ThreadGovernor | None = None) -> None:
        self._llama = llama
        self._governor = governor
        self._set_threads = thread_setter(context_of(llama))
        self._n_vocab = llama.n_vocab()
        self._default_seed = default_seed
        self._cache = PromptCache(context_of(llama), model_of(llama).model, prompt_cache_bytes, observer)
        self._held_key = SHARED  # whose request left sequence 0's KV

    @property
    def context(self) -> int:
        return self._llama.n_ctx()

    def generate(self, job: TokenJob) -> Iterator[Sampled]:
        llama = self._llama
        rest = self._reuse_prefix(job.prompt, job.cache_key)
        step = TokenStep(job, model_of(llama), self._n_vocab, self._default_seed)
        ctx = context_of(llama)
        try:
            self._eval(rest)
            while True:
                ended = job.interrupted()
                if ended is not None:
                    job.finish = ended
                    return
                sampled = step.sample(ctx, -1)
                if isinstance(sampled, FinishReason):
                    job.finish = sampled
                    return
                yield sampled
                ended = step.ended(llama.n_tokens, self.context)
                if ended is not None:
                    job.finish = ended
                    return
                self._eval([sampled.token])
        finally:
            step.close()

    def _reuse_prefix(self, prompt: list[int], key: CacheKey) -> list[int]:
        """Keep the KV cells of the longest prefix the last prompt (or the RAM cache) holds that `key`
        may reuse; return what is left to decode (at least one token, so the logits are fresh)."""
        llama = self._llama
        # Sequence 0 holds exactly input_ids[:n_tokens]: Llama.eval records every token it decodes,
        # and a failed eval resets n_tokens.
        try:
            keep = self._cache.prepare(0, as_tokens(llama.input_ids[: llama.n_tokens]), as_tokens(prompt), self._held_key, key)
        except Exception:
            llama.reset()  # what the sequence holds is no longer known: the next eval clears it
            raise
        # After a restore the sequence holds the entry's tokens, trimmed to the prompt's first `keep`.
        llama.input_ids[:keep] = prompt[:keep]
        llama.n_tokens = keep
        self._held_key = key  # from here on the sequence holds this request's tokens
        if keep == 0:
            llama.reset()
        return list(prompt[keep:])

    def close(self) -> None:
        self._cache.clear()

    def _eval(self, tokens: list[int]) -> None:
        governor = self._governor
        if governor is not None:
            governor.apply(self._set_threads)
        started = time.perf_counter()
        try:
            self._llama.eval(tokens)
        except RuntimeError as error:
            self._llama.reset()  # the cache no longer matches input_ids
            raise GenerationFailed(str(error)) from error
        if governor is not None and len(tokens) == 1:  # generation steps: prompts vary too much to compare
            governor.record(1, time.perf_counter() - started)


class BatchedEngine:
    """Jobs go to the model's BatchScheduler; this thread only reads its tokens back."""

    def __init__(self, scheduler: BatchScheduler) -> None:
        self._scheduler = scheduler

    @property
    def context(self) -> int:
        return self._scheduler.slot_ctx

    def generate(self, job: TokenJob) -> Iterator[Sampled]:
        self._scheduler.submit(job)
        ended = False
        try:
            while True:
                kind, value = job.out.get()
                if kind == END:
                    ended = True
                    job.finish = value
                    return
                if kind == ERROR:
                    ended = True
                    raise GenerationFailed(str(value)) from value
                if job.first_token_at is None:
                    job.first_token_at = time.perf_counter()
                yield value
        finally:
            if not ended:
                # The reader stopped (stop string, client gone): free the slot, and wait until it is
                # free, so the next request (this agent's next turn, say) finds it idle, with its KV.
                job.done = True
                self._scheduler.wait_freed(job)
