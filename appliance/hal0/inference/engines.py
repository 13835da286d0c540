"""The two ways a model runs generations, behind one interface.

An engine takes token ids and sampling (a TokenJob) and yields sampled tokens until the job ends:
at an end-of-generation token ("stop"), at its token budget or the end of its context ("length"),
or when cancelled or past its deadline. Everything above tokens (templates, text, stop strings,
tool calls, logprob text) is the same for both and lives in generate.py.

- SingleEngine (`parallel: 1`): one generation at a time on the model's own llama.cpp context,
  reusing the KV cache of the previous prompt's common prefix, with the RAM prompt cache behind it
  (prompt_cache.py).
- BatchedEngine (`parallel` > 1): the BatchScheduler decodes all running jobs together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from hal0.inference.batching import END, ERROR, BatchScheduler, Sampled, SlotRequest
from hal0.inference.prompt_cache import PromptCache, PromptObserver, as_tokens
from hal0.inference.sampling import Sampling, build_sampler, greedy_token, is_plain_greedy, logits_row, token_logprobs
from hal0.inference.task import GenerationFailed
from hal0.inference.utf8 import Utf8Guard, Utf8Tables

__all__ = ["BatchedEngine", "Engine", "Sampled", "SingleEngine", "TokenJob"]


@dataclass(eq=False)
class TokenJob:
    """Tokens in; the engine fills in how the job ended and when its first token came."""

    prompt: list[int]
    max_tokens: int
    sampling: Sampling
    cancel: threading.Event
    deadline: float = float("inf")
    grammar: Any = None  # llama_cpp.LlamaGrammar
    top_logprobs: int | None = None
    agent: str | None = None  # who sent it: the batched engine offers it the slot it last used
    finish: str = "stop"  # "stop", "length", "cancelled", "timeout"
    first_token_at: float | None = None


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

    def __init__(self, llama: Any, default_seed: int | None, prompt_cache_bytes: int = 0, observer: PromptObserver | None = None) -> None:
        import llama_cpp

        self._llama = llama
        self._llama_cpp = llama_cpp
        self._n_vocab = llama.n_vocab()
        self._default_seed = default_seed
        self._cache = PromptCache(llama._ctx.ctx, llama._model.model, prompt_cache_bytes, observer)
        self._utf8 = Utf8Tables(llama._model)

    @property
    def context(self) -> int:
        return self._llama.n_ctx()

    def generate(self, job: TokenJob) -> Iterator[Sampled]:
        llama, llama_cpp = self._llama, self._llama_cpp
        rest = self._reuse_prefix(job.prompt)
        plain_greedy = is_plain_greedy(job.sampling, job.grammar)
        sampler = None if plain_greedy else build_sampler(llama._model, self._n_vocab, job.sampling, job.grammar, self._default_seed)
        guard = Utf8Guard(self._utf8.get()) if job.grammar is not None else None
        ctx = llama._ctx.ctx
        vocab = llama._model.vocab
        generated = 0
        try:
            self._eval(rest)
            while True:
                if job.cancel.is_set():
                    job.finish = "cancelled"
                    return
                if time.perf_counter() > job.deadline:
                    job.finish = "timeout"
                    return
                raw = logits_row(ctx, -1, self._n_vocab).copy() if job.top_logprobs is not None else None
                if sampler is None:
                    token = greedy_token(logits_row(ctx, -1, self._n_vocab), job.sampling.logit_bias)
                else:
                    if guard is not None:
                        guard.mask(logits_row(ctx, -1, self._n_vocab))
                    token = llama_cpp.llama_sampler_sample(sampler.sampler, ctx, -1)
                if job.first_token_at is None:
                    job.first_token_at = time.perf_counter()
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    job.finish = "stop"
                    return
                if guard is not None:
                    guard.accept(token)
                logprob, top = token_logprobs(raw, token, job.top_logprobs or 0) if raw is not None else (None, ())
                yield Sampled(token, logprob, top)
                generated += 1
                # The next token needs a cell of its own: end at the budget or a full context, never
                # by llama_decode failing.
                if generated >= job.max_tokens or llama.n_tokens + 1 >= self.context:
                    job.finish = "length"
                    return
                self._eval([token])
        finally:
            if sampler is not None:
                sampler.close()

    def _reuse_prefix(self, prompt: list[int]) -> list[int]:
        """Keep the KV cells of the longest prefix the last prompt (or the RAM cache) holds; return
        what is left to decode (at least one token, so the logits are fresh)."""
        llama = self._llama
        # Sequence 0 holds exactly input_ids[:n_tokens]: Llama.eval records every token it decodes,
        # and a failed eval resets n_tokens.
        try:
            keep = self._cache.prepare(0, as_tokens(llama.input_ids[: llama.n_tokens]), as_tokens(prompt))
        except Exception:
            llama.reset()  # what the sequence holds is no longer known: the next eval clears it
            raise
        # After a restore the sequence holds the entry's tokens, trimmed to the prompt's first `keep`.
        llama.input_ids[:keep] = prompt[:keep]
        llama.n_tokens = keep
        if keep == 0:
            llama.reset()
        return list(prompt[keep:])

    def close(self) -> None:
        self._cache.clear()

    def _eval(self, tokens: list[int]) -> None:
        try:
            self._llama.eval(tokens)
        except RuntimeError as error:
            self._llama.reset()  # the cache no longer matches input_ids
            raise GenerationFailed(str(error)) from error


class BatchedEngine:
    """Jobs go to the model's BatchScheduler; this thread only reads its tokens back."""

    def __init__(self, scheduler: BatchScheduler) -> None:
        self._scheduler = scheduler
        self._utf8 = Utf8Tables(scheduler.model)

    @property
    def context(self) -> int:
        return self._scheduler.slot_ctx

    def generate(self, job: TokenJob) -> Iterator[Sampled]:
        request = SlotRequest(
            prompt=job.prompt, max_tokens=job.max_tokens, sampling=job.sampling, cancel=job.cancel,
            deadline=job.deadline, grammar=job.grammar, top_logprobs=job.top_logprobs, agent=job.agent,
            # Built here, on the job's thread: the first one reads the vocabulary, and the scheduler
            # thread must not stall every slot for it.
            utf8=Utf8Guard(self._utf8.get()) if job.grammar is not None else None,
        )
        self._scheduler.submit(request)
        ended = False
        try:
            while True:
                kind, value = request.out.get()
                if kind == END:
                    ended = True
                    job.finish = value
                    return
                if kind == ERROR:
                    ended = True
                    raise GenerationFailed(str(value)) from value
                if job.first_token_at is None:
                    job.first_token_at = request.first_token_at or time.perf_counter()
                yield value
        finally:
            if not ended:
                # The reader stopped (stop string, client gone): free the slot, and wait until it is
                # free, so the next request (this agent's next turn, say) finds it idle, with its KV.
                request.done = True
                self._scheduler.wait_freed(request)


