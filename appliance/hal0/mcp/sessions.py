"""Who opened each MCP session, so sessions can be capped per agent and in total (mcp.sessions).

3000 sessions opened and never closed cost about 39 KB each until the SDK's idle timeout (issue 20).
The SDK can cap the total per server but knows nothing of agents, so hal0 keeps its own table: the
agent (X-hal0-Agent of the opening request) of every session it let open, plus the openings still in
flight (reserved before the SDK admits them, so concurrent openings cannot overshoot a cap). Sessions
the SDK has ended (client DELETE, idle expiry, a failed opening) are pruned against its live table.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hal0.config.models import McpSessions


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str  # the metric label: "per_agent" or "total"
    message: str
    retry_after: int  # seconds until the first of the sessions that count against the cap expires, if left idle


class SessionTable:
    def __init__(self, live: Callable[[], set[str] | None], expires_in: Callable[[str], float | None] = lambda _sid: None) -> None:
        self._live = live  # the session ids the SDK still serves (None: it hides them)
        # seconds until the SDK closes an idle session (inf while a request of it is in flight; None: unknown)
        self._expires_in = expires_in
        self._owners: dict[str, str] = {}  # session id -> agent
        self._opening: Counter[str] = Counter()  # agent -> openings in flight

    def _prune(self) -> None:
        live = self._live()
        if live is not None:
            for session_id in [sid for sid in self._owners if sid not in live]:
                del self._owners[session_id]

    def held_by(self, agent: str) -> int:
        self._prune()
        return sum(1 for owner in self._owners.values() if owner == agent) + self._opening[agent]

    def total(self) -> int:
        self._prune()
        return len(self._owners) + sum(self._opening.values())

    def frees_in(self, caps: McpSessions, agent: str | None = None) -> int:
        """Seconds until a slot frees on its own: the first expiry among the sessions (of `agent`, or all)
        if no request comes for them meanwhile. A session with a request in flight (an open stream) can
        only expire a whole idle timeout after it ends, and so can one the SDK tells nothing of."""
        self._prune()
        waits = [caps.idle_timeout_s]
        for session_id, owner in self._owners.items():
            if agent is None or owner == agent:
                remaining = self._expires_in(session_id)
                if remaining is not None:
                    waits.append(min(remaining, caps.idle_timeout_s))
        return max(1, math.ceil(min(waits)))

    def reserve(self, agent: str, caps: McpSessions) -> Refusal | None:
        """Reserve room for one more session of `agent`, or say which cap refuses it and when a slot frees.
        No await runs between the check and the reservation, so two openings on the event loop cannot both win."""
        if self.total() >= caps.max_total:
            wait = self.frees_in(caps)
            return Refusal(503, "total", f"{caps.max_total} MCP sessions are open, the limit (mcp.sessions.max_total); the first "
                           f"frees in {wait} s if left idle (mcp.sessions.idle_timeout_s: {caps.idle_timeout_s:g}); retry then, "
                           "or close unused sessions (HTTP DELETE with Mcp-Session-Id)", wait)
        if self.held_by(agent) >= caps.max_per_agent:
            wait = self.frees_in(caps, agent)
            return Refusal(429, "per_agent", f"agent {agent!r} already holds {caps.max_per_agent} open MCP sessions, the "
                           f"limit (mcp.sessions.max_per_agent); the first frees in {wait} s if left idle "
                           f"(mcp.sessions.idle_timeout_s: {caps.idle_timeout_s:g}); close one (HTTP DELETE with Mcp-Session-Id) "
                           "or retry then", wait)
        self._opening[agent] += 1
        return None

    def settle(self, agent: str, session_id: str | None) -> None:
        """The opening of a reserved session ended: it is open now (an id) or it never opened (None)."""
        self._opening[agent] -= 1
        if self._opening[agent] <= 0:
            del self._opening[agent]
        if session_id is not None:
            self._owners[session_id] = agent


class SessionCollector(Collector):
    """hal0_mcp_sessions{server}: open sessions at scrape time, read from the SDK's session managers."""

    def __init__(self, counts: Callable[[], dict[str, int | None]]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily("hal0_mcp_sessions", "Open MCP sessions (streamable HTTP)", labels=["server"])
        for server, count in self._counts().items():
            if count is not None:
                gauge.add_metric([server], count)
        return [gauge]
