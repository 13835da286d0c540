"""One source of truth: the committed schema, the README table and the YAML files follow the models."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hal0.config.docs import reference_table
from hal0.config.models import Hal0Config

ROOT = Path(__file__).parents[2]


def test_committed_schema_matches_the_models() -> None:
    committed = json.loads((ROOT / "config" / "hal0.schema.json").read_text())
    assert committed == Hal0Config.model_json_schema(), "run: hal0 config schema > config/hal0.schema.json"


def test_readme_reference_table_matches_the_models() -> None:
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"
    assert start in readme and end in readme
    table = readme.split(start, 1)[1].split(end, 1)[0]
    assert table == reference_table(), "run: hal0 config docs, and paste it between the markers in README.md"


def test_yaml_files_point_editors_at_the_schema() -> None:
    for path in (ROOT / "config").glob("*.yaml"):
        assert path.read_text().startswith("# yaml-language-server: $schema=./hal0.schema.json"), path


def test_every_field_is_documented() -> None:
    table = reference_table()
    for line in table.splitlines()[2:]:
        # Cells split on unescaped pipes: | `path` | type | default | description |
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == 4, line
        path, kind, _, description = cells
        assert description, f"{path} has no description: add Field(description=...) to the model"
        assert kind and "FieldInfo" not in kind and "Annotated" not in kind, f"{path}: unreadable type {kind!r}"
