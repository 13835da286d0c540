"""Regenerate what is derived from the config models: config/hal0.schema.json and the README table."""

from __future__ import annotations

import json
from pathlib import Path

from hal0.config.docs import reference_table
from hal0.config.models import Hal0Config

ROOT = Path(__file__).parents[2]
START, END = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"


def main() -> None:
    (ROOT / "config" / "hal0.schema.json").write_text(json.dumps(Hal0Config.model_json_schema(), indent=2) + "\n")
    readme = (ROOT / "README.md").read_text()
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    (ROOT / "README.md").write_text(head + START + reference_table() + END + tail)


if __name__ == "__main__":
    main()
