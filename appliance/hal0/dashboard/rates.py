"""Request and token rates for the Overview, computed from the Prometheus counters hal0 exports.

Counters only grow, so a rate needs two readings: each Overview render takes one and compares it
with the oldest reading of the last WINDOW_S seconds. The dashboard's own polling is left out of
the request rate, or an open Overview tab would report its own refreshes as traffic.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from prometheus_client import Counter

from hal0.metrics import Metrics

WINDOW_S = 30.0
MIN_SPAN_S = 1.0
# Route labels of the dashboard itself (see hal0.api.metrics.route_label).
_OWN_ROUTES = ("/", "/static")
_OWN_PREFIX = "/ui/"


@dataclass(frozen=True)
class Reading:
    at: float
    requests: float
    prompt_tokens: float
    generated_tokens: float


@dataclass(frozen=True)
class Rates:
    requests_per_s: float | None
    prompt_tokens_per_s: float | None
    generated_tokens_per_s: float | None
    window_s: float
    totals: Reading


def _total(counter: Counter, *, skip_own_routes: bool = False) -> float:
    total = 0.0
    for metric in counter.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            route = sample.labels.get("route", "")
            if skip_own_routes and (route in _OWN_ROUTES or route.startswith(_OWN_PREFIX)):
                continue
            total += sample.value
    return total


def read(metrics: Metrics) -> Reading:
    return Reading(time.monotonic(), _total(metrics.requests, skip_own_routes=True),
                   _total(metrics.prompt_tokens), _total(metrics.generated_tokens))


class RateSampler:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._readings: deque[Reading] = deque()

    def sample(self) -> Rates:
        now = read(self._metrics)
        self._readings.append(now)
        while self._readings and now.at - self._readings[0].at > WINDOW_S:
            self._readings.popleft()
        first = self._readings[0]
        span = now.at - first.at
        if span < MIN_SPAN_S:
            return Rates(None, None, None, span, now)
        return Rates(
            (now.requests - first.requests) / span,
            (now.prompt_tokens - first.prompt_tokens) / span,
            (now.generated_tokens - first.generated_tokens) / span,
            span,
            now,
        )
