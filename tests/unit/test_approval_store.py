"""The approval queue in SQLite: transitions, collapse, races, expiry, recovery and the audit log."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from hal0.agents.approvals import ApprovalStore, TransitionError


@pytest.fixture
def store(tmp_path: Path) -> ApprovalStore:
    return ApprovalStore(tmp_path / "approvals.db")


def enqueue(store: ApprovalStore, agent: str = "ops", args: dict | None = None, ttl: float = 60):
    return store.enqueue(agent, "admin:unload_model", args or {"model": "tiny"}, rule="r[0]", reason="stops inference", ttl_s=ttl)


def test_identical_pending_calls_collapse(store: ApprovalStore) -> None:
    first, created = enqueue(store)
    second, created_again = enqueue(store)
    other, created_other = enqueue(store, args={"model": "other"})
    assert created and not created_again and created_other
    assert first.id == second.id != other.id
    assert store.pending_count() == 2


def test_full_lifecycle_with_audit(store: ApprovalStore) -> None:
    approval, _ = enqueue(store)
    store.approve(approval.id, "ann", "ok")
    assert store.claim(approval.id)
    done = store.finish(approval.id, result={"changed": True})
    assert done.state == "executed" and done.result == {"changed": True} and done.decided_by == "ann"
    actions = [(row["action"], row["to_state"]) for row in reversed(store.audit(approval_id=approval.id))]
    assert actions == [("request", "pending"), ("approve", "approved"), ("execute", "executing"), ("finish", "executed")]


def test_a_decided_approval_cannot_be_decided_again(store: ApprovalStore) -> None:
    approval, _ = enqueue(store)
    store.deny(approval.id, "ann", "no")
    with pytest.raises(TransitionError, match="is denied, not pending"):
        store.approve(approval.id, "bob")


def test_racing_approvers_claim_exactly_once(store: ApprovalStore) -> None:
    approval, _ = enqueue(store)
    store.approve(approval.id, "ann")
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        wins.append(store.claim(approval.id))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins.count(True) == 1


def test_racing_approve_and_deny_one_wins(store: ApprovalStore) -> None:
    approval, _ = enqueue(store)
    outcomes: list[str] = []

    def act(approve: bool) -> None:
        try:
            (store.approve if approve else store.deny)(approval.id, "x")
            outcomes.append("approve" if approve else "deny")
        except TransitionError:
            outcomes.append("lost")

    threads = [threading.Thread(target=act, args=(index % 2 == 0,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("lost") == 5


def test_pending_approvals_expire(store: ApprovalStore) -> None:
    approval, _ = enqueue(store, ttl=0.05)
    time.sleep(0.1)
    assert store.get(approval.id).state == "expired"
    with pytest.raises(TransitionError, match="expired"):
        store.approve(approval.id, "ann")


def test_recovery_resumes_approved_and_fails_interrupted(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "a.db")
    waiting, _ = enqueue(store, args={"model": "a"})
    approved, _ = enqueue(store, args={"model": "b"})
    running, _ = enqueue(store, args={"model": "c"})
    store.approve(approved.id, "ann")
    store.approve(running.id, "ann")
    store.claim(running.id)
    store.close()
    reopened = ApprovalStore(tmp_path / "a.db")  # as after a restart
    resume, interrupted = reopened.recover()
    assert resume == [approved.id] and interrupted == [running.id]
    assert reopened.get(running.id).state == "failed" and "never run twice" in reopened.get(running.id).error
    assert reopened.get(waiting.id).state == "pending"


def test_the_audit_log_is_append_only(store: ApprovalStore, tmp_path: Path) -> None:
    enqueue(store)
    raw = sqlite3.connect(tmp_path / "approvals.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE audit SET actor = 'mallory'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("DELETE FROM audit")


def test_grants_let_a_recent_approval_cover_the_same_call(store: ApprovalStore) -> None:
    approval, _ = store.enqueue("ops", "admin:unload_model", {"model": "x"}, rule="r", reason="x", ttl_s=60, grant_ttl_s=60)
    store.approve(approval.id, "ann")
    store.claim(approval.id)
    store.finish(approval.id, result={})
    assert store.granted("ops", "admin:unload_model", {"model": "x"}) is not None
    assert store.granted("ops", "admin:unload_model", {"model": "y"}) is None
    assert store.granted("other", "admin:unload_model", {"model": "x"}) is None
    assert store.granted("ops", "admin:unload_model", {"model": "x"}, now=time.time() + 120) is None
