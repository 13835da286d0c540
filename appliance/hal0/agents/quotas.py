"""Per-agent rate quotas: requests and tokens in any 60 s, and generations in flight.

The limits come from the agent's persona (agents.personas[].limits) and are read on every call, so a
reload changes them at once; the counters live here, outside the config, so they survive a reload.
Each agent id is counted on its own, even when several share the default agent's persona.

Windows slide: an entry counts for exactly WINDOW_S seconds after it happened. That is what makes
a refusal's Retry-After true: it is the whole seconds until enough entries age out for the same
request to pass, had nothing else happened meanwhile. Refused requests are not counted, so
retrying on time succeeds. Only `max_concurrent` cannot know when a slot frees (that depends on how
long the agent's own running generations take), so it answers the shortest honest wait, 1 s.

Everything here runs on the event loop (routes and tool calls), so no lock is needed.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from hal0.config.models import PersonaLimits

WINDOW_S = 60.0
_SLACK_S = 1e-6  # float rounding, far below any clock a client has
MAX_TRACKED = 4096  # agent ids kept; idle ones are dropped first, so a flood of ids cannot grow memory
Quota = Literal["requests_per_minute", "tokens_per_minute", "max_concurrent"]
QUOTAS: tuple[Quota, ...] = ("requests_per_minute", "tokens_per_minute", "max_concurrent")


class QuotaObserver(Protocol):
    """Metrics hooks, labelled by persona (bounded), never by raw agent id."""

    def agent_request(self, persona: str) -> None: ...

    def agent_tokens(self, persona: str, tokens: int) -> None: ...

    def agent_limited(self, persona: str, quota: str) -> None: ...


class QuotaExceededError(Exception):
    """Over a quota: the API answers 429 rate_limit_exceeded with Retry-After: retry_after."""

    def __init__(self, agent: str, persona: str, quota: Quota, limit: int, retry_after: int) -> None:
        what = {"requests_per_minute": "requests per minute", "tokens_per_minute": "tokens per minute",
                "max_concurrent": "generations at once"}[quota]
        super().__init__(f"agent {agent!r} is over persona {persona!r}'s limit of {limit} {what} "
                         f"(agents.personas[].limits.{quota}); retry after {retry_after}s")
        self.agent = agent
        self.quota = quota
        self.limit = limit
        self.retry_after = retry_after


@dataclass
class _Usage:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_sum: int = 0
    in_flight: int = 0
    limited: int = 0
    last_limited: str | None = None
    last_limited_at: float | None = None

    def prune(self, now: float) -> None:
        # Entries age out a hair early (see _SLACK_S), so float rounding can never make a client
        # that waited exactly its Retry-After find the entry still there.
        horizon = now - WINDOW_S + 2 * _SLACK_S
        while self.requests and self.requests[0] <= horizon:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= horizon:
            self.token_sum -= self.tokens.popleft()[1]

    @property
    def idle(self) -> bool:
        return not self.requests and not self.tokens and self.in_flight == 0


def _wait(until: float, now: float) -> int:
    """Whole seconds from now until `until`, at least 1 (a Retry-After of 0 invites a busy loop).
    The slack keeps float noise from turning exactly 60 s into 61."""
    return max(1, math.ceil(until - now - _SLACK_S))


class Lease:
    """One admitted generation: holds its concurrency place until `finish`, which counts its tokens."""

    def __init__(self, quotas: Quotas, agent: str, persona: str) -> None:
        self._quotas = quotas
        self.agent = agent
        self.persona = persona
        self._open = True

    def finish(self, tokens: int) -> None:
        """Idempotent: the first call counts `tokens` and frees the concurrency place."""
        if self._open:
            self._open = False
            self._quotas._finish(self, tokens)


class Quotas:
    def __init__(self, observer: QuotaObserver | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._usage: dict[str, _Usage] = {}
        self._observer = observer
        self._clock = clock

    def _entry(self, agent: str, now: float) -> _Usage:
        usage = self._usage.get(agent)
        if usage is None:
            if len(self._usage) >= MAX_TRACKED:
                self._forget_idle(now)
            usage = self._usage[agent] = _Usage()
        usage.prune(now)
        return usage

    def _forget_idle(self, now: float) -> None:
        for agent, usage in list(self._usage.items()):
            usage.prune(now)
            if usage.idle:
                del self._usage[agent]

    def _refuse(self, usage: _Usage, agent: str, persona: str, quota: Quota, limit: int, retry_after: int) -> QuotaExceededError:
        usage.limited += 1
        usage.last_limited, usage.last_limited_at = quota, time.time()
        if self._observer is not None:
            self._observer.agent_limited(persona, quota)
        return QuotaExceededError(agent, persona, quota, limit, retry_after)

    def request(self, agent: str, persona: str, limits: PersonaLimits) -> None:
        """Count one request (a tool call), or raise QuotaExceededError without counting it."""
        now = self._clock()
        usage = self._entry(agent, now)
        self._check_requests(usage, agent, persona, limits, now)
        self._count(usage, persona, now)

    def generation(self, agent: str, persona: str, limits: PersonaLimits) -> Lease:
        """Admit one generation: requests, tokens and concurrency are all checked before anything counts."""
        now = self._clock()
        usage = self._entry(agent, now)
        self._check_requests(usage, agent, persona, limits, now)
        if limits.tokens_per_minute is not None and usage.token_sum >= limits.tokens_per_minute:
            # The wait until the window's sum drops below the limit: age out the oldest entries.
            remaining = usage.token_sum
            until = now
            for at, count in usage.tokens:
                remaining -= count
                until = at + WINDOW_S
                if remaining < limits.tokens_per_minute:
                    break
            raise self._refuse(usage, agent, persona, "tokens_per_minute", limits.tokens_per_minute, _wait(until, now))
        if limits.max_concurrent is not None and usage.in_flight >= limits.max_concurrent:
            raise self._refuse(usage, agent, persona, "max_concurrent", limits.max_concurrent, 1)
        self._count(usage, persona, now)
        usage.in_flight += 1
        return Lease(self, agent, persona)

    def _check_requests(self, usage: _Usage, agent: str, persona: str, limits: PersonaLimits, now: float) -> None:
        limit = limits.requests_per_minute
        if limit is not None and len(usage.requests) >= limit:
            # The request that makes room is the one `limit` places from the newest.
            oldest_that_matters = usage.requests[len(usage.requests) - limit]
            raise self._refuse(usage, agent, persona, "requests_per_minute", limit, _wait(oldest_that_matters + WINDOW_S, now))

    def _count(self, usage: _Usage, persona: str, now: float) -> None:
        usage.requests.append(now)
        if self._observer is not None:
            self._observer.agent_request(persona)

    def _finish(self, lease: Lease, tokens: int) -> None:
        now = self._clock()
        usage = self._entry(lease.agent, now)
        usage.in_flight = max(0, usage.in_flight - 1)
        if tokens > 0:
            usage.tokens.append((now, tokens))
            usage.token_sum += tokens
            if self._observer is not None:
                self._observer.agent_tokens(lease.persona, tokens)

    def snapshot(self) -> list[dict[str, Any]]:
        """Per-agent usage in the current window, busiest first (the dashboard's Agents table)."""
        now = self._clock()
        rows = []
        for agent, usage in self._usage.items():
            usage.prune(now)
            rows.append({"agent": agent, "requests": len(usage.requests), "tokens": usage.token_sum,
                         "in_flight": usage.in_flight, "limited": usage.limited, "last_limited": usage.last_limited,
                         "last_limited_at": usage.last_limited_at})
        return sorted(rows, key=lambda row: (-row["requests"], -row["tokens"], row["agent"]))
