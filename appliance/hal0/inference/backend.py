"""The one seam to llama-cpp-python's internals.

hal0 runs llama.cpp through llama-cpp-python's `Llama`, and below it through what the package does not
promise to keep: the Llama's `_model` (the `_internals.LlamaModel`: vocabulary, model pointer) and
`_ctx` (its context), a second `_internals.LlamaContext` for the batched slots, and
`_internals.LlamaSampler` chains. Every reach into them is here, so that a llama-cpp-python upgrade (or
another backend) changes this module only. llama.cpp's own C functions (`llama_cpp.llama_decode` and
the rest) are its public API and are called where they are used.

llama.cpp's log is here too: what a load really did (which device each layer went to, the buffers it
allocated where) is, in this llama.cpp, only written to its log, so `captured_log` reads it as it is written.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def layer_count(llama: Any) -> int:
    """The model's repeating layers (llama_model_n_layer); llama.cpp counts the output layer as one more."""
    import llama_cpp

    return int(llama_cpp.llama_model_n_layer(model_of(llama).model))


# llama.cpp has one log callback per process. hal0 installs its own once, in front of the one it finds
# (llama-cpp-python's, which prints when a Llama is verbose), and passes every message on to it unchanged.
_log_lock = threading.Lock()
_log_callback: Any = None  # the installed ctypes callback, kept alive as long as llama.cpp may call it
_log_previous: tuple[Any, Any] = (None, None)  # the callback found, and its user data
_log_captures: dict[int, list[str]] = {}  # thread ident -> what llama.cpp logged on that thread, in pieces


def _on_log(level: int, text: bytes | None, user_data: Any) -> None:
    pieces = _log_captures.get(threading.get_ident())
    if pieces is not None and text:
        pieces.append(text.decode(errors="replace"))
    previous, previous_data = _log_previous
    if previous is not None:
        previous(level, text, previous_data)


def _install_log_callback() -> None:
    global _log_callback, _log_previous
    import llama_cpp  # its import installs llama-cpp-python's own callback first

    with _log_lock:
        if _log_callback is not None:
            return
        found = llama_cpp.llama_log_callback()
        found_data = ctypes.c_void_p()
        llama_cpp.llama_log_get(ctypes.byref(found), ctypes.byref(found_data))
        _log_previous = (found if ctypes.cast(found, ctypes.c_void_p).value else None, found_data)
        _log_callback = llama_cpp.llama_log_callback(_on_log)
        llama_cpp.llama_log_set(_log_callback, None)


@contextmanager
def captured_log() -> Iterator[list[str]]:
    """The lines llama.cpp (and ggml) log on this thread while inside, every level, debug included: a
    model load logs from the thread that loads it. What a verbose Llama prints is unchanged."""
    _install_log_callback()
    ident = threading.get_ident()
    outer = _log_captures.get(ident)  # a capture around this one sees these lines too
    pieces: list[str] = []
    lines: list[str] = []
    _log_captures[ident] = pieces
    try:
        yield lines
    finally:
        if outer is None:
            del _log_captures[ident]
        else:
            outer.extend(pieces)
            _log_captures[ident] = outer
        lines.extend("".join(pieces).splitlines())
