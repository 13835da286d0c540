"""The Config tab: the running config with the source of each value, and the file on disk checked
by the same loader `hal0 serve` and `systemctl reload hal0` use, so the tab predicts a reload."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hal0.agents.rules import CONFIG_CHECKS
from hal0.config import ConfigError, load_config
from hal0.config.sources import effective_values
from hal0.services import Services


@dataclass(frozen=True)
class DiskCheck:
    ok: bool
    problems: list[str] = field(default_factory=list)
    differs: bool = False  # valid, but not what is running: a reload would change something


def check_disk(services: Services) -> DiskCheck:
    running = services.loaded
    try:
        fresh = load_config(running.path, os.environ, checks=CONFIG_CHECKS)
    except ConfigError as error:
        return DiskCheck(False, [str(issue) for issue in error.issues])
    return DiskCheck(True, differs=fresh.config != running.config)


def config_tab(services: Services) -> dict[str, Any]:
    loaded = services.loaded
    return {
        "path": loaded.path,
        "rows": effective_values(loaded),
        "env": dict(loaded.env),
        "disk": check_disk(services),
        "last_reload": services.last_reload,
    }
