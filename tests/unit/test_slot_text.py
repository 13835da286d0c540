"""Token ids to text for slot requests: UTF-8 split across tokens and stop strings split across tokens."""

from __future__ import annotations

from hal0.inference.text import TextStream as _TextStream


class Bytes:
    """A fake model whose token i detokenizes to PIECES[i]."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        return b"".join(self.pieces[token] for token in tokens)


def run(pieces: list[bytes], stops: list[str]) -> tuple[list[str], bool, str]:
    stream = _TextStream(Bytes(pieces), stops)
    out: list[str] = []
    for token in range(len(pieces)):
        text, stopped = stream.feed(token)
        out.append(text)
        if stopped:
            return out, True, ""
    return out, False, stream.flush()


def test_a_character_split_across_tokens_is_held_until_complete() -> None:
    euro = "€".encode()
    out, stopped, rest = run([b"a", euro[:1], euro[1:2], euro[2:], b"b"], [])
    assert out == ["a", "", "", "€", "b"] and not stopped and rest == ""


def test_a_stop_string_split_across_tokens_stops_and_is_not_sent() -> None:
    out, stopped, _ = run([b"hello ", b"<|e", b"nd|> more"], ["<|end|>"])
    assert stopped and "".join(out) == "hello "


def test_text_that_only_looks_like_a_stop_start_is_released() -> None:
    out, stopped, rest = run([b"a<", b"|x", b"y"], ["<|end|>"])
    assert not stopped and "".join(out) + rest == "a<|xy"
    assert out[0] == "a"  # "<" held back: it may begin the stop string
