"""YAML that expands without bound is refused by `hal0 config validate` (and so by a reload), naming why.

A "billion laughs" (nine anchors of nine aliases) composes to a few hundred nodes but builds to 9**9
values: on SIGHUP it held the event loop for 12 s and took 2.8 GB (issue 20). Building now stops at
MAX_VALUES values and MAX_DEPTH levels; small, honest uses of anchors still load.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hal0.cli import main
from hal0.config import ConfigError, load_text
from hal0.config.yaml_source import MAX_DEPTH, MAX_VALUES

LAUGHS = "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9) if previous else ', '.join(['lol'] * 9)}]\n"
    for previous, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
) + "models: *i\n"


def _validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    path = tmp_path / "hal0.yaml"
    path.write_text(text)
    assert main(["config", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.rstrip().endswith("1 problem found"), err
    return err


def test_a_billion_laughs_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _validate(tmp_path, LAUGHS, capsys)
    assert f"expands to more than {MAX_VALUES} values (YAML aliases?)" in err


def test_an_alias_bomb_as_a_mapping_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the anchors live inside the key, so only building the key would expand them
    anchors = ", ".join(line.split(": ", 1)[1] for line in LAUGHS.splitlines()[:-1])
    err = _validate(tmp_path, f"? [{anchors}]\n: 1\n", capsys)
    assert "keys must be strings, got a collection" in err


def test_a_self_referencing_alias_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _validate(tmp_path, "models: &a [*a]\n", capsys)
    assert f"nested deeper than {MAX_DEPTH} levels" in err


def test_nesting_past_the_readers_recursion_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _validate(tmp_path, "models: " + "[" * 5000 + "]" * 5000 + "\n", capsys)
    assert "nested deeper" in err


def test_small_honest_anchors_still_load() -> None:
    text = (
        "models:\n  - &tiny {id: tiny, path: /m.gguf, n_ctx: 512, default: true}\n"
        "agents:\n  personas:\n    - {id: a, tools: &tools ['memory:*', 'admin:status']}\n    - {id: b, tools: *tools}\n"
    )
    loaded = load_text(text, "hal0.yaml", {})
    assert [persona.tools for persona in loaded.config.agents.personas] == [("memory:*", "admin:status")] * 2


def test_the_bound_is_a_config_error_not_an_exception() -> None:
    with pytest.raises(ConfigError) as raised:
        load_text(LAUGHS, "bomb.yaml", {})
    assert raised.value.issues[0].source == "bomb.yaml"
