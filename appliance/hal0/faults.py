"""Named fault-injection points for the crash tests (issue 8's proof, the approval crash test).

`HAL0_FAULT=NAME` makes the server SIGKILL itself when it reaches the point NAME, exactly as an
operator's `kill -9` or a power cut would, so tests can hit a precise window deterministically.
Unset (always, in production) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def point(name: str) -> None:
    if os.environ.get("HAL0_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def delay(name: str) -> float:
    """Seconds to stall at the point NAME when `HAL0_FAULT=NAME` (`HAL0_FAULT_SECONDS`, default 1), else 0.

    A slow model load, for instance, lets a test hold many requests inside one load deterministically."""
    if os.environ.get("HAL0_FAULT") != name:
        return 0.0
    return float(os.environ.get("HAL0_FAULT_SECONDS", "1"))
