"""Embeddings: a second llama.cpp context over the same (memory-mapped) weights, made on first use.

llama-cpp-python's exceptions stay here: an input over the context is an InvalidTask (400), any other
failure EmbeddingFailed (503), a set `cancel` (client gone) Cancelled.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from hal0.inference.bridge import Cancelled
from hal0.inference.task import InvalidTask

_POOLING_MEAN = 1
_EMBED_GROUP = 4  # inputs per embedding call: how soon an abandoned request gives the turn back


class EmbeddingFailed(RuntimeError):
    """llama.cpp failed while embedding (not the input's fault)."""


class Embedder:
    """The model's embedding context. Call `embed` on the model's worker thread, inside a slot."""

    def __init__(self, llama_kwargs: Callable[[], dict[str, Any]]) -> None:
        self._llama_kwargs = llama_kwargs
        self._llama: Any = None

    def embed(self, inputs: list[str], cancel: threading.Event) -> dict[str, Any]:
        """The OpenAI-shaped `data` and `usage` of `inputs`, embedded a few at a time so a set `cancel`
        frees the model within one group."""
        try:
            return self._embed(inputs, cancel)
        except (Cancelled, InvalidTask):
            raise
        except ValueError as error:  # llama-cpp-python: an input longer than the context
            raise InvalidTask(str(error), param="input", code="context_length_exceeded") from None
        except RuntimeError as error:
            raise EmbeddingFailed(str(error)) from None

    def _embed(self, inputs: list[str], cancel: threading.Event) -> dict[str, Any]:
        if self._llama is None:
            from llama_cpp import Llama

            self._llama = Llama(**{**self._llama_kwargs(), "embedding": True, "pooling_type": _POOLING_MEAN})
        data: list[dict[str, Any]] = []
        prompt_tokens = 0
        for first in range(0, len(inputs), _EMBED_GROUP):
            if cancel.is_set():
                raise Cancelled("embeddings cancelled")
            part = self._llama.create_embedding(inputs[first : first + _EMBED_GROUP])
            data.extend({**item, "index": first + item["index"]} for item in part["data"])
            prompt_tokens += part.get("usage", {}).get("prompt_tokens", 0)
        return {"data": data, "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}

    def close(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None


__all__ = ["Embedder", "EmbeddingFailed"]
