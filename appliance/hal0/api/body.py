"""Reading and validating JSON request bodies: bounded size, clear errors naming the field.

Python's json module accepts more than the services behind it can take, and each of these used to
surface as a 500 far from the request: lone surrogates (`"\\ud800"`, which SQLite and the response
encoder cannot encode), nesting deep enough to exhaust the recursion limit, integers longer than
Python converts (4300 digits) or wider than SQLite's 64 bits, and NaN / Infinity (not JSON; the
response encoder refuses them). They are refused here, once, with a 400 naming the field.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from hal0.api.errors import ApiError, bad_request

Model = TypeVar("Model", bound=BaseModel)

MAX_JSON_DEPTH = 64  # far beyond any request body hal0 documents; bounded well before the recursion limit
INT_BOUND = 2**63  # an integer must fit SQLite's (and llama.cpp's) signed 64 bits
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "²", which int() refuses
_SURROGATE = re.compile("[\ud800-\udfff]")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) more than `limit` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not _DIGITS.fullmatch(declared):
            raise bad_request("Content-Length must be a non-negative integer", code="invalid_header")
        if len(declared) > 18 or int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:  # gone mid-body, or closed by server.body_timeout_s: nobody to answer
        raise ApiError(499, "client closed the connection before sending its whole body", code="client_closed") from None
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body is larger than the limit of {limit} bytes (server.max_body_bytes)", code="body_too_large")


def _field_path(loc: tuple[object, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "list", "bool")):
            continue  # union branch tags, not fields
        else:
            text += f".{part}" if text else str(part)
    return text or "body"


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def decode_json(raw: bytes | str) -> Any:
    """JSON text as Python values that every layer below can store and send back; 400 otherwise."""
    try:
        data = json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise bad_request(f"request body is nested deeper than {MAX_JSON_DEPTH} levels", code="invalid_json") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits, NaN
        raise bad_request(f"request body is not valid JSON: {error}", code="invalid_json") from None
    check_values(data)
    return data


def check_values(data: Any) -> None:
    """Walk decoded JSON without recursion; 400 naming the first value no layer below can take."""
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise bad_request(f"{path or 'body'}: nested deeper than {MAX_JSON_DEPTH} levels", param=path or None, code="invalid_json")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and _SURROGATE.search(key):
                    raise bad_request(f"{path or 'body'}: key {key!r} contains a lone surrogate, which is not valid Unicode",
                                      param=path or None)
                child = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key
                stack.append((item, child, depth + 1))
        elif isinstance(value, str):
            if _SURROGATE.search(value):
                raise bad_request(f"{path or 'body'}: contains a lone surrogate (a \\ud800-\\udfff escape not part of a pair), "
                                  "which is not valid Unicode", param=path or None)
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            if not -INT_BOUND <= value < INT_BOUND:
                raise bad_request(f"{path or 'body'}: integer out of range (it must fit 64 bits)", param=path or None)
        elif isinstance(value, float) and not math.isfinite(value):
            raise bad_request(f"{path or 'body'}: number out of range (overflows a 64-bit float)", param=path or None)


def ascii_int(value: str) -> int | None:
    """The integer an ASCII-digit string spells (at most 18 digits, so it fits 64 bits), else None."""
    return int(value) if len(value) <= 18 and _DIGITS.fullmatch(value) else None


async def parse_json(request: Request, model: type[Model], limit: int, *, optional: bool = False) -> Model:
    """Parse the body as `model`; 400 naming the first bad field. With `optional`, an empty body is
    the model's defaults. The body is read within `limit` either way (413 past it)."""
    raw = await read_body(request, limit)
    if not raw.strip():
        if optional:
            return model()
        raise bad_request("request body is empty; expected a JSON object", code="invalid_json")
    data = decode_json(raw)
    if not isinstance(data, dict):
        raise bad_request(f"request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        first = errors[0]
        # A field that may be a string or a list of items fails once per branch: the deepest
        # error under the same field (the item that is wrong) says more than "not a string".
        for other in errors[1:]:
            if _field_path(tuple(other["loc"][:1])) == _field_path(tuple(first["loc"][:1])) and len(other["loc"]) > len(first["loc"]):
                first = other
        field = _field_path(tuple(first["loc"]))
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = "unrecognized request argument"
        more = len(error.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise bad_request(f"{field}: {message}{suffix}", param=field) from None
