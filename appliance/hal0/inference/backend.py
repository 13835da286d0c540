"""The one seam to llama-cpp-python's internals.

hal0 runs llama.cpp through llama-cpp-python's `Llama`, and below it through what the package does not
promise to keep: the Llama's `_model` (the `_internals.LlamaModel`: vocabulary, model pointer) and
`_ctx` (its context), a second `_internals.LlamaContext` for the batched slots, and
`_internals.LlamaSampler` chains. Every reach into them is here, so that a llama-cpp-python upgrade (or
another backend) changes this module only. llama.cpp's own C functions (`llama_cpp.llama_decode` and
the rest) are its public API and are called where they are used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def model_of(llama: Any) -> Any:
    """The Llama's `_internals.LlamaModel` (`.model` the llama_model pointer, `.vocab` its vocabulary)."""
    return llama._model


def context_of(llama: Any) -> Any:
    """The llama_context pointer of the Llama's own context."""
    return llama._ctx.ctx


def thread_setter(context: Any) -> Callable[[int, int], None]:
    """Sets the generation and batch thread counts of a llama_context pointer for its next decodes."""
    import llama_cpp

    return lambda threads, batch: llama_cpp.llama_set_n_threads(context, threads, batch)


def new_context(model: Any, params: Any) -> Any:
    """A further context over `model` (the batched slots' own); close it with close_context."""
    from llama_cpp import _internals

    return _internals.LlamaContext(model=model, params=params, verbose=False)


def context_pointer(context: Any) -> Any:
    """The llama_context pointer of a context new_context made."""
    return context.ctx


def close_context(context: Any) -> None:
    context.close()


def new_sampler() -> Any:
    """An empty sampler chain (`add_*` to build it, `.sampler` the chain pointer, `close()` when done)."""
    from llama_cpp import _internals

    return _internals.LlamaSampler()
