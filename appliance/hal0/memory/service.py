"""Memory as the running server sees it: on or off per the live config, opened on first use.

Opening lazily is what makes "disabled creates nothing on disk" true by construction, and lets a
config reload turn memory on (or move it) without a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from hal0.config.models import MemoryConfig
from hal0.memory.model import Limits
from hal0.memory.store import MemoryStore

ENABLE_HINT = (
    "memory is disabled on this hal0 (it is opt-in); to enable it, set `memory.enabled: true` in the "
    "config (/etc/hal0/hal0.yaml) and run `systemctl reload hal0`"
)


class MemoryDisabledError(Exception):
    def __init__(self) -> None:
        super().__init__(ENABLE_HINT)


class MemoryService:
    def __init__(self, config: Callable[[], MemoryConfig]) -> None:
        self._config = config
        self._store: MemoryStore | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._config().enabled

    def limits(self) -> Limits:
        config = self._config()
        return Limits(max_items=config.max_items_per_agent, max_item_bytes=config.max_item_bytes)

    def store(self) -> MemoryStore:
        """The open store, or MemoryDisabledError. Re-opens when a reload changed `memory.path`."""
        config = self._config()
        if not config.enabled:
            raise MemoryDisabledError
        with self._lock:
            if self._store is None or str(self._store.path) != config.path:
                if self._store is not None:
                    self._store.close()
                self._store = MemoryStore(config.path)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None
