"""Property test: random JSON schemas, generated against on the tiny model with random sampling,
always give output that validates (jsonschema, formats checked); keywords no grammar can enforce are
always a 400 that names the keyword. The share of valid outputs is printed (run with -s) and must be
100%.

The schemas: objects (properties, required, additionalProperties false, patternProperties), enums,
const, arrays with item bounds, integers and numbers with bounds (integer or not, exclusive or not,
multipleOf), strings with length bounds, patterns and formats, nesting,
anyOf, oneOf of distinct types, allOf, and nullable types. Free strings, keys and arrays are bounded
here so the random model cannot run to the token limit (tests/unit/test_constraint.py covers the
unbounded ones, additionalProperties with a schema and email among them); the constraint guarantees
validity, not brevity.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import HAL0, Server, free_port, tiny_config

RESULTS: dict[str, int] = {"valid": 0, "invalid": 0}


@pytest.fixture(scope="module")
def schema_server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Server]:
    import subprocess

    root = tmp_path_factory.mktemp("schemas")
    port = free_port()
    config = tiny_config(tiny_model, port, models=[{"id": "tiny", "path": str(tiny_model), "default": True, "n_ctx": 2048, "n_threads": 1}])
    config["agents"] = {"approvals": {"path": str(root / "approvals.db")}}
    path = root / "hal0.yaml"
    path.write_text(yaml.safe_dump(config))
    with (root / "hal0.log").open("wb") as log:
        process = subprocess.Popen([*HAL0, "serve", "--config", str(path)], stdout=log, stderr=subprocess.STDOUT)
    server = Server(path, port, process, root / "hal0.log")
    server.wait_healthy()
    yield server
    server.stop()
    total = RESULTS["valid"] + RESULTS["invalid"]
    if total:
        print(f"\nschema property test: {RESULTS['valid']}/{total} outputs valid ({100 * RESULTS['valid'] / total:.1f}%)")


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)


def _bounds(low: int, high: int) -> st.SearchStrategy[tuple[int, int]]:
    return st.tuples(st.integers(low, high), st.integers(0, high - low)).map(lambda pair: (pair[0], pair[0] + pair[1]))


strings = st.one_of(
    st.builds(lambda bounds: {"type": "string", "minLength": bounds[0], "maxLength": bounds[1]}, _bounds(0, 10)),
    st.sampled_from(["^[a-z]{2,5}$", "^[A-Z][0-9]{1,3}$", "^(yes|no)$", "^[0-9a-f]{4}-[0-9a-f]{4}$"]).map(lambda rx: {"type": "string", "pattern": rx}),
    # (formats with a bounded length: an email's local part is free, and the random model would run on)
    st.sampled_from(["date", "time", "date-time", "uuid", "ipv4"]).map(lambda fmt: {"type": "string", "format": fmt}),
)
integers = st.one_of(
    st.builds(lambda bounds: {"type": "integer", "minimum": bounds[0], "maximum": bounds[1]}, _bounds(-1500, 1500)),
    st.builds(lambda low: {"type": "integer", "minimum": low}, st.integers(-50, 5000)),
    st.builds(lambda high: {"type": "integer", "exclusiveMaximum": high}, st.integers(-50, 5000)),
    st.just({"type": "integer"}),
)
numbers = st.one_of(
    st.builds(lambda bounds: {"type": "number", "minimum": bounds[0], "maximum": bounds[1]}, _bounds(-100, 100)),
    st.builds(lambda low, width: {"type": "number", "minimum": low / 4, "maximum": (low + width) / 4 + 0.5}, st.integers(-40, 40), st.integers(0, 40)),
    st.builds(lambda low: {"type": "number", "exclusiveMinimum": low / 8, "exclusiveMaximum": low / 8 + 3.25}, st.integers(-80, 80)),
    st.builds(lambda step: {"type": "integer", "multipleOf": step, "minimum": 0, "maximum": 500}, st.integers(2, 9)),
    st.just({"type": "number"}),
)
scalars = st.one_of(
    strings, integers, numbers,
    st.just({"type": "boolean"}), st.just({"type": "null"}),
    st.lists(st.one_of(st.integers(-5, 5), names, st.booleans(), st.none()), min_size=1, max_size=4, unique=True).map(lambda values: {"enum": values}),
    names.map(lambda value: {"const": value}),
)


def _compound(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    def obj(props: dict[str, dict[str, Any]], required: list[bool]) -> dict[str, Any]:
        names_ = list(props)
        return {
            "type": "object", "properties": props, "additionalProperties": False,
            "required": [name for name, needed in zip(names_, required, strict=False) if needed],
        }

    return st.one_of(
        st.builds(obj, st.dictionaries(names, children, min_size=0, max_size=4), st.lists(st.booleans(), min_size=4, max_size=4)),
        st.builds(lambda item, bounds: {"type": "array", "items": item, "minItems": bounds[0], "maxItems": bounds[1]}, children, _bounds(0, 3)),
        st.lists(children, min_size=1, max_size=3).map(lambda branches: {"anyOf": branches}),
        st.just({"oneOf": [{"type": "string", "maxLength": 4}, {"type": "integer"}, {"type": "null"}]}),
        st.tuples(children, children).map(lambda pair: {"allOf": [pair[0], {"description": "annotation only"}]}),
        children.map(lambda value: {"type": "object", "patternProperties": {"^x_[a-z]{1,3}$": value}, "additionalProperties": False, "maxProperties": 2}),
        children.filter(lambda schema: schema.get("type") in ("string", "integer", "number")).map(
            lambda schema: {**schema, "type": [schema["type"], "null"]}
        ),
    )


schemas = st.recursive(scalars, _compound, max_leaves=8)
objects = st.builds(
    lambda props: {"type": "object", "properties": props, "required": list(props), "additionalProperties": False},
    st.dictionaries(names, schemas, min_size=1, max_size=3),
)
# Keywords no grammar can enforce (constraint.py refuses them by name).
UNSUPPORTED = ["not", "uniqueItems", "if", "contains", "dependentRequired", "propertyNames", "unevaluatedProperties"]
UNSUPPORTED_VALUES = {"not": {"type": "null"}, "uniqueItems": True, "if": {"type": "null"}, "contains": {"type": "integer"},
                      "dependentRequired": {"a": ["b"]}, "propertyNames": {"maxLength": 3}, "unevaluatedProperties": False}


def chat(server: Server, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "go"}], **body}, timeout=180)


def record(valid: bool) -> None:
    RESULTS["valid" if valid else "invalid"] += 1


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(schema=schemas, seed=st.integers(0, 2**31 - 1))
def test_json_schema_outputs_validate(schema_server: Server, schema: dict[str, Any], seed: int) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
    response = chat(schema_server, {"response_format": response_format, "max_tokens": 1500, "seed": seed})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    try:
        jsonschema.validate(json.loads(choice["message"]["content"]), schema, format_checker=jsonschema.FormatChecker())
    except (json.JSONDecodeError, jsonschema.ValidationError):
        record(False)
        raise
    record(True)
    assert choice["finish_reason"] == "stop"


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(parameters=objects, seed=st.integers(0, 2**31 - 1))
def test_tool_call_arguments_validate(schema_server: Server, parameters: dict[str, Any], seed: int) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": parameters}}]
    response = chat(schema_server, {"tools": tools, "tool_choice": "required", "max_tokens": 1500, "seed": seed})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    for call in choice["message"]["tool_calls"]:
        try:
            jsonschema.validate(json.loads(call["function"]["arguments"]), parameters, format_checker=jsonschema.FormatChecker())
        except (json.JSONDecodeError, jsonschema.ValidationError):
            record(False)
            raise
        record(True)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(schema=schemas, keyword=st.sampled_from(UNSUPPORTED), where=st.sampled_from(["tool", "response"]))
def test_unsupported_keywords_are_400_naming_them(schema_server: Server, schema: dict[str, Any], keyword: str, where: str) -> None:
    bad = {"type": "object", "properties": {"x": {**schema, keyword: UNSUPPORTED_VALUES[keyword]}}}
    if where == "tool":
        body: dict[str, Any] = {"tools": [{"type": "function", "function": {"name": "f", "parameters": bad}}]}
    else:
        body = {"response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": bad}}}
    response = chat(schema_server, {**body, "max_tokens": 2})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_schema" and repr(keyword) in error["message"]
