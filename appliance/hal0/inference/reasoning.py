"""Reasoning split out of a reply: what a thinking model writes between its family's markers.

Thinking models (Qwen3, QwQ, DeepSeek-R1 and its distills: `<think>...</think>`; Magistral:
`[THINK]...[/THINK]`; Command R7B: `<|START_THINKING|>...<|END_THINKING|>`) open their reply with a
reasoning block, or their template's generation prompt opens it for them (the prompt then ends with
the opening marker). A ReasoningSplitter turns the reply's text deltas into ReasoningDelta for the
block and TextDelta for the answer after it, as llama-server's `--reasoning-format deepseek` does;
markers split across deltas are held back until they are whole. A reply that does not open with a
marker is all answer. `reasoning_format: none` leaves the reply as the model wrote it.
"""

from __future__ import annotations

from hal0.inference.task import ReasoningDelta, TextDelta

MARKERS: tuple[tuple[str, str], ...] = (("<think>", "</think>"), ("[THINK]", "[/THINK]"), ("<|START_THINKING|>", "<|END_THINKING|>"))


def opened_by(prompt: str) -> tuple[str, str] | None:
    """The marker pair whose block the prompt itself opens (its generation prompt ends with the
    opening marker), if any."""
    tail = prompt.rstrip()
    return next(((start, end) for start, end in MARKERS if tail.endswith(start)), None)


class ReasoningSplitter:
    """A reply's text in, ReasoningDelta / TextDelta out."""

    def __init__(self, opened: tuple[str, str] | None = None) -> None:
        self._pair = opened
        self._state = "inside" if opened else "start"
        self._held = ""
        self.reasoning = ""  # the whole reasoning text, for usage

    def feed(self, delta: TextDelta) -> list[ReasoningDelta | TextDelta]:
        self._held += delta.text
        out: list[ReasoningDelta | TextDelta] = []
        while True:
            before = (self._state, self._held)
            out.extend(self._advance())
            if (self._state, self._held) == before:
                break
        if delta.logprobs and self._state == "content":
            out.append(TextDelta("", delta.logprobs))
        return [event for event in out if event.text or (isinstance(event, TextDelta) and event.logprobs)]

    def flush(self) -> list[ReasoningDelta | TextDelta]:
        """What is still held when the reply ends (an unfinished marker is text)."""
        held, self._held = self._held, ""
        if not held:
            return []
        if self._state == "inside":
            self.reasoning += held
            return [ReasoningDelta(held)]
        return [TextDelta(held)]

    def _advance(self) -> list[ReasoningDelta | TextDelta]:
        if self._state == "start":
            stripped = self._held.lstrip()
            for start, end in MARKERS:
                if stripped.startswith(start):
                    self._pair, self._state, self._held = (start, end), "inside", stripped[len(start):]
                    return []
            if stripped and not any(start.startswith(stripped) for start, _ in MARKERS):
                self._state = "content"
            return []
        if self._state == "inside":
            assert self._pair is not None
            end = self._pair[1]
            if not self.reasoning:  # the space a model writes after its opening marker is not reasoning (llama-server trims it)
                self._held = self._held.lstrip()
            at = self._held.find(end)
            if at >= 0:
                thought, self._held = self._held[:at], self._held[at + len(end):]
                self._state = "after"
                self.reasoning += thought
                return [ReasoningDelta(thought)]
            keep = _partial_suffix(self._held, end)
            thought, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep:]
            self.reasoning += thought
            return [ReasoningDelta(thought)] if thought else []
        if self._state == "after":  # the blank lines a model writes between its thinking and its answer
            stripped = self._held.lstrip()
            if stripped:
                self._state, self._held = "content", stripped
            return []
        text, self._held = self._held, ""
        return [TextDelta(text)] if text else []


def _partial_suffix(text: str, marker: str) -> int:
    """How many trailing characters of `text` could begin `marker` (held until the next delta)."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
