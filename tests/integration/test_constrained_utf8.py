"""A constrained reply is well-formed UTF-8 and exactly the text its schema accepted.

The tiny model's vocabulary has a token per byte (id 5 + byte), so a logit bias can push it to the
byte sequences a lenient decoder counts as characters: a code point past U+10FFFF, a surrogate.
(llama.cpp's grammar sampler did, and a `minLength: 5` string arrived with 4 characters; hal0 then
needed a guard of its own. llguidance's mask only lets through bytes that go on to a well-formed
character, which these tests hold it to.) Both engines run it in-process, greedy, and the text is
decoded as hal0 decodes it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hal0.inference.batching import BatchScheduler
from hal0.inference.constraint import Constraints, schema_grammar
from hal0.inference.engines import BatchedEngine, SingleEngine, TokenJob
from hal0.inference.sampling import Sampling
from hal0.inference.text import TextStream
from llama_cpp import Llama


def byte(value: int) -> int:
    return 5 + value


QUOTE = byte(ord('"'))
NO_END = {2: -100.0, 4: -100.0}
# Byte sequences a lenient decoder takes as one character and a strict one drops, each with the
# well-formed character the mask leaves the bias to find instead:
#   F4 90 80 80 (U+110000, past Unicode): after F4 only 80..8F may come, so F4 80, then 90 80: U+100410;
#   ED A0 80 (the surrogate U+D800): after ED only 80..9F may come, so ED 80, then A0: U+D020.
BEYOND = Sampling(temperature=0, logit_bias={byte(0xF4): 60.0, byte(0x90): 55.0, byte(0x80): 50.0, byte(0x8F): 45.0, **NO_END})
SURROGATE = Sampling(temperature=0, logit_bias={byte(0xED): 60.0, byte(0xA0): 55.0, byte(0x80): 50.0, byte(0xE8): 40.0, **NO_END})
INSTEAD = {"beyond": "\U00100410", "surrogate": "\ud020"}


@pytest.fixture(scope="module")
def llama(tiny_model: Path) -> Iterator[Llama]:
    llm = Llama(str(tiny_model), n_ctx=256, n_batch=64, n_threads=1, verbose=False)
    yield llm
    llm.close()


@pytest.fixture(params=["single", "batched"])
def engine(request: pytest.FixtureRequest, llama: Llama, tiny_model: Path) -> Iterator[SingleEngine | BatchedEngine]:
    if request.param == "single":
        yield SingleEngine(llama, None)
        return
    scheduler = BatchScheduler(llama, n_slots=2, slot_ctx=256, n_batch=64, n_ubatch=64, default_seed=None)
    yield BatchedEngine(scheduler)
    scheduler.close()


@pytest.fixture(scope="module")
def constraints(llama: Llama) -> Constraints:
    return Constraints(llama._model)


def reply(engine: SingleEngine | BatchedEngine, llama: Llama, constraints: Constraints, schema: dict, sampling: Sampling) -> str:
    constraint = constraints.start(schema_grammar(schema, "response_format"))
    job = TokenJob(prompt=llama.tokenize(b"go", add_bos=True), max_tokens=40, sampling=sampling, cancel=threading.Event(), constraint=constraint)
    text = TextStream(llama, [])
    out = "".join(text.feed(sampled.token)[0] for sampled in engine.generate(job))
    return out + text.flush()


def allowed(constraints: Constraints, llama: Llama, after: list[int]) -> set[int]:
    """The tokens a `{"type": "string"}` constraint allows after the tokens `after`."""
    import numpy

    constraint = constraints.start(schema_grammar({"type": "string"}, "p"))
    for token in after:
        constraint.accept(token)
    logits = numpy.zeros(llama.n_vocab(), dtype=numpy.float32)
    constraint.mask(logits)
    return set(numpy.flatnonzero(numpy.isfinite(logits)).tolist())


def test_on_a_character_boundary_no_stray_tail_or_bad_lead_may_come(constraints: Constraints, llama: Llama) -> None:
    first = allowed(constraints, llama, [QUOTE])
    assert not {byte(0x80), byte(0xBF), byte(0xC0), byte(0xC1), byte(0xF5), byte(0xFF)} & first  # stray tails, overlong and out-of-range leads
    assert {byte(0x41), byte(0xC2), byte(0xE8), byte(0xED), byte(0xF4)} <= first


@pytest.mark.parametrize(("lead", "follow"), [(0xE0, range(0xA0, 0xC0)), (0xED, range(0x80, 0xA0)), (0xF4, range(0x80, 0x90)), (0xE8, range(0x80, 0xC0))])
def test_inside_a_character_only_its_valid_continuations_may_come(constraints: Constraints, llama: Llama, lead: int, follow: range) -> None:
    assert allowed(constraints, llama, [QUOTE, byte(lead)]) == {byte(value) for value in follow}, hex(lead)
    tail = [byte(follow[0]), byte(0x80)] if lead == 0xF4 else [byte(follow[0])]
    after = allowed(constraints, llama, [QUOTE, byte(lead), *tail, byte(0x80)])  # complete: back on a boundary
    assert byte(0x80) not in after and {byte(0x41), QUOTE} <= after


BIASES = pytest.mark.parametrize(("kind", "sampling"), [("beyond", BEYOND), ("surrogate", SURROGATE)], ids=["beyond", "surrogate"])


@BIASES
@pytest.mark.parametrize("length", [1, 2, 5])
def test_a_string_of_exact_length_arrives_with_that_length(engine: SingleEngine | BatchedEngine, llama: Llama, constraints: Constraints,
                                                           length: int, kind: str, sampling: Sampling) -> None:
    schema = {"type": "object", "properties": {"s": {"type": "string", "minLength": length, "maxLength": length}},
              "required": ["s"], "additionalProperties": False}
    text = reply(engine, llama, constraints, schema, sampling)
    assert json.loads(text)["s"] == INSTEAD[kind] * length, ascii(text)


@BIASES
def test_an_array_of_strings_keeps_its_shape(engine: SingleEngine | BatchedEngine, llama: Llama, constraints: Constraints, kind: str,
                                             sampling: Sampling) -> None:
    schema = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 1}, "minItems": 3, "maxItems": 3}
    assert json.loads(reply(engine, llama, constraints, schema, sampling)) == [INSTEAD[kind]] * 3

