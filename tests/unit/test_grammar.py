"""JSON schema -> grammar: what hal0 cannot enforce is refused naming the keyword and its path, and
the tool-reply parser gives the same calls however the text is split into deltas."""

from __future__ import annotations

import json

import pytest
from hal0.inference.grammar import SchemaError, compile_grammar, schema_gbnf
from hal0.inference.task import TextDelta, ToolCallDelta
from hal0.inference.toolcalls import ReplyParser


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "string", "pattern": "a+"}, "'pattern' at $.pattern"),
        ({"type": "object", "properties": {"a": {"type": "string", "format": "email"}}}, "'format' at $.properties.a.format"),
        ({"type": "array", "items": {"oneOf": [{"type": "null"}]}}, "'oneOf' at $.items.oneOf"),
        ({"type": "string", "maxLength": 10**9}, "maxLength must be between 0 and 4096"),
        ({"type": "integer", "minimum": float("inf")}, "minimum must be a finite number"),
        ({"type": "number", "minimum": 0.5}, "minimum 0.5 is not an integer"),
        ({"type": [{}]}, "unsupported type"),
        ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, "required names a property"),
        ({"type": "object", "additionalProperties": {"type": "string"}, "properties": {"a": {}}}, "additionalProperties must be false"),
        ({"$ref": "https://example.com/schema"}, "only local $ref"),
        ({"$defs": {"A": {"$ref": "#/$defs/A"}}, "$ref": "#/$defs/A"}, "refers back to itself"),
    ],
)
def test_unenforceable_schemas_are_refused_by_name(schema: dict, fragment: str) -> None:
    with pytest.raises(SchemaError) as caught:
        schema_gbnf(schema, "response_format.json_schema.schema")
    assert fragment in str(caught.value) and caught.value.param == "response_format.json_schema.schema"


def test_a_deeply_nested_schema_is_refused_not_a_crash() -> None:
    schema: dict = {}
    inner = schema
    for _ in range(3000):
        inner["anyOf"] = [{"type": "null"}, {}]
        inner = inner["anyOf"][1]
    with pytest.raises(SchemaError, match="nested too deeply"):
        schema_gbnf(schema, "p")


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": -1234, "maximum": 98765},
        {"type": "integer", "exclusiveMinimum": 7},
        {"type": "number", "minimum": -3, "maximum": 250},
        {"$defs": {"N": {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#/$defs/N"}, {"type": "null"}]}}, "required": ["next"]}},
         "$ref": "#/$defs/N"},
        {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": ["integer", "null"]}, "c": {"enum": [1, "x", None]}}},
    ],
)
def test_supported_schemas_compile_in_llama_cpp(schema: dict) -> None:
    compile_grammar(schema_gbnf(schema, "p"), "p")


REPLY = '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Pa\\"ris}","days":3}},{"name":"noop","arguments":{}}]}'


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(REPLY)])
def test_tool_calls_parse_the_same_however_the_text_is_split(size: int) -> None:
    parser = ReplyParser()
    events = [event for start in range(0, len(REPLY), size) for event in parser.feed(REPLY[start : start + size])]
    assert all(isinstance(event, ToolCallDelta) for event in events)
    calls: dict[int, list[str]] = {}
    for event in events:
        if event.id is not None:
            calls[event.index] = [event.name or "", ""]
        calls[event.index][1] += event.arguments
    assert [(name, json.loads(arguments)) for name, arguments in calls.values()] == [
        ("get_weather", {"city": 'Pa"ris}', "days": 3}), ("noop", {}),
    ]


def test_a_content_reply_streams_decoded_text() -> None:
    parser = ReplyParser()
    text = "".join(event.text for event in parser.feed('{"content":"caf\\u00e9 \\"ok\\" \\ud83d\\ude00"}') if isinstance(event, TextDelta))
    assert text == 'café "ok" 😀' and parser.calls == 0
