"""Embeddings: a second llama.cpp context over the same (memory-mapped) weights, made on first use.

llama-cpp-python's exceptions stay here: an input over the context is an InvalidTask (400), any other
failure EmbeddingFailed (503), a set `cancel` (client gone) Cancelled, a passed deadline EmbeddingTimeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from hal0.inference.bridge import Cancelled
from hal0.inference.task import InvalidTask

_POOLING_MEAN = 1
EMBED_GROUP = 4  # inputs per embedding call: how soon another request, a cancel or the deadline is seen


class EmbeddingFailed(RuntimeError):
    """llama.cpp failed while embedding (not the input's fault)."""


class EmbeddingTimeout(RuntimeError):
    """The request passed its deadline (server.request_timeout_s) before every input was embedded."""


def check_embedding(cancel: threading.Event, deadline: float) -> None:
    """Between pieces: Cancelled when the client left, EmbeddingTimeout past the deadline (perf_counter)."""
    if cancel.is_set():
        raise Cancelled("embeddings cancelled")
    if time.perf_counter() >= deadline:
        raise EmbeddingTimeout("the embeddings were not done within server.request_timeout_s")


def merge_embeddings(pieces: list[dict[str, Any]]) -> dict[str, Any]:
    """The pieces' data, in order, and their usage summed: OpenAI's `data` and `usage`."""
    data = [item for piece in pieces for item in piece["data"]]
    prompt_tokens = sum(piece["usage"]["prompt_tokens"] for piece in pieces)
    return {"data": data, "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


class Embedder:
    """The model's embedding context. Call `embed` on the model's worker thread, inside a slot."""

    def __init__(self, llama_kwargs: Callable[[], dict[str, Any]]) -> None:
        self._llama_kwargs = llama_kwargs
        self._llama: Any = None

    def embed(self, inputs: list[str], first: int) -> dict[str, Any]:
        """One piece: the OpenAI-shaped `data` (indexes counted from `first`) and `usage` of `inputs`."""
        try:
            if self._llama is None:
                from llama_cpp import Llama

                self._llama = Llama(**{**self._llama_kwargs(), "embedding": True, "pooling_type": _POOLING_MEAN})
            part = self._llama.create_embedding(inputs)
        except ValueError as error:  # llama-cpp-python: an input longer than the context
            raise InvalidTask(str(error), param="input", code="context_length_exceeded") from None
        except RuntimeError as error:
            raise EmbeddingFailed(str(error)) from None
        data = [{**item, "index": first + item["index"]} for item in part["data"]]
        return {"data": data, "usage": {"prompt_tokens": part.get("usage", {}).get("prompt_tokens", 0)}}

    def close(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None


__all__ = ["EMBED_GROUP", "Embedder", "EmbeddingFailed", "EmbeddingTimeout", "check_embedding", "merge_embeddings"]
