"""Layer 2: the opt-in, per-agent memory store (SQLite FTS5). Knows nothing of HTTP or MCP."""

from hal0.memory.errors import InvalidInput, ItemNotFound, LimitExceeded, MemoryStoreError
from hal0.memory.model import Item, Limits, Page
from hal0.memory.service import MemoryDisabled, MemoryService
from hal0.memory.store import MemoryStore

__all__ = [
    "InvalidInput", "Item", "ItemNotFound", "LimitExceeded", "Limits", "MemoryDisabled", "MemoryService",
    "MemoryStore", "MemoryStoreError", "Page",
]
