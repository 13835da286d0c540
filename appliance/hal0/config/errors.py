"""Config problems, phrased for the operator who has to fix the file.

Every problem carries the file, line, column and dotted field path, and reads like
`config/hal0.yaml:14:5 models[0].n_gpu_layers: must be an integer >= -1, got "all"`.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any

Path = tuple[str | int, ...]


def dotted(path: Path) -> str:
    """`("models", 0, "id")` -> `models[0].id`."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


@dataclass(frozen=True)
class ConfigIssue:
    source: str
    line: int
    column: int
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}:{self.column} {dotted(self.path)}: {self.message}"


class ConfigError(Exception):
    """A config file that cannot be used; `issues` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


class CrossFieldError(ValueError):
    """Raised from a model validator with problems that each name their own field path."""

    def __init__(self, problems: list[tuple[Path, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{dotted(path)}: {message}" for path, message in problems))


def shown(value: Any) -> str:
    """A value as the operator wrote it, kept short."""
    text = json.dumps(value, default=str) if not isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bounds(constraints: dict[str, Any]) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return " and ".join(f"{words[key]} {constraints[key]}" for key in ("ge", "gt", "le", "lt") if key in constraints)


def phrase(error: dict[str, Any], constraints: dict[str, Any], allowed_keys: list[str]) -> str:
    """Turn one pydantic error into an operator's sentence."""
    kind = error["type"]
    ctx = error.get("ctx", {})
    got = error.get("input")
    bounds = _bounds(constraints)
    bound_text = f" {bounds}" if bounds else ""
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        close = difflib.get_close_matches(key, allowed_keys, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        allowed = f" (allowed: {', '.join(allowed_keys)})" if allowed_keys and not close else ""
        return f"unknown key {key!r}{hint}{allowed}"
    if kind == "missing":
        return "required field is missing"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer{bound_text}, got {shown(got)}"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number{bound_text}, got {shown(got)}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false, got {shown(got)}"
    if kind in ("string_type",):
        return f"must be a string, got {shown(got)}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return f"must be{bound_text or ' in range'}, got {shown(got)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {shown(got)}"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}, got {shown(got)}"
    if kind in ("tuple_type", "list_type"):
        return f"must be a list, got {shown(got)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping, got {shown(got)}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} item(s)"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"])).removeprefix("Value error, ")
    return f"{error['msg'][0].lower()}{error['msg'][1:]}, got {shown(got)}"
