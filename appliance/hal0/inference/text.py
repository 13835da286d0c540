"""Token ids to text: incomplete UTF-8 and anything that may start a stop string are held back."""

from __future__ import annotations

from typing import Any


class TextStream:
    """Feed token ids, get the text that is final so far and whether a stop string matched."""

    def __init__(self, model: Any, stops: list[str]) -> None:
        self._llama = model
        self._stops = stops
        self._bytes = b""
        self._held = ""
        self.matched: str | None = None  # the stop string that ended the text

    def feed(self, token: int) -> tuple[str, bool]:
        self._bytes += self._llama.detokenize([token], special=False)
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
                self.matched = stop
                return text[:at], True
        keep = max((_overlap(text, stop) for stop in self._stops), default=0)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """What is held back, at the end of the run (an incomplete UTF-8 tail is dropped)."""
        held, self._held = self._held, ""
        return held + self._bytes.decode("utf-8", "ignore")


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that is a beginning of `stop`."""
    for size in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0


def well_formed(text: str) -> str:
    """`text` with every lone surrogate (a half of a UTF-16 pair, which JSON's \\udXXX escapes can name
    but UTF-8 cannot encode) replaced by U+FFFD, so the response encoder can always send it."""
    if text.isascii():
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


class JsonNesting:
    """Where a JSON text stands as its characters arrive: how deep in objects and arrays, and whether
    inside a string (after a backslash or not). The tool-call parsers use it to see where a call's
    arguments end without waiting for the whole reply."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escape = False

    def feed(self, char: str) -> None:
        if self.in_string:
            if self.escape:
                self.escape = False
            elif char == "\\":
                self.escape = True
            elif char == '"':
                self.in_string = False
        elif char == '"':
            self.in_string = True
        elif char in "{[":
            self.depth += 1
        elif char in "}]":
            self.depth -= 1
