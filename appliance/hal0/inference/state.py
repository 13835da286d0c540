"""A model's state: the one vocabulary the runtime, the lifecycle, the views and the metrics share."""

from __future__ import annotations

import enum


class ModelState(enum.StrEnum):
    """Where a configured model is. The runtime moves it between them; the lifecycle also reports LOADING
    for a start-up model queued behind another's load, so /health and /v1/models never say `unloaded` then."""

    UNLOADED = "unloaded"  # never loaded yet, or unloaded (keep_alive, eviction, admin)
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


class ModelUnavailable(Exception):
    """The model is not loaded (still loading, failed, or unloaded)."""


__all__ = ["ModelState", "ModelUnavailable"]
