"""JSON schema -> llama.cpp grammar (GBNF), for tool arguments and response_format json_schema.

hal0 writes its own converter (llama-cpp-python's ignores numeric bounds) over llama.cpp's grammar
engine. What it accepts it enforces exactly; anything else is refused with the keyword and its
JSON path, never dropped: a schema is never "mostly" applied.

The supported subset:
- type: object, array, string, integer, number, boolean, null, or a list of these
- object: properties, required, additionalProperties (false, or absent: no other keys)
- array: items, minItems, maxItems
- string: minLength, maxLength
- integer: minimum, maximum, exclusiveMinimum, exclusiveMaximum
- number: minimum, maximum with integer values
- enum, const, anyOf, $ref to #/$defs or #/definitions
- annotations (title, description, default, examples, $schema, $id, $comment, strict) are ignored
Output is compact JSON (no whitespace between tokens), keys in the schema's order.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hal0.inference.task import InvalidTask

_ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "strict", "deprecated", "readOnly", "writeOnly"}
_KEYWORDS: dict[str, set[str]] = {
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items", "minItems", "maxItems"},
    "string": {"minLength", "maxLength"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "number": {"minimum", "maximum"},
    "boolean": set(),
    "null": set(),
}
_COMMON = {"type", "enum", "const", "anyOf", "$ref", "$defs", "definitions"}

_BASE = r'''
json-char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])
json-string ::= "\"" json-char* "\""
json-digits ::= [0-9]+
json-int ::= "-"? ("0" | [1-9] [0-9]*)
json-frac ::= "." [0-9]+
json-number ::= json-int json-frac? ([eE] [-+]? [0-9]+)?
json-bool ::= "true" | "false"
json-null ::= "null"
json-value ::= json-object | json-array | json-string | json-number | json-bool | json-null
json-object ::= "{" (json-string ":" json-value ("," json-string ":" json-value)*)? "}"
json-array ::= "[" (json-value ("," json-value)*)? "]"
'''
_PRIMITIVE = {"string": "json-string", "boolean": "json-bool", "null": "json-null"}
# llama.cpp expands a bounded repetition into that many rules: larger counts are refused, not truncated.
MAX_REPEAT = 4096
MAX_DIGITS = 40  # integer bounds beyond this many digits are refused


class SchemaError(InvalidTask):
    """A schema hal0 cannot enforce: names the keyword and where it is."""


def _path(parts: tuple[str | int, ...]) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _literal(text: str) -> str:
    return json.dumps(text)


class _Converter:
    def __init__(self, root: dict[str, Any], param: str) -> None:
        self.root = root
        self.param = param
        self.rules: dict[str, str] = {}
        self.refs: dict[str, str] = {}
        self.count = 0
        # $refs entered since the last "{" or "[": meeting one again would be a rule that recurses
        # without reading anything (llama.cpp would loop on it), so it is refused.
        self.head: set[str] = set()

    def visit_checked(self, schema: Any) -> str:
        try:
            return self.visit(schema, ())
        except RecursionError:
            raise SchemaError(f"{self.param} is nested too deeply", param=self.param, code="unsupported_schema") from None

    def fail(self, message: str, at: tuple[str | int, ...]) -> SchemaError:
        return SchemaError(f"{message} at {_path(at)} of {self.param}", param=self.param, code="unsupported_schema")

    def rule(self, body: str) -> str:
        self.count += 1
        name = f"r{self.count}"
        self.rules[name] = body
        return name

    def visit(self, schema: Any, at: tuple[str | int, ...]) -> str:
        if schema is True or schema == {}:
            return "json-value"
        if not isinstance(schema, dict):
            raise self.fail("a schema must be an object", at)
        types = schema.get("type")
        allowed = set(_COMMON) | _ANNOTATIONS
        type_list = types if isinstance(types, list) else [types] if types is not None else []
        for name in type_list:
            if not isinstance(name, str) or name not in _KEYWORDS:
                raise self.fail(f"unsupported type {name!r}", (*at, "type"))
            allowed |= _KEYWORDS[name]
        if not type_list:  # untyped: infer from the keywords used
            for keywords in _KEYWORDS.values():
                allowed |= keywords
        for keyword in schema:
            if keyword not in allowed:
                raise self.fail(f"unsupported keyword {keyword!r}", (*at, keyword))
        if "$ref" in schema:
            return self.ref(schema["$ref"], (*at, "$ref"))
        if "const" in schema:
            return self.rule(_literal(json.dumps(schema["const"], separators=(",", ":"))))
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise self.fail("enum must be a non-empty list", (*at, "enum"))
            return self.rule(" | ".join(_literal(json.dumps(v, separators=(",", ":"))) for v in values))
        if "anyOf" in schema:
            branches = schema["anyOf"]
            if not isinstance(branches, list) or not branches:
                raise self.fail("anyOf must be a non-empty list", (*at, "anyOf"))
            return self.rule(" | ".join(self.visit(branch, (*at, "anyOf", i)) for i, branch in enumerate(branches)))
        if len(type_list) > 1:
            return self.rule(" | ".join(self.typed(schema, name, at) for name in type_list))
        if type_list:
            return self.typed(schema, type_list[0], at)
        for name, keywords in _KEYWORDS.items():  # untyped with keywords of one type
            if keywords & set(schema):
                return self.typed(schema, name, at)
        return "json-value"

    def ref(self, ref: Any, at: tuple[str | int, ...]) -> str:
        if not isinstance(ref, str) or not ref.startswith(("#/$defs/", "#/definitions/")):
            raise self.fail(f"only local $ref into #/$defs is supported, not {ref!r}", at)
        if ref in self.head:
            raise self.fail(f"$ref {ref!r} refers back to itself before any object or array", at)
        if ref not in self.refs:
            section, name = ref[2:].split("/", 1)
            defs = self.root.get(section)
            target = defs.get(name) if isinstance(defs, dict) else None
            if target is None:
                raise self.fail(f"$ref {ref!r} does not exist", at)
            self.count += 1
            placeholder = f"r{self.count}"
            self.refs[ref] = placeholder  # recursion refers to the rule being built
            self.head.add(ref)
            try:
                self.rules[placeholder] = self.visit(target, (section, name))
            finally:
                self.head.discard(ref)
        return self.refs[ref]

    def typed(self, schema: dict[str, Any], kind: str, at: tuple[str | int, ...]) -> str:
        if kind in _PRIMITIVE and kind != "string":
            return _PRIMITIVE[kind]
        if kind == "string":
            return self.string(schema, at)
        if kind == "integer":
            return self.integer(schema, at)
        if kind == "number":
            return self.number(schema, at)
        saved, self.head = self.head, set()  # inside "[" or "{": recursion reads input first
        try:
            return self.array(schema, at) if kind == "array" else self.object(schema, at)
        finally:
            self.head = saved

    def bound(self, schema: dict[str, Any], keyword: str, at: tuple[str | int, ...], integral: bool = True) -> int | None:
        value = schema.get(keyword)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(f"{keyword} must be a finite number", (*at, keyword))
        if integral and value != int(value):
            raise self.fail(f"{keyword} {value} is not an integer (hal0 enforces integer bounds only)", (*at, keyword))
        if len(str(abs(int(value)))) > MAX_DIGITS:
            raise self.fail(f"{keyword} {value} has more than {MAX_DIGITS} digits", (*at, keyword))
        return int(value)

    def repeat_count(self, schema: dict[str, Any], keyword: str, at: tuple[str | int, ...]) -> int | None:
        value = self.bound(schema, keyword, at)
        if value is not None and not 0 <= value <= MAX_REPEAT:
            raise self.fail(f"{keyword} must be between 0 and {MAX_REPEAT} (hal0's grammar limit), got {value}", (*at, keyword))
        return value

    def string(self, schema: dict[str, Any], at: tuple[str | int, ...]) -> str:
        low = self.repeat_count(schema, "minLength", at) or 0
        high = self.repeat_count(schema, "maxLength", at)
        if low == 0 and high is None:
            return "json-string"
        if high is not None and high < low:
            raise self.fail("maxLength is below minLength", (*at, "maxLength"))
        return self.rule(f'"\\"" {_repeat("json-char", low, high)} "\\""')

    def integer(self, schema: dict[str, Any], at: tuple[str | int, ...]) -> str:
        low = self.bound(schema, "minimum", at)
        high = self.bound(schema, "maximum", at)
        ex_low = self.bound(schema, "exclusiveMinimum", at)
        ex_high = self.bound(schema, "exclusiveMaximum", at)
        if ex_low is not None:
            low = ex_low + 1 if low is None else max(low, ex_low + 1)
        if ex_high is not None:
            high = ex_high - 1 if high is None else min(high, ex_high - 1)
        if low is None and high is None:
            return "json-int"
        if low is not None and high is not None and high < low:
            raise self.fail("the bounds leave no integer", at)
        return self.rule(_int_range(low, high))

    def number(self, schema: dict[str, Any], at: tuple[str | int, ...]) -> str:
        low = self.bound(schema, "minimum", at)
        high = self.bound(schema, "maximum", at)
        if low is None and high is None:
            return "json-number"
        if low is not None and high is not None and high < low:
            raise self.fail("maximum is below minimum", (*at, "maximum"))
        return self.rule(_number_range(low, high))

    def array(self, schema: dict[str, Any], at: tuple[str | int, ...]) -> str:
        item = self.visit(schema.get("items", True), (*at, "items"))
        low = self.repeat_count(schema, "minItems", at) or 0
        high = self.repeat_count(schema, "maxItems", at)
        if high is not None and high < low:
            raise self.fail("maxItems is below minItems", (*at, "maxItems"))
        return self.rule(f'"[" {_repeat(item, low, high, separator=chr(34) + "," + chr(34))} "]"')

    def object(self, schema: dict[str, Any], at: tuple[str | int, ...]) -> str:
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise self.fail("properties must be an object", (*at, "properties"))
        extra = schema.get("additionalProperties", False)
        if extra is not False and not (extra is True and not properties):
            raise self.fail("additionalProperties must be false (or absent)", (*at, "additionalProperties"))
        if extra is True or ("properties" not in schema and "required" not in schema):
            return "json-object"
        required = schema.get("required", [])
        if not isinstance(required, list) or any(not isinstance(name, str) or name not in properties for name in required):
            raise self.fail("required names a property that is not in properties", (*at, "required"))
        pairs = [
            (name, f'{_literal(json.dumps(name))} ":" {self.visit(sub, (*at, "properties", name))}', name in required)
            for name, sub in properties.items()
        ]
        # rest(i, first): the properties from i on; optional ones may be left out, commas only between.
        rest: dict[tuple[int, bool], str] = {}
        for index in range(len(pairs), -1, -1):
            for first in (True, False):
                if index == len(pairs):
                    rest[(index, first)] = ""
                    continue
                _, pair, needed = pairs[index]
                comma = "" if first else '"," '
                take = f"{comma}{pair} {rest[(index + 1, False)]}".strip()
                if needed:
                    body = take
                else:
                    skip = rest[(index + 1, first)]
                    body = f"({take}) | ({skip})" if skip else f"({take})?"
                rest[(index, first)] = self.rule(body) if body else ""
        inner = rest[(0, True)]
        return self.rule(f'"{{" {inner} "}}"' if inner else '"{" "}"')


def _repeat(item: str, low: int, high: int | None, separator: str | None = None) -> str:
    if separator is None:
        if high is None:
            return f"{item}{{{low},}}"
        return f"{item}{{{low},{high}}}"
    if high == 0:
        return ""
    first_low, first_high = max(low - 1, 0), None if high is None else high - 1
    more = f"({separator} {item}){{{first_low},{'' if first_high is None else first_high}}}"
    body = f"{item} {more}"
    return body if low > 0 else f"({body})?"


def _digits_range(low: str, high: str) -> str:
    """GBNF for the decimal strings of equal length from `low` to `high` (inclusive)."""
    if low == high:
        return _literal(low)
    if len(low) == 1:
        return f"[{low}-{high}]"
    if low[0] == high[0]:
        return f"{_literal(low[0])} ({_digits_range(low[1:], high[1:])})"
    parts = [f"{_literal(low[0])} ({_digits_range(low[1:], '9' * (len(low) - 1))})"]
    if int(high[0]) - int(low[0]) > 1:
        parts.append(f"[{int(low[0]) + 1}-{int(high[0]) - 1}] " + " ".join(["[0-9]"] * (len(low) - 1)))
    parts.append(f"{_literal(high[0])} ({_digits_range('0' * (len(high) - 1), high[1:])})")
    return " | ".join(f"({part})" for part in parts)


def _natural_range(low: int, high: int | None) -> str:
    """Non-negative integers from `low` to `high` (None: unbounded), without leading zeros."""
    parts = []
    top = high if high is not None else 10 ** len(str(low)) - 1
    for width in range(len(str(low)), len(str(top)) + 1):
        start = max(low, 10 ** (width - 1) if width > 1 else 0)
        end = min(top, 10**width - 1)
        if start <= end:
            parts.append(_digits_range(str(start).zfill(width), str(end).zfill(width)))
    if high is None:
        parts.append(f"[1-9] [0-9]{{{len(str(low))},}}")
    return " | ".join(f"({part})" for part in parts)


def _int_range(low: int | None, high: int | None) -> str:
    parts = []
    if high is None or high >= 0:  # the non-negative part
        parts.append(_natural_range(max(low or 0, 0), high))
    if low is None or low < 0:  # the negative part, as "-" and a magnitude
        magnitude_low = 1 if high is None or high >= 0 else -high
        magnitude = _natural_range(magnitude_low, None if low is None else -low)
        parts.append(f'"-" ({magnitude})')
    return " | ".join(f"({part})" for part in parts)


def _number_range(low: int | None, high: int | None) -> str:
    """Numbers from `low` to `high` (integer bounds): an integer part in range with any fraction,
    or exactly the far bound."""
    frac = "json-frac?"
    parts = []
    if high is None or high >= 0:
        start = max(low or 0, 0)
        if high is None:
            parts.append(f"({_natural_range(start, None)}) {frac}")
        else:
            if high > start:
                parts.append(f"({_natural_range(start, high - 1)}) {frac}")
            parts.append(f'{_literal(str(high))} ("." "0"+)?')
    if low is None or low < 0:
        # magnitudes m with -m in range: integer part in [mlow, mhigh) with a fraction, or mhigh
        mlow = 0 if high is None or high >= 0 else -high
        if low is None:
            parts.append(f'"-" ({_natural_range(mlow, None)}) {frac}')
        else:
            mhigh = -low
            if mhigh > mlow:
                parts.append(f'"-" ({_natural_range(mlow, mhigh - 1)}) {frac}')
            parts.append(f'"-" {_literal(str(mhigh))} ("." "0"+)?')
    return " | ".join(f"({part})" for part in parts)


def schema_gbnf(schema: Any, param: str) -> str:
    """The GBNF text whose `root` matches exactly the JSON values `schema` accepts (compact)."""
    converter = _Converter(schema if isinstance(schema, dict) else {}, param)
    root = converter.visit_checked(schema)
    rules = "\n".join(f"{name} ::= {body}" for name, body in converter.rules.items())
    return f"root ::= {root}\n{rules}\n{_BASE}"


def check_schema(schema: Any, param: str) -> None:
    """Raise SchemaError if `schema` uses anything hal0 cannot enforce."""
    schema_gbnf(schema, param)


def compile_grammar(gbnf: str, param: str) -> Any:
    """A llama_cpp.LlamaGrammar; a grammar llama.cpp refuses is a 400, never ignored."""
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        return LlamaGrammar.from_string(gbnf, verbose=False)
    except Exception as error:  # noqa: BLE001 - llama.cpp's parser raises ValueError or a bare Exception
        raise SchemaError(f"the grammar for {param} failed to parse: {error}", param=param, code="unsupported_schema") from None
