"""Who opened each MCP session, so sessions can be capped per agent and in total (mcp.sessions).

3000 sessions opened and never closed cost about 39 KB each until the SDK's idle timeout (issue 20).
The SDK can cap the total per server but knows nothing of agents, so hal0 keeps its own table: the
agent (X-hal0-Agent of the opening request) of every session it let open, plus the openings still in
flight (reserved before the SDK admits them, so concurrent openings cannot overshoot a cap). Sessions
the SDK has ended (client DELETE, idle expiry, a failed opening) are pruned against its live table.
"""

from __future__ import annotations

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


class SessionTable:
    def __init__(self, live: Callable[[], set[str] | None]) -> None:
        self._live = live  # the session ids the SDK still serves (None: it hides them)
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

    def reserve(self, agent: str, caps: McpSessions) -> Refusal | None:
        """Reserve room for one more session of `agent`, or say which cap refuses it. No await runs
        between the check and the reservation, so two openings on the event loop cannot both win."""
        if self.total() >= caps.max_total:
            return Refusal(503, "total", f"{caps.max_total} MCP sessions are open, the limit (mcp.sessions.max_total); "
                           "retry later, or close unused sessions (HTTP DELETE with Mcp-Session-Id)")
        if self.held_by(agent) >= caps.max_per_agent:
            return Refusal(429, "per_agent", f"agent {agent!r} already holds {caps.max_per_agent} open MCP sessions, the "
                           "limit (mcp.sessions.max_per_agent); close one (HTTP DELETE with Mcp-Session-Id) or let idle ones "
                           f"expire ({caps.idle_timeout_s:g} s, mcp.sessions.idle_timeout_s)")
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
