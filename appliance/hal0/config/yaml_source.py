"""Read a YAML file into plain data while remembering where every value came from.

pydantic reports errors by path (`models[0].n_gpu_layers`); an operator needs a line and a
column. We compose the YAML node tree ourselves (safe loader, no tags beyond the core schema),
build the data from it and keep a map from each path to the node's position.
Duplicate keys, which PyYAML silently accepts with the last one winning, are errors here.

Building plain data expands YAML aliases: nine anchors of nine aliases each (a "billion laughs")
compose to a few hundred nodes but build to 9**9 values, which held the event loop for 12 s and
took 2.8 GB on a SIGHUP. The build therefore stops at MAX_VALUES values and MAX_DEPTH levels (a
self-referencing anchor, `&a [*a]`, is infinitely deep), far above any real hal0 config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from hal0.config.errors import ConfigIssue

Path = tuple[str | int, ...]

MAX_VALUES = 20_000  # values after alias expansion; a large real config has a few hundred
MAX_DEPTH = 64  # levels of nesting; a real config has under 12


class _TooLarge(Exception):
    def __init__(self, node: yaml.Node, path: Path, message: str) -> None:
        super().__init__(message)
        self.node = node
        self.path = path


@dataclass(frozen=True)
class Position:
    line: int
    column: int


@dataclass
class YamlDocument:
    """Plain data plus the position of every mapping key and value in the source."""

    data: Any
    positions: dict[Path, Position] = field(default_factory=dict)
    key_positions: dict[Path, Position] = field(default_factory=dict)

    def position_of(self, path: Path, *, key: bool = False) -> Position:
        """Best position for a path: the node itself, else its nearest ancestor that exists."""
        table = self.key_positions if key else self.positions
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.positions:
                return self.positions[probe]
            probe = probe[:-1]
        return self.positions.get((), Position(1, 1))


def _mark(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source
        self.document = YamlDocument(data=None)
        self.issues: list[ConfigIssue] = []
        self._constructor = yaml.SafeLoader("")
        self._values = 0

    def build(self, node: yaml.Node, path: Path) -> Any:
        self._values += 1
        if self._values > MAX_VALUES:
            raise _TooLarge(node, path, f"the document expands to more than {MAX_VALUES} values (YAML aliases?); "
                            "a hal0 config is far smaller, so it is refused")
        if len(path) > MAX_DEPTH:
            raise _TooLarge(node, path[:4], f"nested deeper than {MAX_DEPTH} levels (a YAML alias that refers to itself?)")
        self.document.positions[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    self.issues.append(self._issue(key_node, path, "merge keys (<<) are not supported"))
                    continue
                if not isinstance(key_node, yaml.ScalarNode):  # never build a collection just to refuse it as a key
                    self.issues.append(self._issue(key_node, path, "keys must be strings, got a collection"))
                    continue
                known = len(self.issues)
                key = self._scalar(key_node, path)
                if len(self.issues) > known:
                    continue  # the key itself could not be read; that issue says why
                if not isinstance(key, str):
                    self.issues.append(self._issue(key_node, path, f"keys must be strings, got {key!r}"))
                    continue
                child = (*path, key)
                if key in result:
                    first = self.document.key_positions[child]
                    self.issues.append(
                        self._issue(key_node, child, f"duplicate key {key!r} (first defined at line {first.line})")
                    )
                    continue
                self.document.key_positions[child] = _mark(key_node)
                result[key] = self.build(value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: Path) -> Any:
        """The value of one scalar, or None with an issue at its line when PyYAML cannot make one: an
        impossible date (2024-02-30), an integer longer than Python converts (4300 digits), bad base64."""
        try:
            return self._constructor.construct_object(node, deep=True)
        except (ValueError, OverflowError, yaml.YAMLError) as error:
            self.issues.append(self._issue(node, path, f"cannot read this value: {_why(node, error)}"))
            return None

    def _issue(self, node: yaml.Node, path: Path, message: str) -> ConfigIssue:
        position = _mark(node)
        return ConfigIssue(self.source, position.line, position.column, path, message)


def _why(node: yaml.Node, error: Exception) -> str:
    """What is wrong with a scalar PyYAML could not construct, in the operator's terms rather than Python's."""
    if node.tag == "tag:yaml.org,2002:int":
        return f"an integer of {len(str(node.value))} characters, longer than any setting takes"
    if node.tag == "tag:yaml.org,2002:timestamp":
        return f"{node.value!r} looks like a date or time but is not a valid one ({error}); quote it to mean text"
    return str(getattr(error, "problem", None) or error)


def parse_yaml(text: str, source: str) -> tuple[YamlDocument, list[ConfigIssue]]:
    """Parse one YAML document. Returns the document and the problems found while reading it."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except RecursionError:  # PyYAML composes nested collections recursively
        return YamlDocument(data=None), [ConfigIssue(source, 1, 1, (), f"nested deeper than the YAML reader can follow (hal0 allows {MAX_DEPTH} levels)")]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(part for part in (error.context, error.problem) if part)
        return YamlDocument(data=None), [ConfigIssue(source, line, column, (), f"YAML syntax error: {problem}")]
    except yaml.YAMLError as error:
        return YamlDocument(data=None), [ConfigIssue(source, 1, 1, (), f"YAML error: {error}")]
    if len(nodes) > 1:
        extra = nodes[1]
        return YamlDocument(data=None), [
            ConfigIssue(source, extra.start_mark.line + 1, 1, (), "expected one YAML document, found several (---)")
        ]
    if not nodes or nodes[0] is None:
        return YamlDocument(data=None), [ConfigIssue(source, 1, 1, (), "the file is empty; expected a mapping with at least `models:`")]
    builder = _Builder(source)
    try:
        builder.document.data = builder.build(nodes[0], ())
    except _TooLarge as error:
        return YamlDocument(data=None), [builder._issue(error.node, error.path, str(error))]
    except yaml.YAMLError as error:
        return YamlDocument(data=None), [ConfigIssue(source, 1, 1, (), f"YAML error: {error}")]
    if not builder.issues and not isinstance(builder.document.data, dict):
        position = builder.document.position_of(())
        kind = type(builder.document.data).__name__
        builder.issues.append(
            ConfigIssue(source, position.line, position.column, (), f"the top level must be a mapping of sections, got {kind}")
        )
    return builder.document, builder.issues
