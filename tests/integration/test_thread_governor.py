"""Both engines hand their generation steps to the thread governor and decode with the counts it chooses.

The governor's choices themselves are tested with made-up timings (tests/unit/test_threads.py); here a
governor that keeps a record runs under the real engines on the tiny model, and the context's own
counts (llama_n_threads) show what llama.cpp was told.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import llama_cpp
import pytest
from hal0.inference.backend import context_of
from hal0.inference.batching import BatchScheduler
from hal0.inference.engines import BatchedEngine, SingleEngine, TokenJob
from hal0.inference.sampling import Sampling
from hal0.inference.threads import ThreadGovernor
from llama_cpp import Llama

TOKENS = 12


class Recording(ThreadGovernor):
    """A governor that decides one thread fewer from the start and keeps every step it is told of."""

    def __init__(self) -> None:
        super().__init__(most=2, batch=2)
        self.current = 1
        self.steps: list[tuple[int, float]] = []
        self.told: list[tuple[int, int]] = []

    def apply(self, set_threads: Callable[[int, int], None]) -> None:
        def telling(threads: int, batch: int) -> None:
            self.told.append((threads, batch))
            set_threads(threads, batch)

        super().apply(telling)

    def record(self, tokens: int, seconds: float) -> None:
        self.steps.append((tokens, seconds))


@pytest.fixture(scope="module")
def llama(tiny_model: Path) -> Iterator[Llama]:
    llm = Llama(str(tiny_model), n_ctx=256, n_batch=64, n_threads=2, n_threads_batch=2, verbose=False)
    yield llm
    llm.close()


def _job(llama: Llama) -> TokenJob:
    prompt = llama.tokenize(b"a prompt of several tokens", add_bos=True)
    return TokenJob(prompt=prompt, max_tokens=TOKENS, sampling=Sampling(temperature=0, logit_bias={2: -100.0, 4: -100.0}),
                    cancel=threading.Event())


def test_the_single_engine_reports_generation_steps_and_decodes_with_the_governed_count(llama: Llama) -> None:
    governor = Recording()
    tokens = list(SingleEngine(llama, None, governor=governor).generate(_job(llama)))
    assert len(tokens) == TOKENS
    # One step per token after the first (the prompt's step is not compared), each of one token.
    assert [step[0] for step in governor.steps] == [1] * (TOKENS - 1)
    assert all(seconds > 0 for _, seconds in governor.steps)
    ctx = context_of(llama)
    assert (llama_cpp.llama_n_threads(ctx), llama_cpp.llama_n_threads_batch(ctx)) == (1, 1)
    assert governor.told == [(1, 1)]


def test_the_batched_engine_reports_generation_steps_and_decodes_with_the_governed_count(llama: Llama) -> None:
    governor = Recording()
    scheduler = BatchScheduler(llama, n_slots=2, slot_ctx=128, n_batch=64, n_ubatch=64, default_seed=None, governor=governor)
    try:
        tokens = list(BatchedEngine(scheduler).generate(_job(llama)))
        assert len(tokens) == TOKENS
        assert [step[0] for step in governor.steps] == [1] * (TOKENS - 1)
        assert governor.told == [(1, 1)]  # once, before its first decode
    finally:
        scheduler.close()


def test_without_a_governor_the_configured_counts_stay(tiny_model: Path) -> None:
    llama = Llama(str(tiny_model), n_ctx=256, n_batch=64, n_threads=2, n_threads_batch=2, verbose=False)
    list(SingleEngine(llama, None).generate(_job(llama)))
    ctx = context_of(llama)
    assert (llama_cpp.llama_n_threads(ctx), llama_cpp.llama_n_threads_batch(ctx)) == (2, 2)
    llama.close()
