"""Reasoning split out of a reply (inference/reasoning.py), and how each dialect's encoder carries it:
the splitter on scripted text deltas, however they are cut; the Responses and Messages encoders on
scripted event lists."""

from __future__ import annotations

import pytest
from hal0.api.messages import MessageEvents
from hal0.api.responses import ResponseEvents
from hal0.inference.reasoning import ReasoningSplitter, opened_by
from hal0.inference.task import Finish, FinishReason, ReasoningDelta, TextDelta, Usage


def split(reply: str, size: int, opened: tuple[str, str] | None = None) -> tuple[str, str]:
    splitter = ReasoningSplitter(opened)
    events = [event for start in range(0, len(reply), size) for event in splitter.feed(TextDelta(reply[start : start + size]))]
    events += splitter.flush()
    thought = "".join(event.text for event in events if isinstance(event, ReasoningDelta))
    answer = "".join(event.text for event in events if isinstance(event, TextDelta))
    assert thought == splitter.reasoning
    return thought, answer


@pytest.mark.parametrize("size", [1, 2, 3, 5, 1000])
@pytest.mark.parametrize(("reply", "thought", "answer"), [
    ("<think>Let me see: 2+2.</think>\n\nIt is 4.", "Let me see: 2+2.", "It is 4."),
    ("\n<think>a</think>b", "a", "b"),
    ("[THINK]plan[/THINK]done", "plan", "done"),
    ("<|START_THINKING|>x<|END_THINKING|>y", "x", "y"),
    ("No thinking here, <think> later is text.", "", "No thinking here, <think> later is text."),
    ("<thin", "", "<thin"),  # an unfinished marker at the end is text
    ("<think>cut off before the end", "cut off before the end", ""),
    ("<think>a </thi", "a </thi", ""),
])
def test_the_block_is_split_however_the_text_is_cut(size: int, reply: str, thought: str, answer: str) -> None:
    assert split(reply, size) == (thought, answer)


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_a_prompt_that_opens_the_block_makes_the_reply_start_inside_it(size: int) -> None:
    opened = opened_by("<|im_start|>assistant\n<think>\n")
    assert opened == ("<think>", "</think>")
    assert split("I think.\n</think>\n\nAnswer.", size, opened) == ("I think.\n", "Answer.")
    assert opened_by("<|im_start|>assistant\n") is None


FINISH = Finish(FinishReason.STOP, Usage(10, 7, reasoning_tokens=3))
EVENTS = [ReasoningDelta("Hm, "), ReasoningDelta("yes."), TextDelta("Yes"), TextDelta("!"), FINISH]


def test_responses_carry_reasoning_as_a_reasoning_item_before_the_message() -> None:
    encode = ResponseEvents({"model": "m"})
    stream = [frame for event in EVENTS for frame in encode(event)]
    output = encode.response["output"]
    assert [item["type"] for item in output] == ["reasoning", "message"]
    assert output[0]["summary"] == [{"type": "summary_text", "text": "Hm, yes."}]
    assert output[1]["content"][0]["text"] == "Yes!"
    assert encode.response["usage"]["output_tokens_details"] == {"reasoning_tokens": 3}
    kinds = [frame["type"] for frame in stream]
    assert kinds.index("response.reasoning_summary_text.done") < kinds.index("response.output_text.delta")
    assert "".join(frame["delta"] for frame in stream if frame["type"] == "response.reasoning_summary_text.delta") == "Hm, yes."
    assert [frame["sequence_number"] for frame in stream] == list(range(len(stream)))


def test_a_reply_of_reasoning_alone_still_has_a_message() -> None:
    encode = ResponseEvents({"model": "m"})
    for event in [ReasoningDelta("only thought"), FINISH]:
        encode(event)
    assert [item["type"] for item in encode.response["output"]] == ["reasoning", "message"]


@pytest.mark.parametrize("thinking", [True, False])
def test_messages_carry_reasoning_as_a_thinking_block_only_when_asked(thinking: bool) -> None:
    encode = MessageEvents("m", 10, [], thinking)
    stream = [frame for event in EVENTS for frame in encode(event)]
    content = encode.message["content"]
    if thinking:
        assert content == [{"type": "thinking", "thinking": "Hm, yes.", "signature": ""}, {"type": "text", "text": "Yes!"}]
        deltas = [frame["delta"] for frame in stream if frame["type"] == "content_block_delta" and frame["index"] == 0]
        assert [delta["type"] for delta in deltas] == ["thinking_delta", "thinking_delta", "signature_delta"]
        starts = [frame["content_block"] for frame in stream if frame["type"] == "content_block_start"]
        assert starts[0] == {"type": "thinking", "thinking": "", "signature": ""}
    else:
        assert content == [{"type": "text", "text": "Yes!"}]
