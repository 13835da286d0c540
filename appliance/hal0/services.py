"""The live services of one running hal0: the current config, the models and their lifecycle, the metrics.

Routes read the config through `Services.config` (the `Hal0Config`) on every request, so a reload (SIGHUP) that
swaps it is seen by the next request while requests already running keep the one they started with.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hal0 import __version__
from hal0.agents.approvals import ApprovalStore
from hal0.agents.quotas import Quotas
from hal0.agents.rules import CONFIG_CHECKS
from hal0.config import ConfigError, Hal0Config, LoadedConfig, load_config
from hal0.inference import Lifecycle, ModelRegistry
from hal0.memory import MemoryService
from hal0.metrics import Metrics

log = logging.getLogger("hal0")


@dataclass(frozen=True)
class ReloadResult:
    ok: bool
    message: str
    restart_needed: bool = False


@dataclass
class Services:
    loaded: LoadedConfig
    models: ModelRegistry
    lifecycle: Lifecycle
    metrics: Metrics
    memory: MemoryService
    quotas: Quotas  # per-agent counters: outside the config, so they survive a reload
    started_at: float = field(default_factory=time.time)
    version: str = __version__
    last_reload: ReloadResult | None = None
    _approvals: ApprovalStore | None = None
    _reload_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def approvals(self) -> ApprovalStore:
        """The approval queue, opened (and created) at first use: a box nobody gates writes nothing."""
        if self._approvals is None:
            self._approvals = ApprovalStore(self.loaded.config.agents.approvals.path)
        return self._approvals

    def approvals_if_present(self) -> ApprovalStore | None:
        """The queue if it exists on disk (start-up recovery must not create it)."""
        if self._approvals is None and not Path(self.loaded.config.agents.approvals.path).exists():
            return None
        return self.approvals

    def close(self) -> None:
        self.models.close()
        self.memory.close()
        if self._approvals is not None:
            self._approvals.close()

    @classmethod
    def create(cls, loaded: LoadedConfig) -> Services:
        models = ModelRegistry(loaded.config.models, verbose=loaded.config.server.log_level == "debug")
        lifecycle = Lifecycle(models, loaded.config.server.max_loaded_models)
        services: Services
        # The memory service reads the live config, so a reload can turn memory on or off.
        memory = MemoryService(lambda: services.loaded.config.memory)
        metrics = Metrics(models, lifecycle)
        services = cls(loaded=loaded, models=models, lifecycle=lifecycle, metrics=metrics, memory=memory, quotas=Quotas(observer=metrics))
        return services

    @property
    def config(self) -> Hal0Config:
        """The effective config (file plus environment); `loaded` beside it has its path, sources and digest."""
        return self.loaded.config

    async def reload_off_loop(self) -> ReloadResult:
        """`reload` in a worker thread: reading and validating a file is blocking work (a slow disk, a
        hostile file), and the event loop must keep serving while it runs."""
        return await asyncio.to_thread(self.reload)

    def reload(self) -> ReloadResult:
        """Re-read and re-validate the config file; keep the last good one when it is bad.

        Policy (server limits, mcp, memory, agents) takes effect at once. The models and their
        lifecycle are built at start-up (and the GPU devices are the process's environment), so a change to
        `models`, `server.max_loaded_models` or `server.gpu_devices` is
        reported as needing a restart (the role restarts).
        Blocking: call it from a worker thread (reload_off_loop) when on the event loop.
        """
        with self._reload_lock:  # two SIGHUPs in a row: one reload after the other, never interleaved
            return self._reload()

    def _reload(self) -> ReloadResult:
        try:
            fresh = load_config(self.loaded.path, os.environ, checks=CONFIG_CHECKS)
        except ConfigError as error:
            result = ReloadResult(False, f"config reload refused, keeping the last good config:\n{error}")
            log.error("%s", result.message)
        else:
            old, new = self.loaded.config.server, fresh.config.server
            restart = fresh.config.models != self.loaded.config.models or (
                (new.bind, new.port, new.max_loaded_models, new.gpu_devices)
                != (old.bind, old.port, old.max_loaded_models, old.gpu_devices)
            )
            self.loaded = fresh
            note = "; models, bind, max_loaded_models or gpu_devices changed: restart hal0 to apply them" if restart else ""
            result = ReloadResult(True, f"config reloaded from {fresh.path}{note}", restart_needed=restart)
            log.info("%s", result.message)
        self.last_reload = result
        return result
