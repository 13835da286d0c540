"""The config reference table, generated from the models (the README embeds it; a test keeps it in sync)."""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from hal0.config.models import Hal0Config


def _type_name(annotation: Any) -> str:
    """A field's type as a reader would write it: constraints (Annotated metadata) dropped, unions with |."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if annotation is type(None):
        return "None"
    if annotation is Ellipsis:
        return "..."
    if origin is typing.Literal:
        return " | ".join(repr(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(arg) for arg in args)}]"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(repr(member.value) for member in annotation)
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _model_inside(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model class, is a list of them) for fields that nest models."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if typing.get_origin(annotation) in (tuple, list):
        args = typing.get_args(annotation)
        if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            return args[0], True
    return None, False


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested, is_list = _model_inside(info.annotation)
        if nested is not None:
            rows.extend(_rows(nested, f"{path}[]." if is_list else f"{path}."))
            continue
        if info.default is PydanticUndefined and info.default_factory is None:
            default = "required"
        else:
            value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
            default = f"`{json.dumps(list(value) if isinstance(value, tuple) else value)}`"
        description = (info.description or "").replace("|", "\\|")
        rows.append((f"`{path}`", _type_name(info.annotation).replace("|", "\\|"), default, description))
    return rows


def reference_table() -> str:
    lines = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| {path} | {kind} | {default} | {text} |" for path, kind, default, text in _rows(Hal0Config, "")]
    return "\n".join(lines) + "\n"
