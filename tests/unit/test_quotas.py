"""Quotas with a clock the test moves: a Retry-After is true (the same request passes exactly then,
not a second before), refusals are not counted, each agent id is counted on its own."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hal0.agents.quotas import MAX_TRACKED, QuotaExceededError, Quotas
from hal0.config.models import PersonaLimits
from hypothesis import given, settings
from hypothesis import strategies as st


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Seen:
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def agent_request(self, persona: str) -> None:
        self.events.append(("request", persona))

    def agent_tokens(self, persona: str, tokens: int) -> None:
        self.events.append(("tokens", persona, str(tokens)))

    def agent_limited(self, persona: str, quota: str) -> None:
        self.events.append(("limited", persona, quota))


def refusal(call: Callable[[], object]) -> QuotaExceededError:
    with pytest.raises(QuotaExceededError) as error:
        call()
    return error.value


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(1, 5), gaps=st.lists(st.floats(0, 30), min_size=1, max_size=12))
def test_requests_retry_after_is_true(limit: int, gaps: list[float]) -> None:
    clock = Clock()
    quotas = Quotas(clock=clock)
    limits = PersonaLimits(requests_per_minute=limit)
    for gap in gaps:
        clock.now += gap
        try:
            quotas.request("a", "p", limits)
        except QuotaExceededError as caught:
            error = caught
        else:
            continue
        assert error.quota == "requests_per_minute" and 1 <= error.retry_after <= 60
        refused_at = clock.now
        if error.retry_after > 1:  # a second short of it is still refused ...
            clock.now = refused_at + error.retry_after - 1
            with pytest.raises(QuotaExceededError):
                quotas.request("a", "p", limits)
        clock.now = refused_at + error.retry_after  # ... and at Retry-After it passes
        quotas.request("a", "p", limits)


def test_tokens_retry_after_is_when_enough_tokens_age_out() -> None:
    clock = Clock()
    quotas = Quotas(clock=clock)
    limits = PersonaLimits(tokens_per_minute=100)
    quotas.generation("a", "p", limits).finish(60)
    clock.now += 10
    quotas.generation("a", "p", limits).finish(50)  # 110 in the window: the next one waits
    clock.now += 5
    error = refusal(lambda: quotas.generation("a", "p", limits))
    assert error.quota == "tokens_per_minute" and error.retry_after == 45  # the first 60 age out at +60
    clock.now += 44
    refusal(lambda: quotas.generation("a", "p", limits))
    clock.now += 1
    quotas.generation("a", "p", limits).finish(1)


def test_concurrency_frees_when_a_lease_finishes_and_finish_is_idempotent() -> None:
    quotas = Quotas(clock=Clock())
    limits = PersonaLimits(max_concurrent=2)
    first, _second = quotas.generation("a", "p", limits), quotas.generation("a", "p", limits)
    error = refusal(lambda: quotas.generation("a", "p", limits))
    assert error.quota == "max_concurrent" and error.retry_after == 1
    assert "agents.personas[].limits.max_concurrent" in str(error)
    first.finish(3)
    first.finish(3)  # a second finish frees nothing more
    quotas.generation("a", "p", limits)
    refusal(lambda: quotas.generation("a", "p", limits))


def test_each_agent_is_counted_on_its_own_and_refusals_are_not_counted() -> None:
    seen = Seen()
    quotas = Quotas(observer=seen, clock=Clock())
    limits = PersonaLimits(requests_per_minute=1)
    quotas.request("a", "shared", limits)
    for _ in range(3):
        refusal(lambda: quotas.request("a", "shared", limits))
    quotas.request("b", "shared", limits)  # same persona, another id: its own count
    rows = {row["agent"]: row for row in quotas.snapshot()}
    assert rows["a"]["requests"] == 1 and rows["a"]["limited"] == 3 and rows["a"]["last_limited"] == "requests_per_minute"
    assert rows["b"]["requests"] == 1 and rows["b"]["limited"] == 0
    assert seen.events.count(("request", "shared")) == 2
    assert seen.events.count(("limited", "shared", "requests_per_minute")) == 3


def test_no_limits_never_refuse_but_usage_is_still_shown() -> None:
    quotas = Quotas(clock=Clock())
    for _ in range(500):
        quotas.generation("free", "other", PersonaLimits()).finish(10)
    assert quotas.snapshot() == [{"agent": "free", "requests": 500, "tokens": 5000, "in_flight": 0, "limited": 0,
                                  "last_limited": None, "last_limited_at": None}]


def test_a_flood_of_agent_ids_does_not_grow_without_bound() -> None:
    clock = Clock()
    quotas = Quotas(clock=clock)
    for index in range(MAX_TRACKED):
        quotas.request(f"id-{index}", "other", PersonaLimits())
    clock.now += 61  # all idle now
    quotas.request("late", "other", PersonaLimits())
    assert [row["agent"] for row in quotas.snapshot()] == ["late"]
