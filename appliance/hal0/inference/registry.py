"""All configured models, looked up by id. Which of them are loaded, and when, is lifecycle.py's job."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from hal0.config.models import ModelConfig
from hal0.inference.runtime import ModelRuntime


class UnknownModel(LookupError):
    def __init__(self, model_id: str, known: Iterable[str]) -> None:
        super().__init__(f"model {model_id!r} does not exist; available: {', '.join(known)}")
        self.model_id = model_id


class ModelRegistry:
    def __init__(self, models: Iterable[ModelConfig], *, verbose: bool = False,
                 runtime: Callable[..., ModelRuntime] = ModelRuntime) -> None:
        # `runtime` makes each model's runtime: ModelRuntime, or in tests one whose load needs no GGUF file.
        self._runtimes = {model.id: runtime(model, verbose=verbose) for model in models}
        self._default = next((model.id for model in models if model.default), next(iter(self._runtimes)))

    def __iter__(self):  # noqa: ANN204 - iterator of runtimes
        return iter(self._runtimes.values())

    @property
    def default_id(self) -> str:
        return self._default

    def get(self, model_id: str | None) -> ModelRuntime:
        """The runtime for an id; None means the default model."""
        runtime = self._runtimes.get(model_id or self._default)
        if runtime is None:
            raise UnknownModel(model_id or "", self._runtimes)
        return runtime

    def close(self) -> None:
        for runtime in self._runtimes.values():
            runtime.close()
