"""The dialect encoders on scripted event lists, in process: OpenAI's chat and text chunks, the Responses
API's events and Anthropic's Messages events, each checked for the exact wire shapes a client parses.
(Reasoning through ResponseEvents and MessageEvents is test_reasoning.py's.)"""

from __future__ import annotations

from typing import Any

import pytest
from hal0.api.messages import MessageEvents
from hal0.api.openai import ChatChunks, TextChunks
from hal0.api.responses import ResponseEvents
from hal0.inference.task import Event, Finish, FinishReason, ReasoningDelta, TextDelta, TokenLogprob, ToolCallDelta, Usage


def finish(reason: FinishReason = FinishReason.STOP, stop_sequence: str | None = None) -> Finish:
    return Finish(reason, Usage(12, 5), stop_sequence=stop_sequence)


def frames(encode: Any, events: list[Event]) -> list[dict[str, Any]]:
    return [frame for event in events for frame in encode(event)]


CALLS = [
    ToolCallDelta(0, id="call_a", name="get_weather"), ToolCallDelta(0, '{"city":'), ToolCallDelta(0, '"Oslo"}'),
    ToolCallDelta(1, id="call_b", name="get_time", arguments="{}"),
    finish(FinishReason.TOOL_CALLS),
]


# ---- chat completions chunks ---------------------------------------------------------------------

def test_chat_chunks_open_with_the_role_then_carry_text_and_end_with_the_reason_and_usage() -> None:
    encode = ChatChunks("m", include_usage=True, logprobs=False)
    chunks = frames(encode, [TextDelta("Hel"), TextDelta(""), TextDelta("lo"), finish()])
    assert [chunk["choices"][0]["delta"] if chunk["choices"] else None for chunk in chunks] == [
        {"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}, {}, None,
    ]
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks[:-1]] == [None, None, None, "stop"]
    assert chunks[-1]["usage"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    assert {chunk["id"] for chunk in chunks} == {chunks[0]["id"]} and chunks[0]["id"].startswith("chatcmpl-")
    assert {(chunk["object"], chunk["model"]) for chunk in chunks} == {("chat.completion.chunk", "m")}
    assert all(chunk["choices"][0]["logprobs"] is None for chunk in chunks[:-1])


def test_chat_chunks_without_include_usage_end_at_the_reason() -> None:
    chunks = frames(ChatChunks("m", include_usage=False, logprobs=False), [TextDelta("x"), finish(FinishReason.LENGTH)])
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert all("usage" not in chunk for chunk in chunks)


@pytest.mark.parametrize(("reason", "wire"), [
    (FinishReason.STOP, "stop"), (FinishReason.LENGTH, "length"), (FinishReason.TOOL_CALLS, "tool_calls"),
    (FinishReason.CANCELLED, "stop"),  # a client that went away sees no reason of its own; a cancel is a stop
])
def test_chat_finish_reasons(reason: FinishReason, wire: str) -> None:
    assert frames(ChatChunks("m", False, False), [finish(reason)])[-1]["choices"][0]["finish_reason"] == wire


def test_chat_tool_calls_stream_id_type_and_name_first_then_argument_fragments() -> None:
    chunks = frames(ChatChunks("m", False, False), CALLS)
    calls = [chunk["choices"][0]["delta"]["tool_calls"][0] for chunk in chunks if "tool_calls" in chunk["choices"][0]["delta"]]
    assert calls == [
        {"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city":'}},
        {"index": 0, "function": {"arguments": '"Oslo"}'}},
        {"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_chat_reasoning_is_reasoning_content() -> None:
    chunks = frames(ChatChunks("m", False, False), [ReasoningDelta("hm"), TextDelta("ok"), finish()])
    assert [chunk["choices"][0]["delta"] for chunk in chunks[1:3]] == [{"reasoning_content": "hm"}, {"content": "ok"}]


LOGPROB = TokenLogprob("Hi", b"Hi", -0.5, (("Hi", b"Hi", -0.5), ("Yo", b"Yo", -1.5)))


def test_chat_logprobs_when_asked() -> None:
    chunks = frames(ChatChunks("m", False, logprobs=True), [TextDelta("Hi", (LOGPROB,)), finish()])
    assert chunks[1]["choices"][0]["logprobs"] == {"content": [{
        "token": "Hi", "logprob": -0.5, "bytes": [72, 105],
        "top_logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105]}, {"token": "Yo", "logprob": -1.5, "bytes": [89, 111]}],
    }], "refusal": None}


# ---- completions chunks ------------------------------------------------------------------------

def test_text_chunks_carry_text_skip_other_events_and_count_logprob_offsets() -> None:
    bang, query = TokenLogprob("!", b"!", -0.1), TokenLogprob("?", b"?", -0.2)
    encode = TextChunks("m", include_usage=True, logprobs=True)
    chunks = frames(encode, [TextDelta("Hi!", (LOGPROB, bang)), ReasoningDelta("ignored"), CALLS[0], TextDelta(""), TextDelta("?", (query,)),
                             finish(FinishReason.LENGTH)])
    assert [chunk["choices"][0]["text"] for chunk in chunks[:-1]] == ["Hi!", "?", ""]
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks[:-1]] == [None, None, "length"]
    assert chunks[0]["choices"][0]["logprobs"] == {"tokens": ["Hi", "!"], "token_logprobs": [-0.5, -0.1],
                                                   "top_logprobs": [{"Hi": -0.5, "Yo": -1.5}, {}], "text_offset": [0, 2]}
    assert chunks[1]["choices"][0]["logprobs"]["text_offset"] == [3]  # after the "Hi!" already sent
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 17
    assert {chunk["object"] for chunk in chunks} == {"text_completion"} and chunks[0]["id"].startswith("cmpl-")


# ---- Responses events --------------------------------------------------------------------------

def test_responses_text_reply_event_sequence() -> None:
    encode = ResponseEvents({"model": "m"})
    events = frames(encode, [TextDelta("Hel"), TextDelta("lo"), finish()])
    assert [event["type"] for event in events] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed",
    ]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    assert [event["delta"] for event in events if event["type"] == "response.output_text.delta"] == ["Hel", "lo"]
    message = events[-1]["response"]["output"][0]
    assert message["type"] == "message" and message["role"] == "assistant" and message["status"] == "completed"
    assert message["content"] == [{"type": "output_text", "text": "Hello", "annotations": [], "logprobs": []}]
    assert events[6]["text"] == "Hello" and events[2]["item"]["content"] == []  # an event is a snapshot of its moment
    assert {event["item_id"] for event in events[3:8]} == {message["id"]}
    assert encode.response["status"] == "completed" and encode.response["incomplete_details"] is None
    assert encode.response["usage"] == {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 5,
                                        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 17}
    assert events[-1]["response"] == encode.response


def test_responses_tool_calls_are_function_call_items() -> None:
    encode = ResponseEvents({"model": "m"})
    events = frames(encode, CALLS)
    assert [event["type"] for event in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]
    assert [event["output_index"] for event in events[2:-1]] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert events[5]["arguments"] == '{"city":"Oslo"}' and events[5]["name"] == "get_weather"
    output = encode.response["output"]
    assert [(item["type"], item["call_id"], item["name"], item["arguments"], item["status"]) for item in output] == [
        ("function_call", "call_a", "get_weather", '{"city":"Oslo"}', "completed"),
        ("function_call", "call_b", "get_time", "{}", "completed"),
    ]
    assert all(item["id"].startswith("fc_") for item in output)


def test_responses_cut_by_max_output_tokens_is_incomplete() -> None:
    encode = ResponseEvents({"model": "m"})
    events = frames(encode, [TextDelta("partial"), finish(FinishReason.LENGTH)])
    assert events[-1]["type"] == "response.incomplete"
    assert encode.response["status"] == "incomplete"
    assert encode.response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert encode.response["output"][0]["status"] == "incomplete"


def test_responses_an_empty_reply_is_one_empty_message() -> None:
    encode = ResponseEvents({"model": "m", "store": False})
    events = frames(encode, [finish()])
    assert [item["content"][0]["text"] for item in encode.response["output"]] == [""]
    assert events[-1]["type"] == "response.completed" and encode.response["store"] is False  # the echo is kept


def test_responses_text_then_a_call_closes_the_message_first() -> None:
    encode = ResponseEvents({"model": "m"})
    events = frames(encode, [TextDelta("Let me look."), *CALLS[:3], finish(FinishReason.TOOL_CALLS)])
    kinds = [event["type"] for event in events]
    assert kinds.index("response.output_item.done") < kinds.index("response.function_call_arguments.delta")
    assert [item["type"] for item in encode.response["output"]] == ["message", "function_call"]


# ---- Anthropic Messages events -----------------------------------------------------------------

def test_messages_text_reply_event_sequence_and_usage() -> None:
    encode = MessageEvents("m", 3, [])
    events = frames(encode, [TextDelta("Hel"), TextDelta("lo"), finish()])
    assert [event["type"] for event in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop", "message_delta",
        "message_stop",
    ]
    start = events[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] == 3
    assert events[1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert [event["delta"] for event in events[2:4]] == [{"type": "text_delta", "text": "Hel"}, {"type": "text_delta", "text": "lo"}]
    assert events[5]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[5]["usage"] == {"input_tokens": 12, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    assert encode.message["content"] == [{"type": "text", "text": "Hello"}]
    assert encode.message["stop_reason"] == "end_turn" and encode.message["id"].startswith("msg_")


def test_messages_tool_use_blocks_get_indices_and_their_input_parsed() -> None:
    encode = MessageEvents("m", 0, [])
    events = frames(encode, [TextDelta("Looking."), *CALLS])
    starts = [(event["index"], event["content_block"]) for event in events if event["type"] == "content_block_start"]
    assert starts == [
        (0, {"type": "text", "text": ""}),
        (1, {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}),
        (2, {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}}),
    ]
    json_deltas = [(event["index"], event["delta"]["partial_json"]) for event in events if event["type"] == "content_block_delta"
                   and event["delta"]["type"] == "input_json_delta"]
    assert json_deltas == [(1, '{"city":'), (1, '"Oslo"}'), (2, "{}")]
    assert [event["index"] for event in events if event["type"] == "content_block_stop"] == [0, 1, 2]
    assert encode.message["content"][1:] == [
        {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}},
    ]
    assert encode.message["stop_reason"] == "tool_use"


def test_messages_a_call_cut_by_max_tokens_has_empty_input_and_says_max_tokens() -> None:
    encode = MessageEvents("m", 0, [])
    frames(encode, [ToolCallDelta(0, '{"city": "Os', id="call_a", name="get_weather"), finish(FinishReason.LENGTH)])
    assert encode.message["content"] == [{"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}]
    assert encode.message["stop_reason"] == "max_tokens"


@pytest.mark.parametrize(("stop_sequence", "stops", "reason", "sequence"), [
    ("END", ["END", "STOP"], "stop_sequence", "END"),
    ("<|im_end|>", ["END"], "end_turn", None),  # the template's own stop string is the model's end of turn
    (None, ["END"], "end_turn", None),
])
def test_messages_stop_sequences(stop_sequence: str | None, stops: list[str], reason: str, sequence: str | None) -> None:
    encode = MessageEvents("m", 0, stops)
    events = frames(encode, [TextDelta("a"), finish(stop_sequence=stop_sequence)])
    assert events[-2]["delta"] == {"stop_reason": reason, "stop_sequence": sequence}
    assert (encode.message["stop_reason"], encode.message["stop_sequence"]) == (reason, sequence)


def test_messages_an_empty_reply_has_no_blocks() -> None:
    encode = MessageEvents("m", 0, [])
    events = frames(encode, [finish(FinishReason.LENGTH)])
    assert [event["type"] for event in events] == ["message_start", "message_delta", "message_stop"]
    assert encode.message["content"] == [] and encode.message["stop_reason"] == "max_tokens"
