"""Load the config: read the YAML, apply environment overrides, validate, remember sources.

Declare (models.py), then load (here) once into an immutable `LoadedConfig`.
"""

from __future__ import annotations

import hashlib
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from hal0.config.errors import ConfigError, ConfigIssue, CrossFieldError, phrase
from hal0.config.models import Hal0Config, check_host_entry, check_origin_entry
from hal0.config.yaml_source import Path, YamlDocument, parse_yaml

Source = Literal["file", "env", "default"]

# A check of a validated config that needs more than its data (the rule engine's rule examples, agents.rules):
# the problems it finds as (path, message), which the loader positions like pydantic's. Layers above config
# hand theirs in, so config/ stays data and imports none of them.
Check = Callable[[Hal0Config], list[tuple[Path, str]]]

ENV_ALLOWED_HOSTS = "HAL0_MCP_ALLOWED_HOSTS"
ENV_ALLOWED_ORIGINS = "HAL0_MCP_ALLOWED_ORIGINS"


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and where each of its values came from."""

    config: Hal0Config
    path: str
    env: Mapping[str, str] = field(default_factory=dict)
    env_paths: frozenset[Path] = frozenset()
    file_paths: frozenset[Path] = frozenset()

    @property
    def digest(self) -> str:
        """A short hash of the effective config: boxes of a fleet with the same policy show the same one.

        server.bind is left out: behind a proxy each box of a fleet binds its own LAN address."""
        return hashlib.sha256(self.config.model_dump_json(exclude={"server": {"bind"}}).encode()).hexdigest()[:12]

    def source_of(self, path: Path) -> Source:
        if any(path[: len(env_path)] == env_path for env_path in self.env_paths):
            return "env"
        if path in self.file_paths:
            return "file"
        return "default"


def _split_env(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> tuple[set[Path], list[ConfigIssue]]:
    """HAL0_MCP_ALLOWED_HOSTS adds to mcp.allowed_hosts (`*` replaces it: the gate is off);
    HAL0_MCP_ALLOWED_ORIGINS, when set, replaces mcp.allowed_origins."""
    touched: set[Path] = set()
    issues: list[ConfigIssue] = []
    mcp = data.get("mcp")
    if mcp is None:
        mcp = data["mcp"] = {}
    if not isinstance(mcp, dict):
        return touched, issues  # reported by validation against the file
    hosts = _split_env(environ.get(ENV_ALLOWED_HOSTS, ""))
    if hosts:
        for entry in hosts:
            try:
                if entry != "*":
                    check_host_entry(entry)
            except ValueError as error:
                issues.append(ConfigIssue(f"${ENV_ALLOWED_HOSTS}", 1, 1, ("mcp", "allowed_hosts"), str(error)))
        if "*" in hosts:
            if len(hosts) > 1:
                issues.append(
                    ConfigIssue(f"${ENV_ALLOWED_HOSTS}", 1, 1, ("mcp", "allowed_hosts"), "'*' cannot be mixed with other hosts")
                )
            mcp["allowed_hosts"] = ["*"]
        else:
            existing = mcp.get("allowed_hosts") or []
            if isinstance(existing, list):
                mcp["allowed_hosts"] = existing + [host for host in hosts if host not in existing]
        touched.add(("mcp", "allowed_hosts"))
    origins = _split_env(environ.get(ENV_ALLOWED_ORIGINS, ""))
    if origins:
        for entry in origins:
            try:
                if entry != "*":
                    check_origin_entry(entry)
            except ValueError as error:
                issues.append(ConfigIssue(f"${ENV_ALLOWED_ORIGINS}", 1, 1, ("mcp", "allowed_origins"), str(error)))
        mcp["allowed_origins"] = origins
        touched.add(("mcp", "allowed_origins"))
    return touched, issues


def _unwrap(annotation: Any) -> Any:
    """The model class or item type behind Optional, Annotated, tuple[...] and list[...]."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _unwrap(options[0]) if len(options) == 1 else annotation
    return annotation


def _field_info(path: Path, root: type[BaseModel] = Hal0Config) -> Any:
    """The pydantic FieldInfo at a path through the models, or None."""
    owner: Any = root
    info = None
    for part in path:
        owner = _unwrap(owner)
        if isinstance(part, int):
            args = typing.get_args(owner)
            owner, info = (args[0] if args else None), None
        elif isinstance(owner, type) and issubclass(owner, BaseModel) and part in owner.model_fields:
            info = owner.model_fields[part]
            owner = info.annotation
        else:
            return None
    return info


def _constraints(path: Path, root: type[BaseModel] = Hal0Config) -> dict[str, Any]:
    info = _field_info(path, root)
    found: dict[str, Any] = {}
    for item in getattr(info, "metadata", []):
        for key in ("ge", "gt", "le", "lt"):
            if getattr(item, key, None) is not None:
                found[key] = getattr(item, key)
    return found


def _allowed_keys(parent: Path, root: type[BaseModel] = Hal0Config) -> list[str]:
    owner: Any = root
    for part in parent:
        owner = _unwrap(owner)
        if isinstance(part, int):
            args = typing.get_args(owner)
            owner = args[0] if args else None
        elif isinstance(owner, type) and issubclass(owner, BaseModel) and part in owner.model_fields:
            owner = owner.model_fields[part].annotation
        else:
            return []
    owner = _unwrap(owner)
    return list(owner.model_fields) if isinstance(owner, type) and issubclass(owner, BaseModel) else []


def _data_path(data: Any, loc: tuple[Any, ...]) -> Path:
    """Keep the parts of a pydantic location that index into the data (drops union tags like 'int')."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if (isinstance(node, dict) and part in node) or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
            path.append(part)
        elif isinstance(part, str) and ("[" in part or part in ("int", "float", "str", "bool", "none")):
            continue
        else:
            path.append(part)
            node = None
    return tuple(path)


def validation_issues(
    error: ValidationError, document: YamlDocument, source: str, env_sources: dict[Path, str], root: type[BaseModel] = Hal0Config
) -> list[ConfigIssue]:
    """pydantic's errors as operator-facing issues with file:line:col (`root`: the model validated, Hal0Config by default)."""
    issues: list[ConfigIssue] = []
    errors = error.errors(include_url=False)
    failing = [tuple(item["loc"]) for item in errors]
    for item in errors:
        loc = tuple(item["loc"])
        if item["type"] == "too_short" and any(other[: len(loc)] == loc and len(other) > len(loc) for other in failing):
            continue  # a list whose item failed also reports itself as too short: noise
        cross = item.get("ctx", {}).get("error")
        if isinstance(cross, CrossFieldError):
            prefix = _data_path(document.data, loc)
            for relative, message in cross.problems:
                path = (*prefix, *relative)
                position = document.position_of(path)
                issues.append(ConfigIssue(source, position.line, position.column, path, message))
            continue
        path = _data_path(document.data, tuple(item["loc"]))
        if item["type"] == "extra_forbidden":
            position = document.position_of(path, key=True)
            message = phrase(item, {}, _allowed_keys(path[:-1], root))
        else:
            position = document.position_of(path)
            message = phrase(item, _constraints(path, root), [])
        where = next((name for prefix, name in env_sources.items() if path[: len(prefix)] == prefix), None)
        if where is not None:
            issues.append(ConfigIssue(where, 1, 1, path, message))
        else:
            issues.append(ConfigIssue(source, position.line, position.column, path, message))
    return issues


def _leaf_paths(data: Any, prefix: Path = ()) -> set[Path]:
    paths = {prefix}
    if isinstance(data, dict):
        for key, value in data.items():
            paths |= _leaf_paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            paths |= _leaf_paths(value, (*prefix, index))
    return paths


def load_text(text: str, source: str, environ: Mapping[str, str] | None = None, *, check_files: bool = False,
              checks: Sequence[Check] = ()) -> LoadedConfig:
    """Validate config text, then run `checks` on it. Raises ConfigError listing every problem, each with file:line:col."""
    environ = os.environ if environ is None else environ
    document, issues = parse_yaml(text, source)
    if issues:
        raise ConfigError(issues)
    file_paths = frozenset(_leaf_paths(document.data))
    data = _deep_copy(document.data)
    env_touched, env_issues = _apply_env(data, environ)
    if env_issues:
        raise ConfigError(env_issues)
    env_sources = {path: f"${ENV_ALLOWED_HOSTS if path[-1] == 'allowed_hosts' else ENV_ALLOWED_ORIGINS}" for path in env_touched}
    try:
        config = Hal0Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(validation_issues(error, document, source, env_sources)) from None
    checked = [(path, message) for check in checks for path, message in check(config)]
    if checked:
        raise ConfigError([_issue_at(document, source, path, message) for path, message in checked])
    if check_files:
        missing = []
        for index, model in enumerate(config.models):
            if not FsPath(model.path).is_file():
                position = document.position_of(("models", index, "path"))
                missing.append(ConfigIssue(source, position.line, position.column, ("models", index, "path"), f"model file does not exist: {model.path}"))
        if missing:
            raise ConfigError(missing)
    used_env = {name: environ[name] for name in (ENV_ALLOWED_HOSTS, ENV_ALLOWED_ORIGINS) if environ.get(name, "").strip()}
    return LoadedConfig(config=config, path=source, env=used_env, env_paths=frozenset(env_touched), file_paths=file_paths)


def _issue_at(document: YamlDocument, source: str, path: Path, message: str) -> ConfigIssue:
    position = document.position_of(path)
    return ConfigIssue(source, position.line, position.column, path, message)


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None, *, check_files: bool = False,
                checks: Sequence[Check] = ()) -> LoadedConfig:
    """Read and validate a config file (and run `checks` on it: hal0's own loads pass agents.rules.CONFIG_CHECKS)."""
    return load_text(read_source(path), str(path), environ, check_files=check_files, checks=checks)


def read_source(path: str | os.PathLike[str]) -> str:
    """A config file's text; a missing or unreadable file is a ConfigError like any other problem."""
    source = str(path)
    try:
        return FsPath(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(source, 1, 1, (), "file not found")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([ConfigIssue(source, 1, 1, (), f"cannot read file: {error}")]) from None


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _deep_copy(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_deep_copy(value) for value in data]
    return data
