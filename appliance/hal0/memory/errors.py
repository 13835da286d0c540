"""What can go wrong with a memory operation, as types the HTTP and MCP layers map to their codes."""

from __future__ import annotations


class MemoryStoreError(Exception):
    """Base class. `code` is a stable machine-readable reason."""

    code = "memory_error"


class InvalidInputError(MemoryStoreError, ValueError):
    code = "invalid_value"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ItemNotFoundError(MemoryStoreError, LookupError):
    # The same answer for "no such id" and "an id in another namespace", so ids leak nothing.
    code = "memory_item_not_found"

    def __init__(self, item_id: str) -> None:
        super().__init__(f"memory item {item_id!r} does not exist in this agent's namespace")
        self.item_id = item_id


class LimitExceededError(MemoryStoreError):
    """A per-agent limit from the config (`memory.max_items_per_agent`, `memory.max_item_bytes`)."""

    def __init__(self, message: str, code: str, setting: str) -> None:
        super().__init__(message)
        self.code = code
        self.setting = setting
