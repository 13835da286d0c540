"""Real-world schemas for the structured-output tests: the Pydantic models clients send through
`chat.completions.parse` and the Agents SDK's `output_type`, function-calling tool schemas, and
OpenAPI / Kubernetes-style schemas with vendor and annotation keywords.

`ACCEPTED` must all be accepted and enforced; `REFUSED` holds the ones hal0 refuses, each with the
keyword its 400 names (no grammar can enforce them).
"""

from __future__ import annotations

import datetime
import decimal
import enum
import ipaddress
import uuid
from typing import Annotated, Any, Literal

import pydantic


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Event(pydantic.BaseModel):
    """datetime, date, time, UUID fields: `format`."""

    id: uuid.UUID
    at: datetime.datetime
    day: datetime.date
    time: datetime.time


class Contact(pydantic.BaseModel):
    """EmailStr: `format: email`; constr(pattern=...): `pattern`."""

    email: pydantic.EmailStr
    phone: Annotated[str, pydantic.StringConstraints(pattern=r"^\+[0-9]{6,12}$")]


class Measurement(pydantic.BaseModel):
    """confloat / conint: non-integer bounds, exclusive bounds, multipleOf."""

    ratio: Annotated[float, pydantic.Field(ge=0.5, le=1.5)]
    score: Annotated[float, pydantic.Field(gt=-2.25, lt=7.75)]
    even: Annotated[int, pydantic.Field(multiple_of=2, ge=0, le=100)]


class Cat(pydantic.BaseModel):
    kind: Literal["cat"]
    lives: Annotated[int, pydantic.Field(ge=1, le=9)]


class Dog(pydantic.BaseModel):
    kind: Literal["dog"]
    good: bool


class Pet(pydantic.BaseModel):
    """A discriminated union: `oneOf` with `discriminator`."""

    pet: Annotated[Cat | Dog, pydantic.Field(discriminator="kind")]


class Inventory(pydantic.BaseModel):
    """dict[str, int]: `additionalProperties` with a schema."""

    counts: dict[str, int]


class Node(pydantic.BaseModel):
    """A recursive model: `$ref` to itself, optional."""

    name: str
    children: list[Node] = []


class Profile(pydantic.BaseModel):
    """Optional fields, plain unions, enums, Literal, bounded lists and strings, a nested model, a tuple."""

    nickname: str | None = None
    age: int | str
    colour: Colour
    role: Literal["admin", "user"]
    tags: Annotated[list[Annotated[str, pydantic.StringConstraints(min_length=1, max_length=8)]], pydantic.Field(max_length=3)]
    contact: Contact | None = None
    point: tuple[int, int]


class Network(pydantic.BaseModel):
    """IP addresses, URLs, durations and decimals: more `format`s and `pattern`s pydantic emits."""

    address: ipaddress.IPv4Address
    v6: ipaddress.IPv6Address
    home: pydantic.HttpUrl
    timeout: datetime.timedelta
    price: decimal.Decimal


PYDANTIC_MODELS: list[type[pydantic.BaseModel]] = [Event, Contact, Measurement, Pet, Inventory, Node, Profile, Network]

FUNCTION_TOOLS: dict[str, dict[str, Any]] = {
    "get_weather": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "search_flights": {
        "type": "object",
        "properties": {
            "from": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "to": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "date": {"type": "string", "format": "date"},
            "passengers": {"type": "integer", "minimum": 1, "maximum": 9, "default": 1},
            "cabin": {"oneOf": [{"const": "economy"}, {"const": "business"}]},
        },
        "required": ["from", "to", "date"],
    },
    "create_ticket": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 3, "maxLength": 80},
            "labels": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
            "meta": {"type": "object", "patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": False},
            "priority": {"allOf": [{"type": "integer"}, {"minimum": 1, "maximum": 5}]},
        },
        "required": ["title"],
    },
}

VENDOR_SCHEMAS: dict[str, dict[str, Any]] = {
    # draft-04 `id`, OpenAPI's `nullable`, `readOnly`, `example`, `format: int64` on an integer.
    "openapi_pet": {
        "id": "http://example.com/pet.json",
        "type": "object",
        "properties": {
            "id": {"type": "integer", "format": "int64", "readOnly": True, "example": 10},
            "name": {"type": "string", "example": "doggie", "x-order": 1},
            "password": {"type": "string", "format": "password"},
            "status": {"type": "string", "enum": ["available", "sold"], "nullable": True},
        },
        "required": ["name"],
    },
    # Kubernetes' vendor keywords.
    "k8s_container_port": {
        "type": "object",
        "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
        "properties": {
            "containerPort": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535},
            "protocol": {"type": "string", "default": "TCP", "x-kubernetes-map-type": "atomic"},
            "name": {"type": "string", "pattern": "^[a-z0-9-]{1,15}$"},
        },
        "required": ["containerPort"],
    },
    # Underscore and `$comment` annotations, `self`-style links.
    "annotated": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": "generated",
        "_source": "tool registry",
        "self": {"href": "/schemas/annotated"},
        "type": "object",
        "properties": {"q": {"type": "string", "minLength": 1, "deprecated": True}},
        "required": ["q"],
    },
}

# What no grammar can enforce, with the keyword the 400 names.
REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "set[int]": ({"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True}}}, "uniqueItems"),
    "not": ({"type": "object", "properties": {"x": {"not": {"type": "null"}}}}, "not"),
    "if/then": ({"type": "object", "if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]}}, "if"),
    "contains": ({"type": "array", "contains": {"type": "integer"}}, "contains"),
    "dependentRequired": ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired"),
}


def pydantic_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """The schema a client sends for `model` (the openai SDK's strict transform is not needed: hal0 takes
    the plain JSON schema pydantic makes)."""
    return model.model_json_schema()


def accepted() -> dict[str, dict[str, Any]]:
    """Every schema that must be accepted, by name."""
    return {
        **{f"pydantic:{model.__name__}": pydantic_schema(model) for model in PYDANTIC_MODELS},
        **{f"tool:{name}": schema for name, schema in FUNCTION_TOOLS.items()},
        **{f"vendor:{name}": schema for name, schema in VENDOR_SCHEMAS.items()},
    }
