"""The approval queue's life outside requests: recovery at start-up and the periodic expiry.

Here, beside what runs approved calls (tools.gated.execute), rather than in api/: nothing
in it is HTTP, and the app's lifespan is its only caller.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from hal0.tools.gated import execute

log = logging.getLogger("hal0.approvals")
HOUSEKEEPING_INTERVAL_S = 2.0
LOAD_WAIT_S = 600.0  # resumed calls wait for models to load, at most this long


def recover(services: Any) -> list[str]:
    """At start-up, before the first request: fail what a crash interrupted mid-run (never re-run it)
    and return the approved calls that never started, to be resumed."""
    store = services.approvals_if_present()
    if store is None:
        return []
    resume, interrupted = store.recover()
    for approval_id in interrupted:
        log.warning("approval %s was running when hal0 stopped: marked failed, not re-run", approval_id)
    return resume


async def run(services: Any, resume: list[str]) -> None:
    """Run the resumed approvals once models are loaded; then expire pending approvals on time."""
    waited = 0.0
    while resume and services.lifecycle.health == "loading" and waited < LOAD_WAIT_S:  # resumed calls act on models
        await asyncio.sleep(0.1)
        waited += 0.1
    for approval_id in resume:
        log.info("resuming approved call %s", approval_id)
        await execute(services, approval_id)
    while True:
        await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
        store = services.approvals_if_present()
        if store is not None:
            store.expire_due()
