"""The effective config as flat `dotted.key = value  (source)` rows, for `hal0 config show --sources`
and the dashboard's Config tab, so the two always agree on where a value came from."""

from __future__ import annotations

from typing import Any

from hal0.config.errors import dotted
from hal0.config.loader import LoadedConfig, Source
from hal0.config.yaml_source import Path


def leaves(value: Any, prefix: Path = ()) -> list[tuple[Path, Any]]:
    """(path, value) for every leaf; a list of plain values (hosts, stop words) stays one leaf."""
    if isinstance(value, dict) and value:
        return [leaf for key, item in value.items() for leaf in leaves(item, (*prefix, key))]
    if isinstance(value, list) and value and any(isinstance(item, dict) for item in value):
        return [leaf for index, item in enumerate(value) for leaf in leaves(item, (*prefix, index))]
    return [(prefix, value)]


def effective_values(loaded: LoadedConfig) -> list[tuple[str, Any, Source]]:
    """(dotted key, JSON value, file | env | default) for every leaf of the effective config."""
    data = loaded.config.model_dump(mode="json")
    return [(dotted(path), value, loaded.source_of(path)) for path, value in leaves(data)]
