"""Layer 1: models over llama-cpp-python. Knows nothing of HTTP.

A dialect builds a `Task`, takes the model's turn (`ModelRuntime.turn`), and iterates the events
of `ModelRuntime.start(task).events()`: TextDelta / ToolCallDelta, then one Finish.
"""

from hal0.inference.generate import check_task
from hal0.inference.lifecycle import Lifecycle, ModelStatus, StillLoading
from hal0.inference.registry import ModelRegistry, UnknownModel
from hal0.inference.runtime import Cancelled, Generation, LoadState, ModelRuntime, ModelUnavailable, QueueFull
from hal0.inference.sampling import Sampling
from hal0.inference.task import (
    Event,
    Finish,
    GenerationFailed,
    InvalidTask,
    JsonOutput,
    Task,
    TextDelta,
    TokenLogprob,
    Tool,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "Cancelled", "Event", "Finish", "Generation", "GenerationFailed", "InvalidTask", "JsonOutput", "Lifecycle", "LoadState",
    "ModelRegistry", "ModelRuntime", "ModelStatus", "ModelUnavailable", "QueueFull", "Sampling", "StillLoading", "Task",
    "TextDelta", "TokenLogprob", "Tool", "ToolCallDelta", "UnknownModel", "Usage", "check_task",
]
