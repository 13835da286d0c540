"""Where the appliance image's first boot leaves its verdict on the boot partition's hal0.yaml.

roles/firstboot writes this file when the operator's hal0.yaml was rejected (the baked config
stayed); the dashboard shows it so the operator learns why their edit did not take. The path is
the hal0 role's (hal0_firstboot_error_file, under hal0_state_dir), which its unit passes as
HAL0_FIRSTBOOT_ERROR: no copy of it here, so moving the state directory cannot hide the notice.
Without the variable (hal0 run by hand, not by the unit) there is no first boot to report.
"""

from __future__ import annotations

import os
from pathlib import Path

FIRSTBOOT_ERROR_ENV = "HAL0_FIRSTBOOT_ERROR"


def firstboot_error() -> str | None:
    configured = os.environ.get(FIRSTBOOT_ERROR_ENV)
    if not configured:
        return None
    try:
        return Path(configured).read_text(errors="replace").strip() or None
    except OSError:
        return None
