"""Every broken config in bad_configs/ is refused with file:line:col, the field and what was expected.

Each `NAME.yaml` has a `NAME.expect`: `LINE:COL dotted.path: message fragment`. The check runs the
real `hal0 config validate` entry point and also asserts that no traceback ever reaches the operator.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hal0.cli import main

CORPUS = Path(__file__).parent / "bad_configs"
CASES = sorted(CORPUS.glob("*.yaml"))


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("path", CASES, ids=[case.stem for case in CASES])
def test_bad_config_is_refused_with_position_and_field(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    position, expected = path.with_suffix(".expect").read_text().strip().split(" ", 1)
    status = main(["config", "validate", str(path)])
    out = capsys.readouterr()
    assert status == 1
    assert "Traceback" not in out.err
    assert f"{path}:{position} {expected}" in out.err, out.err
    assert out.err.rstrip().endswith("found")  # "N problem(s) found"


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "many.yaml"
    bad.write_text("server:\n  port: 0\n  bnd: x\nmodels:\n  - {id: a, path: /a, n_ctx: 1}\n")
    assert main(["config", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2:9 server.port:" in err
    assert f"{bad}:3:3 server.bnd: unknown key 'bnd'; did you mean 'bind'?" in err
    assert f"{bad}:5:30 models[0].n_ctx: must be >= 16" in err
    assert "3 problems found" in err


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", str(tmp_path / "nope.yaml")]) == 1
    assert "nope.yaml:1:1 (top level): file not found" in capsys.readouterr().err


def test_check_files_reports_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "hal0.yaml"
    config.write_text(f"models:\n  - id: a\n    path: {tmp_path}/absent.gguf\n")
    assert main(["config", "validate", str(config)]) == 0
    assert main(["config", "validate", "--check-files", str(config)]) == 1
    assert f"{config}:3:11 models[0].path: model file does not exist" in capsys.readouterr().err


def test_the_shipped_default_config_is_valid() -> None:
    shipped = Path(__file__).parents[2] / "config" / "hal0.yaml"
    assert main(["config", "validate", str(shipped)]) == 0
