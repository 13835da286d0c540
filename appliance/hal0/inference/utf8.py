"""Strict UTF-8 under a grammar: a constrained reply is exactly the text its grammar accepted.

llama.cpp's grammar matches code points it decodes from token pieces leniently: it refuses overlong
forms, but takes surrogates (ED A0 80) and code points past U+10FFFF (F4 90 80 80) as characters.
hal0's text (text.TextStream) decodes strictly and drops such bytes, so the reply broke the schema
it was held to: a `minLength: 5` string arrived with 4 characters (the schema fuzz found it).

A Utf8Guard removes, before each constrained sample, every token whose bytes would make the output
ill-formed UTF-8: what the grammar counts is then what the client gets.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Any

import numpy

_PIECE_BUFFER = 256  # bytes; a longer piece is fetched again at its own size


# Well-formed UTF-8 (The Unicode Standard, table 3-7): for each lead byte, the range of each byte
# after it. Python's incremental decoder is not enough here: it takes ED A0 as a partial character
# and only refuses the surrogate at its third byte, when no continuation is left to choose.
_TAIL = (0x80, 0xBF)
_FOLLOW: dict[int, tuple[tuple[int, int], ...]] = {
    **dict.fromkeys(range(0xC2, 0xE0), (_TAIL,)),
    0xE0: ((0xA0, 0xBF), _TAIL),
    **dict.fromkeys((*range(0xE1, 0xED), 0xEE, 0xEF), (_TAIL, _TAIL)),
    0xED: ((0x80, 0x9F), _TAIL),
    0xF0: ((0x90, 0xBF), _TAIL, _TAIL),
    **dict.fromkeys(range(0xF1, 0xF4), (_TAIL, _TAIL, _TAIL)),
    0xF4: ((0x80, 0x8F), _TAIL, _TAIL),
}


def _scan(data: bytes) -> bytes | None:
    """None if `data` is not well-formed UTF-8 (an incomplete last character allowed), else the bytes
    of that incomplete character (b"" when `data` ends on a boundary)."""
    at = 0
    while at < len(data):
        lead = data[at]
        if lead < 0x80:
            at += 1
            continue
        follow = _FOLLOW.get(lead)
        if follow is None:
            return None
        for offset, (low, high) in enumerate(follow, start=1):
            if at + offset == len(data):
                return data[at:]
            if not low <= data[at + offset] <= high:
                return None
        at += 1 + len(follow)
    return b""


@dataclass(frozen=True)
class Utf8Table:
    """What a guard needs of a vocabulary, computed once per loaded model (kept small: most pieces
    are whole characters and need no entry)."""

    broken: numpy.ndarray  # token ids whose piece cannot follow a character boundary
    continuations: dict[int, bytes]  # token id -> piece, for pieces that start with a continuation byte
    tails: dict[int, bytes]  # token id -> the incomplete last character its piece ends with

    @classmethod
    def of(cls, model: Any) -> Utf8Table:
        """The table of an `_internals.LlamaModel` (its text pieces, as the reply's text decodes them)."""
        import llama_cpp

        vocab = model.vocab
        buffer = ctypes.create_string_buffer(_PIECE_BUFFER)
        broken: list[int] = []
        continuations: dict[int, bytes] = {}
        tails: dict[int, bytes] = {}
        for token in range(llama_cpp.llama_vocab_n_tokens(vocab)):
            size = llama_cpp.llama_token_to_piece(vocab, token, buffer, _PIECE_BUFFER, 0, False)
            if size < 0:
                wide = ctypes.create_string_buffer(-size)
                piece = wide.raw[: llama_cpp.llama_token_to_piece(vocab, token, wide, -size, 0, False)]
            else:
                piece = buffer.raw[:size]
            if piece.isascii():
                continue
            if 0x80 <= piece[0] <= 0xBF:
                continuations[token] = piece
            tail = _scan(piece)
            if tail is None:
                broken.append(token)
            elif tail:
                tails[token] = tail
        return cls(numpy.array(broken, dtype=numpy.int64), continuations, tails)


class Utf8Tables:
    """One table per model, built on first use (about half a second for a 262k vocabulary)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self._table: Utf8Table | None = None
        self._lock = threading.Lock()

    def get(self) -> Utf8Table:
        with self._lock:
            if self._table is None:
                self._table = Utf8Table.of(self._model)
            return self._table


class Utf8Guard:
    """One constrained generation's UTF-8 state: mask the logits before a sample, accept the token after."""

    def __init__(self, table: Utf8Table) -> None:
        self._table = table
        self._tail = b""  # bytes of a character not yet complete

    def mask(self, logits: numpy.ndarray) -> None:
        """Set to -inf, in place, the logits of every token that would make the output invalid."""
        if not self._tail:
            logits[self._table.broken] = -numpy.inf
            return
        # Inside a character only a piece that goes on with its continuation bytes may come.
        allowed = [token for token, piece in self._table.continuations.items() if _scan(self._tail + piece) is not None]
        kept = logits[allowed].copy()
        logits[:] = -numpy.inf
        logits[allowed] = kept

    def accept(self, token: int) -> None:
        if not self._tail:
            self._tail = self._table.tails.get(token, b"")
            return
        # Inside a character the mask let only continuations through; anything else starts afresh.
        piece = self._table.continuations.get(token)
        self._tail = (_scan(self._tail + piece) or b"") if piece is not None else b""
