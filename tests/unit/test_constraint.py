"""Output constraints (inference/constraint.py): what hal0 cannot enforce is refused naming the keyword
and its path; what it accepts, the mask enforces exactly (checked token by token on the tiny model's
vocabulary against jsonschema's verdict); the tool-reply parser gives the same calls however the text
is split into deltas."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hal0.inference.constraint import Constraints, Grammar, SchemaError, schema_grammar
from hal0.inference.task import GenerationFailed, JsonOutput, Task, TextDelta, Tool, ToolCallDelta
from hal0.inference.toolcalls import ReplyParser, tools_grammar
from llama_cpp import Llama

from tests.schema_corpus import REFUSED, accepted

PARAM = "response_format.json_schema.schema"
SINGLE_BYTE = {ord("0"): (265,), ord("e"): (269,), ord("t"): (270,), ord("o"): (271,), ord("n"): (272,)}  # the tiny model's duplicates



def matches(constraints: Constraints, vocab: Llama, grammar: Grammar, text: str) -> bool:
    """Whether the constraint lets the model write exactly `text` (every token allowed, and complete),
    written a byte at a time. The tiny vocabulary has a token per byte (id 5 + byte) and a second
    token for a few of them ('e', '0'...): the mask allows one token per piece, so either may be it."""
    import numpy

    constraint = constraints.start(grammar)
    for byte in text.encode():
        logits = numpy.zeros(vocab.n_vocab(), dtype=numpy.float32)
        constraint.mask(logits)
        allowed = [token for token in (5 + byte, *SINGLE_BYTE.get(byte, ())) if numpy.isfinite(logits[token])]
        if not allowed:
            return False
        constraint.accept(allowed[0])
    return constraint.finished or constraint.accepting


@pytest.mark.parametrize(("name", "schema", "keyword"), [(name, schema, keyword) for name, (schema, keyword) in REFUSED.items()], ids=list(REFUSED))
def test_what_no_grammar_can_enforce_is_refused_by_name_and_path(name: str, schema: dict, keyword: str) -> None:
    with pytest.raises(SchemaError) as caught:
        schema_grammar(schema, PARAM)
    assert f"{keyword!r} at $" in str(caught.value) and keyword in str(caught.value).split(" at ")[1]
    assert caught.value.param == PARAM and caught.value.code == "unsupported_schema"


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"type": "object", "properties": {"a": {"type": "array", "items": {"uniqueItems": True}}}}, "'uniqueItems' at $.properties.a.items.uniqueItems"),
        ({"anyOf": [{"type": "null"}, {"propertyNames": {"maxLength": 2}}]}, "'propertyNames' at $.anyOf[1].propertyNames"),
        ({"$defs": {"A": {"unevaluatedProperties": False}}, "$ref": "#/$defs/A"}, "'unevaluatedProperties' at $.$defs.A.unevaluatedProperties"),
        ({"type": "number", "maximum": 1e19}, "'maximum' at $.maximum"),
        (False, "no value can match it"),
        ([{"type": "string"}], "must be a JSON Schema"),
        ({"type": "number", "minimum": float("nan")}, "is not a JSON schema"),
        ({"type": "string", "pattern": "(unclosed"}, "cannot be enforced"),
        ({"$ref": "#/$defs/Missing"}, "cannot be enforced"),
    ],
)
def test_unenforceable_schemas_are_refused_naming_where(schema: Any, fragment: str) -> None:
    with pytest.raises(SchemaError) as caught:
        schema_grammar(schema, PARAM)
    assert fragment in str(caught.value) and caught.value.param == PARAM


def test_the_corpus_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    corpus = accepted()
    refused = {}
    for name, schema in corpus.items():
        try:
            schema_grammar(schema, PARAM)
        except SchemaError as error:
            refused[name] = str(error)
    with capsys.disabled():
        print(f"\nschema corpus: {len(corpus) - len(refused)}/{len(corpus)} accepted; refused: {refused or 'none'}; "
              f"no-grammar set: {len(REFUSED)} refused by name")
    assert refused == {}


def test_a_compiled_schema_is_cached() -> None:
    schema = {"type": "object", "properties": {"cached": {"type": "integer", "minimum": 3}}}
    assert schema_grammar(schema, PARAM) is schema_grammar(json.loads(json.dumps(schema)), PARAM)


# (schema, instances the mask must let through, instances it must refuse)
EXACT: list[tuple[dict[str, Any], list[Any], list[Any]]] = [
    ({"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"}, ["ABC-1", "XYZ-907"], ["AB-1", "abc-1", "ABC-"]),
    ({"type": "string", "format": "date"}, ["2024-02-28", "1999-12-31"], ["2024-13-01", "24-01-01", "2024-1-1"]),
    ({"type": "string", "format": "email"}, ["a@b.co", "first.last@example.org"], ["ab.co", "no-at-sign"]),
    ({"type": "string", "format": "uuid"}, ["123e4567-e89b-12d3-a456-426614174000"], ["123e4567e89b12d3a456426614174000", "xyz"]),
    ({"type": "number", "minimum": 0.5, "maximum": 1.5}, [0.5, 1, 1.25, 1.5], [0.49, 1.51, -1, 2]),
    ({"type": "number", "exclusiveMinimum": -2.25, "exclusiveMaximum": 7.75}, [-2, 0, 7.5], [-2.25, 7.75, 8]),
    ({"type": "integer", "minimum": -12, "maximum": 345}, [-12, 0, 345], [-13, 346, 1.5]),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, [{}, {"a": 1, "b": -2}], [{"a": "x"}, {"a": 1.5}]),
    ({"type": "object", "properties": {"k": {"type": "boolean"}}, "patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": False},
     [{"k": True}, {"k": False, "x-a": "s"}], [{"y": "s"}, {"x-a": 1}]),
    ({"oneOf": [{"type": "object", "properties": {"kind": {"const": "cat"}}, "required": ["kind"], "additionalProperties": False},
                {"type": "object", "properties": {"kind": {"const": "dog"}, "good": {"type": "boolean"}}, "required": ["kind", "good"],
                 "additionalProperties": False}]},
     [{"kind": "cat"}, {"kind": "dog", "good": True}], [{"kind": "cow"}, {"kind": "dog"}]),
    ({"allOf": [{"type": "integer"}, {"minimum": 1, "maximum": 5}]}, [1, 5], [0, 6, "3"]),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3}, [[1, 2], [1, 2, 3]], [[1], [1, 2, 3, 4]]),
    ({"type": "object", "properties": {"a": {"type": "string", "minLength": 2, "maxLength": 3}}, "required": ["a"], "additionalProperties": False},
     [{"a": "xy"}, {"a": "xyz"}, {"a": "é😀"}], [{"a": "x"}, {"a": "wxyz"}, {}]),
]


@pytest.mark.parametrize(("schema", "good", "bad"), EXACT, ids=[json.dumps(case[0])[:40] for case in EXACT])
def test_the_mask_enforces_exactly_what_the_schema_says(constraints: Constraints, vocab: Llama, schema: dict, good: list, bad: list) -> None:
    grammar = schema_grammar(schema, PARAM)
    checker = jsonschema.FormatChecker()
    for instance in good:
        jsonschema.validate(instance, schema, format_checker=checker)  # the case itself is right
        assert matches(constraints, vocab, grammar, json.dumps(instance, separators=(",", ":"), ensure_ascii=False)), instance
    for instance in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(instance, schema, format_checker=checker)
        assert not matches(constraints, vocab, grammar, json.dumps(instance, separators=(",", ":"), ensure_ascii=False)), instance


def test_an_object_that_says_nothing_of_other_keys_gets_none(constraints: Constraints, vocab: Llama) -> None:
    """Every reply still validates; the model just cannot invent keys (as llama.cpp and OpenAI's strict mode)."""
    said_nothing = schema_grammar({"type": "object", "properties": {"a": {"type": "integer"}}}, PARAM)
    assert matches(constraints, vocab, said_nothing, '{"a":1}') and not matches(constraints, vocab, said_nothing, '{"a":1,"b":2}')
    allowed = schema_grammar({"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": True}, PARAM)
    assert matches(constraints, vocab, allowed, '{"a":1,"b":2}')
    merged = schema_grammar({"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}},
                                       {"type": "object", "properties": {"b": {"type": "integer"}}}]}, PARAM)
    assert matches(constraints, vocab, merged, '{"a":1,"b":2}')


def test_output_is_compact_json(constraints: Constraints, vocab: Llama) -> None:
    grammar = schema_grammar({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}, PARAM)
    assert matches(constraints, vocab, grammar, '{"a":1}')
    assert not matches(constraints, vocab, grammar, '{ "a": 1 }')


def test_a_refused_token_ends_the_generation_with_a_clear_error(constraints: Constraints, vocab: Llama) -> None:
    constraint = constraints.start(schema_grammar({"type": "integer"}, PARAM))
    with pytest.raises(GenerationFailed, match="refused token"):
        constraint.accept(5 + ord('"'))


WEATHER = Tool("get_weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False})
ANSWER = {"type": "object", "properties": {"temp": {"type": "integer"}}, "required": ["temp"], "additionalProperties": False}


def test_with_tools_and_a_response_format_the_text_answer_follows_the_format(constraints: Constraints, vocab: Llama) -> None:
    task = Task(messages=({"role": "user", "content": "hi"},), tools=(WEATHER,), output=JsonOutput(ANSWER))
    grammar = tools_grammar(task)
    assert matches(constraints, vocab, grammar, '{"content":{"temp":21}}')
    assert matches(constraints, vocab, grammar, '{"tool_calls":[{"name":"get_weather","arguments":{"city":"Oslo"}}]}')
    assert not matches(constraints, vocab, grammar, '{"content":"it is warm"}')
    assert not matches(constraints, vocab, grammar, '{"tool_calls":[{"name":"get_weather","arguments":{"town":"Oslo"}}]}')
    plain = tools_grammar(Task(messages=({"role": "user", "content": "hi"},), tools=(WEATHER,)))
    assert matches(constraints, vocab, plain, '{"content":"it is warm"}')


def test_a_json_answer_streams_as_its_json_text() -> None:
    parser = ReplyParser(json_answer=True)
    reply = '{"content":{"temp":21,"note":"a } in \\"quotes\\""}}'
    text = "".join(event.text for event in parser.feed(reply) if isinstance(event, TextDelta))
    assert json.loads(text) == {"temp": 21, "note": 'a } in "quotes"'} and parser.calls == 0


def test_a_tool_schema_refusal_names_the_tool_param() -> None:
    bad = Tool("f", parameters={"type": "object", "properties": {"x": {"not": {}}}}, param="tools[0].function.parameters")
    with pytest.raises(SchemaError) as caught:
        tools_grammar(Task(messages=({"role": "user", "content": "hi"},), tools=(bad,), tool_choice="required"))
    assert caught.value.param == "tools[0].function.parameters" and "'not' at $.properties.x.not" in str(caught.value)


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
