"""`30s`, `10m`, `1h`, `2d` (the config's duration syntax) in seconds.

Layer 0 so that every layer reading a duration from the config (approval expiry, model keep-alive)
reads it the same way.
"""

from __future__ import annotations

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def seconds(duration: str) -> float:
    return int(duration[:-1]) * _UNITS[duration[-1]]
