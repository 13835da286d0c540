"""One way to open SQLite and one tiny migration runner, so every store behaves the same.

WAL lets readers run while a writer commits, and survives a crash (kill -9) without losing a
committed transaction. `synchronous=NORMAL` is the documented safe pairing with WAL: a power cut
may lose the last transactions but never corrupts the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Migration:
    """One schema step. `version` numbers are per store (its `user_version`), starting at 1."""

    version: int
    sql: str


def connect(path: str | Path, *, create: bool = True) -> sqlite3.Connection:
    """Open (and by default create) a database in WAL mode.

    The connection is shared across threads by the caller under its own lock, hence
    `check_same_thread=False`; autocommit is off and transactions are explicit (`with conn:`).
    """
    target = Path(path)
    if create:
        target.parent.mkdir(parents=True, exist_ok=True)
    elif not target.exists():
        raise FileNotFoundError(f"database does not exist: {target}")
    conn = sqlite3.connect(str(target), check_same_thread=False, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> int:
    """Apply the migrations newer than the database's `user_version`, each in its own transaction.

    Returns the resulting version. A database newer than this code is refused rather than guessed at.
    """
    versions = [step.version for step in migrations]
    if versions != sorted(set(versions)) or (versions and versions[0] < 1):
        raise ValueError(f"migration versions must be unique, ascending and >= 1, got {versions}")
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    latest = versions[-1] if versions else 0
    if current > latest:
        raise RuntimeError(f"database schema version {current} is newer than this hal0 knows ({latest})")
    for step in migrations:
        if step.version <= current:
            continue
        # executescript() commits first; BEGIN makes the step and its version bump one transaction.
        conn.executescript(f"BEGIN;\n{step.sql}\nPRAGMA user_version = {int(step.version)};\nCOMMIT;")
        current = step.version
    return current
