"""The `hal0` command: serve, config, models, approvals, memory, image (one module per command group)."""

from hal0.cli.main import main

__all__ = ["main"]
