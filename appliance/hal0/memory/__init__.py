"""Layer 2: the opt-in, per-agent memory store (SQLite FTS5). Knows nothing of HTTP or MCP."""

from hal0.memory.errors import InvalidInputError, ItemNotFoundError, LimitExceededError, MemoryStoreError
from hal0.memory.model import Item, Limits, Page
from hal0.memory.service import MemoryDisabledError, MemoryService
from hal0.memory.store import MemoryStore

__all__ = [
    "InvalidInputError", "Item", "ItemNotFoundError", "LimitExceededError", "Limits", "MemoryDisabledError", "MemoryService",
    "MemoryStore", "MemoryStoreError", "Page",
]
