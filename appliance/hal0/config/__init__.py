"""Layer 0: the configuration. Imports nothing else of hal0."""

from hal0.config.errors import ConfigError, ConfigIssue
from hal0.config.loader import LoadedConfig, load_config, load_text
from hal0.config.models import Hal0Config, ModelConfig

__all__ = ["ConfigError", "ConfigIssue", "Hal0Config", "LoadedConfig", "ModelConfig", "load_config", "load_text"]
