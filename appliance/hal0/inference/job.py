"""One generation as the engines see it (a TokenJob), and the one step that picks its next token.

Every engine runs the same `TokenStep` on each row of logits it decodes for a job, as llama.cpp's
server runs every slot's token through one `process_token`: the model's own distribution is kept
for logprobs, the output constraint masks what may not come next, the token is chosen (an argmax for
plain greedy, else the sampler chain), then end of generation, the token budget and the context
decide whether the job goes on. The engines differ only in how they decode (one sequence on the
model's context, or slots batched together), never in what they do with the logits.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from hal0.inference.prompt_cache import SHARED, CacheKey
from hal0.inference.sampling import Sampling, build_sampler, greedy_token, is_plain_greedy, logits_row, token_logprobs
from hal0.inference.task import FinishReason

__all__ = ["Constraint", "Sampled", "TokenJob", "TokenStep"]


class Constraint(Protocol):
    """A job's output constraint at each step (constraint.TokenConstraint is the one there is)."""

    def mask(self, logits: Any) -> None:
        """Set to -inf, in place, every token the constraint does not allow next."""
        ...

    def accept(self, token: int) -> None:
        """Advance past the sampled `token` (GenerationFailed if it cannot)."""
        ...

    @property
    def finished(self) -> bool:
        """The constrained output is complete: nothing may follow it."""
        ...


@dataclass(frozen=True)
class Sampled:
    """One generated token and, when asked for, its log-probability and the top alternatives'."""

    token: int
    logprob: float | None = None
    top: tuple[tuple[int, float], ...] = ()


@dataclass(eq=False)
class TokenJob:
    """Tokens in; the engine fills in how the job ended and when its first token came.

    The batched engine hands the job itself to its scheduler thread: `out` then receives
    ("next", Sampled) per token and one ("end", FinishReason) or ("error", exception).
    """

    prompt: list[int]
    max_tokens: int
    sampling: Sampling
    cancel: threading.Event
    deadline: float = float("inf")
    constraint: Constraint | None = None  # built on the request's thread, used on the decoding one
    top_logprobs: int | None = None  # None: no logprobs
    agent: str | None = None  # who sent it: the batched engine offers it the slot it last used
    cache_key: CacheKey = SHARED  # whose cached KV it may reuse (models[].prompt_cache_scope)
    finish: FinishReason = FinishReason.STOP
    first_token_at: float | None = None
    # The batched engine's hand-over (see BatchScheduler): tokens out, and the reader's "enough".
    out: queue.SimpleQueue[tuple[str, Any]] = field(default_factory=queue.SimpleQueue)
    done: bool = False  # set by the reader when it has what it needs (a stop string matched)
    submitted: float = field(default_factory=time.perf_counter)

    def interrupted(self) -> FinishReason | None:
        """Why the job must end before its next token, if it must: cancelled, or past its deadline."""
        if self.cancel.is_set() or self.done:
            return FinishReason.CANCELLED
        if time.perf_counter() > self.deadline:
            return FinishReason.TIMEOUT
        return None


class TokenStep:
    """A job's token choice, step after step; built where the job starts, closed where it ends."""

    def __init__(self, job: TokenJob, model: Any, n_vocab: int, default_seed: int | None) -> None:
        import llama_cpp

        self.job = job
        self.generated = 0
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._sample = llama_cpp.llama_sampler_sample
        self._vocab = model.vocab
        self._n_vocab = n_vocab
        plain = is_plain_greedy(job.sampling)
        self._bias = dict(job.sampling.logit_bias or {}) if plain else None
        self._sampler = None if plain else build_sampler(n_vocab, job.sampling, default_seed)

    def sample(self, ctx: Any, index: int) -> Sampled | FinishReason:
        """The job's next token from row `index` of the batch `ctx` last decoded, or why it ends there."""
        job = self.job
        logits = logits_row(ctx, index, self._n_vocab)
        raw = logits.copy() if job.top_logprobs is not None else None  # the model's own, before any mask or bias
        if job.constraint is not None:
            job.constraint.mask(logits)  # before the bias and the sampler chain: they choose among what it allows
        token = greedy_token(logits, self._bias) if self._sampler is None else self._sample(self._sampler.sampler, ctx, index)
        if job.first_token_at is None:
            job.first_token_at = time.perf_counter()
        if self._is_eog(self._vocab, token):
            return FinishReason.STOP
        if job.constraint is not None:
            job.constraint.accept(token)
        self.generated += 1
        logprob, top = token_logprobs(raw, token, job.top_logprobs or 0) if raw is not None else (None, ())
        return Sampled(token, logprob, top)

    def ended(self, n_past: int, n_ctx: int) -> FinishReason | None:
        """After a token: whether the job ends with it. The next token would need a cell of its own
        (position `n_past`), so a full context ends the job, never llama_decode failing."""
        if self.job.constraint is not None and self.job.constraint.finished:
            return FinishReason.STOP  # the constrained output is whole: no step spent on an end token
        if self.generated >= self.job.max_tokens or n_past + 1 >= n_ctx:
            return FinishReason.LENGTH
        return None

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.close()
            self._sampler = None
