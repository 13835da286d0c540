"""models[].parallel and n_ctx_per_slot: defaults, the context each slot gets, and the limits."""

from __future__ import annotations

import pytest
from hal0.config.models import ModelConfig
from pydantic import ValidationError


def test_one_slot_is_the_default_and_gets_the_whole_context() -> None:
    model = ModelConfig(id="m", path="/m.gguf", n_ctx=4096)
    assert model.parallel == 1 and model.slot_ctx == 4096


def test_slots_share_n_ctx_unless_told_otherwise() -> None:
    assert ModelConfig(id="m", path="/m.gguf", n_ctx=4096, parallel=4).slot_ctx == 1024
    assert ModelConfig(id="m", path="/m.gguf", n_ctx=4096, parallel=4, n_ctx_per_slot=512).slot_ctx == 512


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"n_ctx": 4096, "parallel": 4, "n_ctx_per_slot": 2048}, "n_ctx_per_slot: parallel (4) x n_ctx_per_slot (2048) = 8192 exceeds n_ctx (4096)"),
        ({"n_ctx": 256, "parallel": 8}, "parallel: n_ctx (256) / parallel (8) leaves 32 tokens per slot"),
        ({"n_batch": 4, "n_ubatch": 4, "parallel": 8}, "parallel: 8 slots need n_batch >= 8"),
    ],
)
def test_slots_that_do_not_fit_name_their_field(fields: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(id="m", path="/m.gguf", **fields)
