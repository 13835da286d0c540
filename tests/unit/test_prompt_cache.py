"""The prompt cache's decisions without a model: prefixes, the sliding-window check, slot choice, scopes, the config fields."""

from __future__ import annotations

import pytest
from hal0.config.models import ModelConfig, PromptCacheScope
from hal0.inference.batching import _Slot, choose_slot
from hal0.inference.prompt_cache import SHARED, CacheKey, as_tokens, common_prefix, restored_pos_min, usable_prefix
from pydantic import ValidationError


def test_common_prefix() -> None:
    assert common_prefix(as_tokens([1, 2, 3]), as_tokens([1, 2, 4])) == 2
    assert common_prefix(as_tokens([1, 2]), as_tokens([1, 2, 3])) == 2
    assert common_prefix(as_tokens([]), as_tokens([1])) == 0
    assert common_prefix(as_tokens([5]), as_tokens([1])) == 0


def test_the_last_prompt_token_is_always_decoded_again() -> None:
    prompt = as_tokens(range(10))
    assert usable_prefix(prompt, prompt, 0, 0) == 9  # whole match: re-read the last token for fresh logits
    assert usable_prefix(as_tokens(range(20)), prompt, 0, 0) == 9
    assert usable_prefix(as_tokens(range(5)), prompt, 0, 0) == 5
    assert usable_prefix(as_tokens([7, 8]), prompt, 0, 0) == 0


@pytest.mark.parametrize(
    ("same", "pos_min", "n_swa", "usable"),
    [
        (100, 0, 0, True),  # no sliding window: every cell is kept
        (100, 90, 0, True),
        (100, 0, 16, True),  # nothing dropped yet
        (100, 85, 16, True),  # position 100 attends to 85..99: all held
        (100, 86, 16, False),  # 85 is gone
        (10, 0, 16, True),  # a short prefix inside the first window
    ],
)
def test_a_prefix_is_usable_only_while_its_window_is_held(same: int, pos_min: int, n_swa: int, usable: bool) -> None:
    held = as_tokens(range(200))
    prompt = as_tokens([*range(same), 999])
    assert usable_prefix(held, prompt, pos_min, n_swa) == (same if usable else 0)


def test_a_restored_state_holds_only_the_window_before_its_end() -> None:
    assert restored_pos_min(400, 140, 16) == 384
    assert restored_pos_min(10, 0, 16) == 0
    assert restored_pos_min(400, 0, 0) == 0


class _Cache:
    """choose_slot asks only how much of the prompt each slot serves: the plain common prefix here."""

    def usable(self, seq: int, held: object, prompt: object, limit: int | None = None) -> int:
        return usable_prefix(held, prompt, 0, 0, limit)  # type: ignore[arg-type]


def _slot(seq: int, tokens: list[int], agent: str | None = None, used: int = 0, busy: bool = False) -> _Slot:
    slot = _Slot(seq, tokens=tokens, agent=agent, used=used)
    slot.request = object() if busy else None  # type: ignore[assignment]
    return slot


def _choose(slots: list[_Slot], prompt: list[int], agent: str | None = None) -> int | None:
    chosen = choose_slot(slots, _Cache(), as_tokens(prompt), agent)  # type: ignore[arg-type]
    return None if chosen is None else chosen.seq


PROMPT = list(range(100))


def test_the_agents_own_slot_comes_first_when_the_prompt_continues_it() -> None:
    slots = [_slot(0, PROMPT[:90], "b", used=3), _slot(1, [0, 1, 2, 50], "a", used=1), _slot(2, [])]
    assert _choose(slots, PROMPT, "a") == 1
    assert _choose(slots, PROMPT, "c") == 0  # anyone else: the longest prefix
    assert _choose([_slot(0, PROMPT[:90], "b"), _slot(1, [0, 50], "a")], PROMPT, "a") == 0  # a new conversation


def test_an_agent_that_must_displace_someone_displaces_itself() -> None:
    slots = [_slot(0, [0, 7], "b", used=1), _slot(1, [0, 8], "a", used=5), _slot(2, [0, 9], "a", used=4)]
    assert _choose(slots, PROMPT, "a") == 1  # its most recent slot, not b's least recently used one
    assert _choose(slots, PROMPT, "c") == 0


def test_then_the_longest_prefix_then_an_empty_slot_then_the_least_recently_used() -> None:
    assert _choose([_slot(0, PROMPT[:40], used=5), _slot(1, PROMPT[:60], used=1), _slot(2, [])], PROMPT) == 1
    assert _choose([_slot(0, [0, 9], used=5), _slot(1, [])], PROMPT) == 1  # one shared token (BOS) is no prefix
    assert _choose([_slot(0, [0, 9], used=5), _slot(1, [0, 8], used=2)], PROMPT) == 1
    assert _choose([_slot(0, PROMPT, busy=True), _slot(1, [0, 8], busy=True)], PROMPT) is None


def test_an_empty_slot_beats_a_prefix_that_would_throw_away_most_of_a_slot() -> None:
    long_history = PROMPT[:20] + list(range(500, 600))
    assert _choose([_slot(0, long_history), _slot(1, [])], PROMPT) == 1
    assert _choose([_slot(0, long_history), _slot(1, [0, 7], used=9)], PROMPT) == 0  # no empty one: the prefix


def test_prompt_cache_mib_defaults_to_a_gib_and_zero_turns_it_off() -> None:
    assert ModelConfig(id="m", path="/m.gguf").prompt_cache_mib == 1024
    assert ModelConfig(id="m", path="/m.gguf", prompt_cache_mib=0).prompt_cache_mib == 0


@pytest.mark.parametrize("value", [-1, 1_048_577, 1.5, "lots"])
def test_prompt_cache_mib_out_of_bounds_is_refused(value: object) -> None:
    with pytest.raises(ValidationError, match="prompt_cache_mib"):
        ModelConfig(id="m", path="/m.gguf", prompt_cache_mib=value)


def test_a_cache_key_reuses_its_own_all_its_personas_public_prefix_and_nothing_else() -> None:
    alice = CacheKey("agent:alice", "persona:p", public=40)
    assert alice.reusable(CacheKey("agent:alice", "persona:p", public=40)) is None  # its own: everything
    assert alice.reusable(CacheKey("agent:bob", "persona:p", public=30)) == 30  # same persona: the public prefix both hold
    assert alice.reusable(CacheKey("agent:carol", "persona:q", public=40)) == 0  # another persona's agent
    assert alice.reusable(SHARED) == 0  # KV of unknown origin (a shared-scope sequence)
    assert CacheKey("agent:x").reusable(CacheKey("agent:y")) == 0
    assert SHARED.reusable(alice) is None  # the shared scope reuses anyone's


def test_a_prefix_counts_only_as_far_as_the_key_allows() -> None:
    slots = [_slot(0, PROMPT[:90], "b"), _slot(1, [])]
    slots[0].key = CacheKey("agent:b", "persona:p", public=5)
    assert _choose(slots, PROMPT, "a") == 0  # shared scope (the default key): b's 90 tokens serve a
    mine = CacheKey("agent:a", "persona:p", public=5)
    assert choose_slot(slots, _Cache(), as_tokens(PROMPT), "a", mine).seq == 1  # 5 public tokens do not beat an empty slot
    assert choose_slot(slots, _Cache(), as_tokens(PROMPT), "a", CacheKey("agent:b")).seq == 0  # b's own
    assert usable_prefix(as_tokens(PROMPT), as_tokens(PROMPT), 0, 0, limit=5) == 5
    # The sliding window is checked where the limit ends the prefix: position 50 needs cells from 35 on.
    assert usable_prefix(as_tokens(range(200)), as_tokens([*range(100), 999]), 80, 16) == 100
    assert usable_prefix(as_tokens(range(200)), as_tokens([*range(100), 999]), 80, 16, limit=50) == 0


def test_prompt_cache_scope_defaults_to_agent_and_takes_only_its_three_values() -> None:
    assert ModelConfig(id="m", path="/m.gguf").prompt_cache_scope == PromptCacheScope.AGENT == "agent"
    assert ModelConfig(id="m", path="/m.gguf", prompt_cache_scope="shared").prompt_cache_scope is PromptCacheScope.SHARED
    for value in ("everyone", "", None, 1):
        with pytest.raises(ValidationError, match="prompt_cache_scope"):
            ModelConfig(id="m", path="/m.gguf", prompt_cache_scope=value)
