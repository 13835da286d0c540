"""What a request sees of a model with slots: a Llama look-alike answering from the scheduler.

Routes call `create_completion` / `create_chat_completion` exactly as on a llama_cpp.Llama. Chat
requests go through the model's own llama-cpp-python chat handler (its GGUF template or named
format, grammar for json_object, stop strings and stop-token criteria); the handler in turn calls
our `create_completion`, which submits the tokens to the scheduler and turns the token ids it
gets back into llama-cpp-python's completion dicts, on this request's thread.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Iterator
from typing import Any

from hal0.inference.batching import END, ERROR, BatchScheduler, Sampling, SlotRequest


class SlotLlama:
    """A per-request stand-in for the Llama; everything but generation is the real one's."""

    def __init__(self, llama: Any, scheduler: BatchScheduler, guard: Any) -> None:
        self._llama = llama
        self._scheduler = scheduler
        self._guard = guard

    def __getattr__(self, name: str) -> Any:
        # Chat handlers read tokenize, verbose, metadata... from the model they are given.
        return getattr(self._llama, name)

    def n_ctx(self) -> int:
        return self._scheduler.slot_ctx

    def create_chat_completion(self, **kwargs: Any) -> Any:
        from llama_cpp import Llama, llama_chat_format

        llama = self._llama
        handler = (
            llama.chat_handler
            or llama._chat_handlers.get(llama.chat_format)
            or llama_chat_format.get_chat_completion_handler(llama.chat_format)
        )
        # Llama.create_chat_completion passes its own defaults to the handler, whose defaults
        # differ (repeat_penalty 1.1): pass the same ones so both paths sample alike.
        defaults = {
            name: parameter.default
            for name, parameter in inspect.signature(Llama.create_chat_completion).parameters.items()
            if parameter.default is not inspect.Parameter.empty
        }
        return handler(llama=self, **{**defaults, **kwargs})

    def create_completion(
        self,
        prompt: str | list[int],
        suffix: str | None = None,
        max_tokens: int | None = 16,
        temperature: float = 0.8,
        top_p: float = 0.95,
        min_p: float = 0.05,
        typical_p: float = 1.0,
        logprobs: int | None = None,
        echo: bool = False,
        stop: str | list[str] | None = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        repeat_penalty: float = 1.0,
        top_k: int = 40,
        stream: bool = False,
        seed: int | None = None,
        model: str | None = None,
        stopping_criteria: Any = None,
        logits_processor: Any = None,
        grammar: Any = None,
        logit_bias: dict[int, float] | None = None,
        **_unsupported: Any,  # tfs_z, mirostat_*: accepted by the Llama API, ignored here as there
    ) -> Any:
        if logprobs:
            raise ValueError("logprobs are not supported with parallel slots")
        if logits_processor:
            raise ValueError("logits processors are not supported with parallel slots")
        tokens = self._prompt_tokens(prompt)
        room = self._scheduler.slot_ctx - len(tokens)
        if room <= 0:
            raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {self._scheduler.slot_ctx}")
        limit = room if max_tokens is None or max_tokens <= 0 else min(max_tokens, room)
        guard = self._guard
        request = SlotRequest(
            prompt=tokens,
            max_tokens=limit,
            sampling=Sampling(
                temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p, typical_p=typical_p,
                repeat_penalty=repeat_penalty, presence_penalty=presence_penalty,
                frequency_penalty=frequency_penalty, seed=seed, logit_bias=logit_bias, grammar=grammar,
            ),
            cancel=guard.cancel,
            deadline=guard.deadline,
            stop_criteria=list(stopping_criteria or ()),
        )
        guard.prompt_tokens = len(tokens)
        self._scheduler.submit(request)
        stops = [stop] if isinstance(stop, str) else [text for text in (stop or []) if text]
        head = prompt if echo and isinstance(prompt, str) else ""
        ident, created, name = f"cmpl-{uuid.uuid4()}", int(time.time()), model or self._llama.model_path
        chunks = self._chunks(request, stops, head, suffix or "", {"id": ident, "object": "text_completion", "created": created, "model": name})
        if stream:
            return chunks
        text, reason = "", None
        for chunk in chunks:
            choice = chunk["choices"][0]
            text += choice["text"]
            reason = choice["finish_reason"] or reason
        return {
            "id": ident, "object": "text_completion", "created": created, "model": name,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": reason}],
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": guard.generated, "total_tokens": len(tokens) + guard.generated},
        }

    def _prompt_tokens(self, prompt: str | list[int]) -> list[int]:
        # As llama-cpp-python's _create_completion: token lists are used as given; text gets the
        # model's BOS (and EOS) when its tokenizer says so.
        if isinstance(prompt, list):
            return list(prompt)
        model = self._llama._model
        tokens = self._llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True) if prompt else []
        bos = model.token_cls() if model.token_cls() != -1 else model.token_bos()
        if model.add_bos_token() and bos != -1:
            tokens = [bos, *tokens]
        sep = model.token_sep()
        if model.add_eos_token() or sep != -1:
            tokens.append(sep if sep != -1 else model.token_eos())
        return tokens or [model.token_bos()]

    def _chunks(self, request: SlotRequest, stops: list[str], head: str, tail: str, meta: dict[str, Any]) -> Iterator[dict[str, Any]]:
        guard = self._guard
        text = _TextStream(self._llama._model, stops)

        def chunk(piece: str, reason: str | None) -> dict[str, Any]:
            return {**meta, "choices": [{"text": piece, "index": 0, "logprobs": None, "finish_reason": reason}]}

        if head:
            yield chunk(head, None)
        reason: str | None = None
        try:
            while True:
                kind, value = request.out.get()
                if kind == END:
                    reason = value
                    break
                if kind == ERROR:
                    raise value
                if guard.first_token_at is None:
                    guard.first_token_at = request.first_token_at or time.perf_counter()
                guard.generated += 1
                piece, stopped = text.feed(value)
                if piece:
                    yield chunk(piece, None)
                if stopped:
                    request.done = True  # the scheduler frees the slot at its next step
                    reason = "stop"
                    break
        finally:
            # Leaving early (client gone) must free the slot too, whoever stops reading.
            request.done = True
            guard.timed_out = guard.timed_out or request.timed_out
        if reason == "cancelled":
            return
        if reason == "timeout":  # ends like the single-turn path: what was made, finish_reason "stop"
            reason = "stop"
        rest = text.flush() + (tail if reason else "")
        if rest:
            yield chunk(rest, None)
        yield chunk("", reason)


class _TextStream:
    """Token ids in, text out: holds back incomplete UTF-8 and anything that may start a stop string."""

    def __init__(self, model: Any, stops: list[str]) -> None:
        self._model = model
        self._stops = stops
        self._bytes = b""
        self._held = ""

    def feed(self, token: int) -> tuple[str, bool]:
        self._bytes += self._model.detokenize([token], special=False)
        try:
            fresh = self._bytes.decode("utf-8")
            self._bytes = b""
        except UnicodeDecodeError as error:
            if error.reason == "unexpected end of data" and len(self._bytes) - error.start < 4:
                fresh, self._bytes = self._bytes[: error.start].decode("utf-8", "ignore"), self._bytes[error.start :]
            else:
                fresh, self._bytes = self._bytes.decode("utf-8", "ignore"), b""
        text = self._held + fresh
        for stop in self._stops:
            at = text.find(stop)
            if at >= 0:
                self._held = ""
                return text[:at], True
        keep = max((_overlap(text, stop) for stop in self._stops), default=0)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held + self._bytes.decode("utf-8", "ignore")


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that is a beginning of `stop`."""
    for size in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0
