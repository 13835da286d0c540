"""Where the appliance image's first boot leaves its verdict on the boot partition's hal0.yaml.

roles/firstboot writes this file when the operator's hal0.yaml was rejected (the baked config
stayed); the dashboard shows it so the operator learns why their edit did not take.
"""

from __future__ import annotations

import os
from pathlib import Path


def firstboot_error() -> str | None:
    path = Path(os.environ.get("HAL0_FIRSTBOOT_ERROR", "/var/lib/hal0/firstboot-error.txt"))
    try:
        return path.read_text(errors="replace").strip() or None
    except OSError:
        return None
