"""Layer 1: models over llama-cpp-python. Knows nothing of HTTP."""

from hal0.inference.registry import ModelRegistry, UnknownModel
from hal0.inference.runtime import Guard, LoadState, ModelRuntime, ModelUnavailable, QueueFull

__all__ = ["Guard", "LoadState", "ModelRegistry", "ModelRuntime", "ModelUnavailable", "QueueFull", "UnknownModel"]
