"""Per-request sampling: the parameters, the llama.cpp sampler chain built from them, and logprobs.

Both engines build their chain here, in the same order as llama-cpp-python's Llama._init_sampler,
so a request samples alike whichever engine runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy


@dataclass(frozen=True)
class Sampling:
    """Sampling for one request; defaults are llama-cpp-python's create_completion defaults."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    logit_bias: dict[int, float] | None = None

    @property
    def penalised(self) -> bool:
        return (self.repeat_penalty, self.frequency_penalty, self.presence_penalty) != (1.0, 0.0, 0.0)


def is_plain_greedy(sampling: Sampling) -> bool:
    """Greedy with no penalties: the choice is an argmax (greedy_token) over the (masked) logits, no
    sampler chain."""
    return sampling.temperature == 0 and not sampling.penalised


def greedy_token(logits: numpy.ndarray, bias: dict[int, float] | None) -> int:
    """The plain greedy choice, as llama.cpp's logit-bias and greedy samplers make it (first maximum on
    ties), without building their candidate array over the whole vocabulary (262k entries for Gemma,
    about 0.25 ms a step). The bias is added into `logits`: pass this step's buffer, read by no one else."""
    for token, value in (bias or {}).items():
        logits[token] += value
    return int(logits.argmax())


def build_sampler(n_vocab: int, sampling: Sampling, default_seed: int | None) -> Any:
    """A llama.cpp sampler chain (backend.new_sampler; the caller closes it). An output
    constraint is not part of it: the constraint masks the logits before the chain samples."""
    import llama_cpp

    from hal0.inference.backend import new_sampler

    sampler = new_sampler()
    if sampling.logit_bias:
        sampler.add_logit_bias(n_vocab, sampling.logit_bias)
    if sampling.penalised:
        sampler.add_penalties(n_vocab, 64, sampling.repeat_penalty, sampling.frequency_penalty, sampling.presence_penalty)
    seed = sampling.seed if sampling.seed is not None else default_seed
    seed = llama_cpp.LLAMA_DEFAULT_SEED if seed is None else seed & 0xFFFFFFFF
    if sampling.temperature == 0:
        sampler.add_greedy()
    elif sampling.temperature < 0:
        sampler.add_dist(seed)
    else:
        sampler.add_top_k(sampling.top_k)
        sampler.add_typical(sampling.typical_p, 1)
        sampler.add_top_p(sampling.top_p, 1)
        sampler.add_min_p(sampling.min_p, 1)
        sampler.add_temp(sampling.temperature)
        sampler.add_dist(seed)
    return sampler


def logits_row(ctx: Any, index: int, n_vocab: int) -> numpy.ndarray:
    """The logits llama.cpp computed for batch row `index` (-1: the last), as a view."""
    import llama_cpp

    return numpy.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(n_vocab,))


def token_logprobs(logits: numpy.ndarray, token: int, top: int) -> tuple[float, tuple[tuple[int, float], ...]]:
    """The natural-log probability of `token` under log-softmax(logits) and the `top` most likely
    tokens with theirs: the model's own distribution, before any bias, constraint or truncation."""
    row = logits.astype(numpy.float64)
    peak = row.max()
    log_total = peak + numpy.log(numpy.exp(row - peak).sum())
    chosen = float(row[token] - log_total)
    if top <= 0:
        return chosen, ()
    best = numpy.argpartition(row, -top)[-top:]
    best = best[numpy.argsort(-row[best], kind="stable")]
    return chosen, tuple((int(tok), float(row[tok] - log_total)) for tok in best)
