"""Layer 1: SQLite, shared by the stores (memory now, approvals later)."""

from hal0.store.sqlite import Migration, connect, migrate

__all__ = ["Migration", "connect", "migrate"]
