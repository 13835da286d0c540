"""Layer 1: models over llama-cpp-python. Knows nothing of HTTP.

A dialect builds a `Task`, takes the model's turn through its lifecycle (`Lifecycle.use`: the model's
`Admission` counts and orders its requests), and iterates the events of `ModelRuntime.start(task).events()`:
TextDelta / ToolCallDelta, then one Finish.
"""

from hal0.inference.admission import Admission, Hold, QueueFull
from hal0.inference.bridge import Cancelled, Generation, until_done
from hal0.inference.embeddings import EmbeddingFailed, EmbeddingTimeout
from hal0.inference.generate import check_task
from hal0.inference.lifecycle import Lifecycle, ModelStatus, StillLoading
from hal0.inference.registry import ModelRegistry, UnknownModel
from hal0.inference.runtime import ModelRuntime
from hal0.inference.sampling import Sampling
from hal0.inference.state import ModelState, ModelUnavailable
from hal0.inference.task import (
    Event,
    Finish,
    GenerationFailed,
    GrammarOutput,
    InvalidTask,
    JsonOutput,
    ReasoningDelta,
    Task,
    TextDelta,
    TokenLogprob,
    Tool,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "Admission", "Cancelled", "EmbeddingFailed", "EmbeddingTimeout", "Event", "Finish", "Generation", "GenerationFailed", "GrammarOutput", "Hold",
    "InvalidTask", "JsonOutput", "Lifecycle", "ModelRegistry", "ModelRuntime", "ModelState", "ModelStatus", "ModelUnavailable", "QueueFull", "ReasoningDelta",
    "Sampling", "StillLoading", "Task", "TextDelta", "TokenLogprob", "Tool", "ToolCallDelta", "UnknownModel", "Usage", "check_task", "until_done",
]
