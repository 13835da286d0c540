"""Tokens as llama-server's /tokenize and /detokenize give them (tools/server/server-context.cpp).

llama-cpp-python's own helpers differ from llama.cpp's common ones in small ways (a fixed 32-byte
piece buffer, a leading space dropped after BOS), so the pieces are read here through
llama_token_to_piece itself, with special tokens rendered, as common_token_to_piece does.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

from hal0.inference.backend import model_of


class BadToken(ValueError):
    """A token id outside the model's vocabulary."""


def check_ids(llama: Any, tokens: Sequence[int], param: str) -> None:
    n_vocab = llama.n_vocab()
    outside = sorted({token for token in tokens if not 0 <= token < n_vocab})
    if outside:
        shown = ", ".join(map(str, outside[:8])) + (", ..." if len(outside) > 8 else "")
        raise BadToken(f"{param}: token ids {shown} are not in the vocabulary (0-{n_vocab - 1})")


def tokenize(llama: Any, content: str | Sequence[str | int], add_special: bool, parse_special: bool) -> list[int]:
    """llama-server's tokenize_mixed: a string, or a list of strings and token ids (only a first
    string gets the special tokens the model adds)."""
    parts = [content] if isinstance(content, str) else list(content)
    tokens: list[int] = []
    for index, part in enumerate(parts):
        if isinstance(part, str):
            if part:
                tokens += llama.tokenize(part.encode("utf-8"), add_bos=add_special and index == 0, special=parse_special)
            elif add_special and index == 0:
                tokens += llama.tokenize(b"", add_bos=True, special=parse_special)
        else:
            tokens.append(part)
    check_ids(llama, [token for token in parts if isinstance(token, int)], "content")
    return tokens


def piece(llama: Any, token: int) -> bytes:
    """The token's bytes, special tokens as their text (common_token_to_piece)."""
    import llama_cpp

    vocab = model_of(llama).vocab
    buffer = ctypes.create_string_buffer(64)
    size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
    if size < 0:
        buffer = ctypes.create_string_buffer(-size)
        size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)
    return buffer.raw[:size]


def with_pieces(llama: Any, tokens: Sequence[int]) -> list[dict[str, Any]]:
    """Each token with its piece: text when it is whole UTF-8, else its byte values."""
    out: list[dict[str, Any]] = []
    for token in tokens:
        raw = piece(llama, token)
        try:
            shown: str | list[int] = raw.decode("utf-8")
        except UnicodeDecodeError:
            shown = list(raw)
        out.append({"id": token, "piece": shown})
    return out


def detokenize(llama: Any, tokens: Sequence[int]) -> str:
    """The tokens' text (tokens_to_str): their pieces joined, special tokens included."""
    check_ids(llama, tokens, "tokens")
    return b"".join(piece(llama, token) for token in tokens).decode("utf-8", "replace")
