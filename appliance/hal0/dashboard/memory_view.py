"""The Memory tab: every namespace with its count, search within one, one item.

The operator sees all namespaces, so this reads the store directly (read-only) instead of going
through /api/memory, whose namespace is the caller's own X-hal0-Agent: the dashboard must never
present itself as an agent, neither to read nor to be gated by an agent's persona.
"""

from __future__ import annotations

from typing import Any

from hal0.memory import ItemNotFoundError, MemoryStoreError
from hal0.memory.service import ENABLE_HINT
from hal0.services import Services

PAGE = 50


def memory_tab(services: Services, namespace: str | None, query: str | None, item_id: str | None) -> dict[str, Any]:
    if not services.memory.enabled:
        return {"enabled": False, "hint": ENABLE_HINT}
    store = services.memory.store()
    namespaces = store.namespaces()
    view: dict[str, Any] = {"enabled": True, "path": store.path, "namespaces": namespaces, "namespace": namespace,
                            "query": query or "", "results": None, "item": None, "error": None}
    if namespace is None and namespaces:
        view["namespace"] = namespace = namespaces[0][0]
    if namespace is None:
        return view
    try:
        page = store.search(namespace, query, limit=PAGE) if query else store.list(namespace, limit=PAGE)
        view["results"] = page.items
        view["more"] = page.next_cursor is not None
        if item_id:
            view["item"] = store.get(namespace, item_id)
    except ItemNotFoundError:
        view["error"] = f"no item {item_id!r} in namespace {namespace!r}"
    except MemoryStoreError as error:
        view["error"] = str(error)
    return view
