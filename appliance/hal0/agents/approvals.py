"""The approval queue and its append-only audit log, in SQLite (WAL).

States: pending -> approved -> executing -> executed | failed; pending -> denied; pending -> expired.
Every transition is one conditional UPDATE (`WHERE state = ?`), so two approvers racing cannot both
win, and a call runs at most once: `claim()` moves approved -> executing before the tool runs. After
a crash, approvals still `approved` are resumed (they never started), while ones left `executing`
are marked failed ("interrupted"), because re-running them could run a tool twice.
Every transition appends an audit row; triggers make the audit table refuse UPDATE and DELETE.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from hal0.store.sqlite import Migration, connect, migrate

State = Literal["pending", "approved", "executing", "executed", "failed", "denied", "expired"]
STATES: tuple[State, ...] = ("pending", "approved", "executing", "executed", "failed", "denied", "expired")

MIGRATIONS = (
    Migration(
        1,
        """
        CREATE TABLE approvals (
            id TEXT PRIMARY KEY,
            agent TEXT NOT NULL,
            tool TEXT NOT NULL,
            args TEXT NOT NULL,
            args_hash TEXT NOT NULL,
            state TEXT NOT NULL,
            rule TEXT NOT NULL,
            reason TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            grant_ttl_s REAL,
            decided_by TEXT,
            decided_at REAL,
            note TEXT,
            result TEXT,
            error TEXT,
            finished_at REAL
        );
        CREATE INDEX approvals_state ON approvals(state, created_at);
        CREATE INDEX approvals_call ON approvals(agent, tool, args_hash, state);
        CREATE TABLE audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            approval_id TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            detail TEXT
        );
        CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
        CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
        """,
    ),
)


def args_hash(args: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(args, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class Approval:
    id: str
    agent: str
    tool: str
    args: dict[str, Any]
    state: State
    rule: str
    reason: str
    created_at: float
    expires_at: float
    decided_by: str | None
    decided_at: float | None
    note: str | None
    result: Any
    error: str | None
    finished_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Approval:
        return cls(
            id=row["id"], agent=row["agent"], tool=row["tool"], args=json.loads(row["args"]), state=row["state"],
            rule=row["rule"], reason=row["reason"], created_at=row["created_at"], expires_at=row["expires_at"],
            decided_by=row["decided_by"], decided_at=row["decided_at"], note=row["note"],
            result=json.loads(row["result"]) if row["result"] is not None else None, error=row["error"],
            finished_at=row["finished_at"],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "agent": self.agent, "tool": self.tool, "args": self.args, "state": self.state,
            "rule": self.rule, "reason": self.reason, "created_at": self.created_at, "expires_at": self.expires_at,
            "decided_by": self.decided_by, "decided_at": self.decided_at, "note": self.note,
            "result": self.result, "error": self.error, "finished_at": self.finished_at,
        }


class TransitionError(Exception):
    """The approval is not in a state that allows this (e.g. approving an expired one)."""


class PendingLimitError(Exception):
    """The agent already has `agents.approvals.max_pending_per_agent` distinct calls waiting for a human."""

    def __init__(self, agent: str, limit: int) -> None:
        super().__init__(f"agent {agent!r} already has {limit} calls waiting for a human's approval, the limit "
                         "(agents.approvals.max_pending_per_agent); wait until some are decided or expire")


class ApprovalStore:
    def __init__(self, path: str | Path) -> None:
        self._conn = connect(path)
        self._lock = threading.Lock()
        migrate(self._conn, MIGRATIONS)

    def close(self) -> None:
        self._conn.close()

    # -- reading ------------------------------------------------------------------------------

    def get(self, approval_id: str) -> Approval | None:
        self.expire_due()
        row = self._conn.execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        return Approval.from_row(row) if row else None

    def list(self, *, state: str | None = None, agent: str | None = None, limit: int = 100) -> list[Approval]:
        self.expire_due()
        # Pending first (what a human must act on), then newest first.
        query = "SELECT * FROM approvals WHERE (? IS NULL OR state = ?) AND (? IS NULL OR agent = ?)"
        query += " ORDER BY state = 'pending' DESC, created_at DESC LIMIT ?"
        rows = self._conn.execute(query, (state, state, agent, agent, limit)).fetchall()
        return [Approval.from_row(row) for row in rows]

    def audit(self, *, approval_id: str | None = None, agent: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first; `agent` keeps only the rows of that agent's approvals (an agent's own view)."""
        rows = self._conn.execute(
            "SELECT audit.* FROM audit WHERE (? IS NULL OR approval_id = ?)"
            " AND (? IS NULL OR approval_id IN (SELECT id FROM approvals WHERE agent = ?)) ORDER BY seq DESC LIMIT ?",
            (approval_id, approval_id, agent, agent, limit),
        ).fetchall()
        return [dict(row) for row in rows]

    def pending_count(self, *, agent: str | None = None) -> int:
        """Pending approvals, of one agent or (None) of everyone."""
        self.expire_due()
        query = "SELECT count(*) FROM approvals WHERE state = 'pending' AND (? IS NULL OR agent = ?)"
        return self._conn.execute(query, (agent, agent)).fetchone()[0]

    def granted(self, agent: str, tool: str, args: dict[str, Any], now: float | None = None) -> Approval | None:
        """An executed approval of the same call whose rule grants re-use (`expires_after`) still valid."""
        now = time.time() if now is None else now
        row = self._conn.execute(
            "SELECT * FROM approvals WHERE agent = ? AND tool = ? AND args_hash = ? AND state = 'executed'"
            " AND grant_ttl_s IS NOT NULL AND decided_at + grant_ttl_s > ? ORDER BY decided_at DESC LIMIT 1",
            (agent, tool, args_hash(args), now),
        ).fetchone()
        return Approval.from_row(row) if row else None

    # -- transitions --------------------------------------------------------------------------

    def enqueue(
        self, agent: str, tool: str, args: dict[str, Any], *, rule: str, reason: str, ttl_s: float, grant_ttl_s: float | None = None,
        max_pending: int | None = None,
    ) -> tuple[Approval, bool]:
        """Queue a call for a human. Identical pending calls by the same agent collapse into one.

        Returns the approval and whether it was newly created. PendingLimitError when the agent already
        has `max_pending` other calls pending (counted in the same transaction as the insert, so a burst
        of concurrent calls cannot overshoot it).
        """
        self.expire_due()
        digest = args_hash(args)
        with self._lock, self._conn:
            existing = self._conn.execute(
                "SELECT * FROM approvals WHERE agent = ? AND tool = ? AND args_hash = ? AND state = 'pending'",
                (agent, tool, digest),
            ).fetchone()
            if existing:
                return Approval.from_row(existing), False
            if max_pending is not None:
                waiting = self._conn.execute("SELECT count(*) FROM approvals WHERE agent = ? AND state = 'pending'", (agent,)).fetchone()[0]
                if waiting >= max_pending:
                    raise PendingLimitError(agent, max_pending)
            now = time.time()
            approval_id = uuid.uuid4().hex[:16]
            self._conn.execute(
                "INSERT INTO approvals (id, agent, tool, args, args_hash, state, rule, reason, created_at, expires_at, grant_ttl_s)"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                (approval_id, agent, tool, json.dumps(args, sort_keys=True), digest, rule, reason, now, now + ttl_s, grant_ttl_s),
            )
            self._log(approval_id, agent, "request", None, "pending", reason)
        created = self.get(approval_id)
        assert created is not None
        return created, True

    def approve(self, approval_id: str, by: str, note: str | None = None) -> Approval:
        return self._decide(approval_id, by, note, "approved", "approve")

    def deny(self, approval_id: str, by: str, note: str | None = None) -> Approval:
        return self._decide(approval_id, by, note, "denied", "deny")

    def _decide(self, approval_id: str, by: str, note: str | None, to_state: State, action: str) -> Approval:
        self.expire_due()
        with self._lock, self._conn:
            changed = self._conn.execute(
                "UPDATE approvals SET state = ?, decided_by = ?, decided_at = ?, note = ? WHERE id = ? AND state = 'pending'",
                (to_state, by, time.time(), note, approval_id),
            ).rowcount
            if changed:
                self._log(approval_id, by, action, "pending", to_state, note)
        current = self.get(approval_id)
        if current is None:
            raise KeyError(approval_id)
        if not changed:
            raise TransitionError(f"approval {approval_id} is {current.state}, not pending: it cannot be {to_state}")
        return current

    def claim(self, approval_id: str) -> bool:
        """approved -> executing. Only one caller ever gets True for an approval."""
        with self._lock, self._conn:
            changed = self._conn.execute(
                "UPDATE approvals SET state = 'executing' WHERE id = ? AND state = 'approved'", (approval_id,)
            ).rowcount
            if changed:
                self._log(approval_id, "hal0", "execute", "approved", "executing", None)
        return bool(changed)

    def finish(self, approval_id: str, *, result: Any = None, error: str | None = None) -> Approval:
        to_state: State = "failed" if error is not None else "executed"
        with self._lock, self._conn:
            changed = self._conn.execute(
                "UPDATE approvals SET state = ?, result = ?, error = ?, finished_at = ? WHERE id = ? AND state = 'executing'",
                (to_state, json.dumps(result) if error is None else None, error, time.time(), approval_id),
            ).rowcount
            if changed:
                self._log(approval_id, "hal0", "finish", "executing", to_state, error)
        current = self.get(approval_id)
        assert current is not None
        return current

    def expire_due(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._lock, self._conn:
            due = self._conn.execute("SELECT id, agent FROM approvals WHERE state = 'pending' AND expires_at <= ?", (now,)).fetchall()
            for row in due:
                changed = self._conn.execute(
                    "UPDATE approvals SET state = 'expired', decided_by = 'hal0', decided_at = ? WHERE id = ? AND state = 'pending'",
                    (now, row["id"]),
                ).rowcount
                if changed:
                    self._log(row["id"], "hal0", "expire", "pending", "expired", "not approved in time (agents.approvals.pending_ttl)")
        return len(due)

    def recover(self) -> tuple[list[str], list[str]]:
        """After a restart: (approved ids to resume, executing ids marked failed as interrupted)."""
        with self._lock, self._conn:
            interrupted = [row["id"] for row in self._conn.execute("SELECT id FROM approvals WHERE state = 'executing'")]
            for approval_id in interrupted:
                self._conn.execute(
                    "UPDATE approvals SET state = 'failed', error = ?, finished_at = ? WHERE id = ? AND state = 'executing'",
                    ("interrupted by a restart while running; not re-run, so it can never run twice", time.time(), approval_id),
                )
                self._log(approval_id, "hal0", "interrupted", "executing", "failed", "restart")
        resume = [row["id"] for row in self._conn.execute("SELECT id FROM approvals WHERE state = 'approved' ORDER BY decided_at")]
        return resume, interrupted

    def _log(self, approval_id: str, actor: str, action: str, from_state: str | None, to_state: str, detail: str | None) -> None:
        self._conn.execute(
            "INSERT INTO audit (at, approval_id, actor, action, from_state, to_state, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (time.time(), approval_id, actor, action, from_state, to_state, detail),
        )
