"""The config reference table, generated from the models (the README embeds it; a test keeps it in sync)."""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from hal0.config.models import Hal0Config


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("hal0.config.models.", "")
    for noise in ("Annotated[", "NoneType"):
        text = text.replace(noise, "None" if noise == "NoneType" else "")
    return getattr(annotation, "__name__", text) if isinstance(annotation, type) else text


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
