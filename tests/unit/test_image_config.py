"""The appliance image declaration (image/image.yaml): one pydantic model, its committed schema, hal0's error text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hal0.cli import main
from hal0.config import ConfigError
from hal0.config.image import ImageSpec, load_image, load_image_text

ROOT = Path(__file__).parents[2]
DECLARATIONS = [ROOT / "image" / "image.yaml", ROOT / "tests" / "image" / "image-ci.yaml"]


def test_committed_schema_matches_the_model() -> None:
    committed = json.loads((ROOT / "image" / "image.schema.json").read_text())
    assert committed == ImageSpec.model_json_schema(), "run: hal0 image schema > image/image.schema.json"


@pytest.mark.parametrize("path", DECLARATIONS, ids=lambda p: p.name)
def test_declarations_validate_and_point_editors_at_the_schema(path: Path) -> None:
    assert path.read_text().startswith("# yaml-language-server: $schema="), path
    spec = load_image(path)
    assert spec.base.release == "bookworm"


def test_defaults_describe_the_demo_image() -> None:
    spec = load_image(ROOT / "image" / "image.yaml")
    assert spec.outputs == ("rootfs", "tarball", "disk")
    assert spec.kernel == "linux-image-amd64"
    assert spec.models["gemma3-270m"].source == "package"
    assert spec.proxy is False and spec.admin is None


def test_errors_name_file_line_column_and_field() -> None:
    text = (
        "name: hal0\nhostname: Not_A_Host\nkernel: linux\nmodels:\n  tiny:\n    source: file\n"
        "outputs: [disk, disk]\nadmin:\n  name: ops\n  ssh_keys: [nope]\n  sudo: yes\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_image_text(text, "image.yaml")
    lines = [str(issue) for issue in raised.value.issues]
    assert 'image.yaml:2:11 hostname: must match ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$, got "Not_A_Host"' in lines
    assert any(line.startswith("image.yaml:3:9 kernel: must be one of") for line in lines)
    assert "image.yaml:6:5 models.tiny.file: required when source is file" in lines
    assert "image.yaml:7:10 outputs: each output may be named once" in lines
    assert any(line.startswith("image.yaml:10:13 admin.ssh_keys: not an OpenSSH public key") for line in lines)
    assert "image.yaml:11:3 admin.sudo: unknown key 'sudo' (allowed: name, ssh_keys)" in lines


def test_typo_gets_a_suggestion_and_the_model_is_frozen() -> None:
    with pytest.raises(ConfigError) as raised:
        load_image_text("outptus: [disk]\n", "i.yaml")
    assert str(raised.value.issues[0]) == "i.yaml:1:1 outptus: unknown key 'outptus'; did you mean 'outputs'?"
    spec = load_image_text("{}", "i.yaml")
    with pytest.raises(ValueError, match="frozen"):
        spec.hostname = "other"  # type: ignore[misc]


def test_missing_config_dir_and_model_file_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "image.yaml"
    path.write_text("config: nowhere\nmodels:\n  m:\n    source: file\n    file: m.gguf\n")
    with pytest.raises(ConfigError) as raised:
        load_image(path)
    lines = [str(issue) for issue in raised.value.issues]
    assert lines[0].startswith(f"{path}:1:9 config: no hal0.yaml in ")
    assert lines[1].startswith(f"{path}:5:11 models.m.file: file does not exist: ")


def test_cli_validate_and_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["image", "validate", str(DECLARATIONS[0])]) == 0
    assert capsys.readouterr().out.strip().endswith("image.yaml: ok")
    bad = tmp_path / "bad.yaml"
    bad.write_text("gpu_backend: rocm\n")
    assert main(["image", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:1:14 gpu_backend: must be one of" in err and "1 problem found" in err
    assert main(["image", "schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "ImageSpec"
