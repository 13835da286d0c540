"""Plain greedy is an argmax in both engines (sampling.greedy_token): it must choose what llama.cpp's
logit-bias and greedy samplers choose on the same logits, ties included (the first maximum)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hal0.inference.sampling import Sampling, build_sampler, greedy_token, is_plain_greedy, logits_row
from llama_cpp import Llama


@pytest.fixture(scope="module")
def llama(tiny_model: Path) -> Iterator[Llama]:
    llm = Llama(str(tiny_model), n_ctx=128, n_threads=1, verbose=False)
    yield llm
    llm.close()


def both(llama: Llama, prompt: bytes, bias: dict[int, float] | None) -> tuple[int, int]:
    import llama_cpp

    llama.reset()
    llama.eval(llama.tokenize(prompt, add_bos=True))
    sampling = Sampling(temperature=0, logit_bias=bias)
    assert is_plain_greedy(sampling)
    ctx, n_vocab = llama._ctx.ctx, llama.n_vocab()
    chain = build_sampler(n_vocab, sampling, None)
    try:
        expected = llama_cpp.llama_sampler_sample(chain.sampler, ctx, -1)  # reads the logits, leaves them
    finally:
        chain.close()
    return greedy_token(logits_row(ctx, -1, n_vocab).copy(), bias), expected


@pytest.mark.parametrize("prompt", [b"hello", b"the model", b"go"])
def test_argmax_is_the_samplers_choice(llama: Llama, prompt: bytes) -> None:
    chosen, expected = both(llama, prompt, None)
    assert chosen == expected
    # A bias that takes the top token away and one that crowns another: both follow the sampler.
    without_top = both(llama, prompt, {expected: -100.0})
    assert without_top[0] == without_top[1] != expected
    assert both(llama, prompt, {7: 100.0}) == (7, 7)


def test_a_tie_goes_to_the_first_maximum(llama: Llama) -> None:
    import numpy

    llama.reset()
    llama.eval(llama.tokenize(b"hello", add_bos=True))
    logits = logits_row(llama._ctx.ctx, -1, llama.n_vocab())
    top = int(logits.argmax())
    other = 40 if top != 40 else 41
    raise_by = float(logits[top] - logits[other])
    assert numpy.float32(logits[other]) + numpy.float32(raise_by) == logits[top]  # a real tie, in float32
    chosen, expected = both(llama, b"hello", {other: raise_by})
    assert chosen == expected == min(top, other)
