"""The tool-call reply parser (inference/toolcalls.ReplyParser) on what a model can really write."""

from __future__ import annotations

import pytest
from hal0.inference.task import TextDelta
from hal0.inference.toolcalls import ReplyParser


@pytest.mark.parametrize(
    ("escaped", "text"),
    [
        ("\\udc80", "\ufffd"),  # a lone low surrogate
        ("\\ud83d", "\ufffd"),  # a lone high surrogate, then the string ends
        ("\\ud83dx", "\ufffdx"),  # ... followed by a character
        ("\\ud83d\\n", "\ufffd\n"),  # ... followed by another escape
        ("\\ud83d\\u0041", "\ufffdA"),  # ... followed by an escape that is no low half
        ("\\ud83d\\ud83d\\ude00", "\ufffd\U0001f600"),  # ... followed by a whole pair
        ("a\\udc80\\udc80b", "a\ufffd\ufffdb"),
    ],
)
def test_a_lone_surrogate_in_a_reply_is_replacement_text(escaped: str, text: str) -> None:
    """A logit_bias can steer a model to `\\udcXX`: decoded as is, the response could not be encoded (a 500, issue 29)."""
    for size in (1, 3, len(escaped) + 14):
        parser = ReplyParser()
        reply = '{"content":"' + escaped + '"}'
        events = [event for start in range(0, len(reply), size) for event in parser.feed(reply[start : start + size])]
        assert "".join(event.text for event in events if isinstance(event, TextDelta)) == text
        "".join(event.text for event in events if isinstance(event, TextDelta)).encode()  # encodable: no surrogate left
