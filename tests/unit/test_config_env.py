"""Environment overrides of the MCP allowlists, and where each value came from."""

from __future__ import annotations

from pathlib import Path

import pytest
from hal0.cli import main
from hal0.config import ConfigError, load_text

BASE = "mcp:\n  allowed_hosts: [box.lan]\nmodels:\n  - {id: a, path: /a}\n"


def test_env_hosts_add_to_the_file_list() -> None:
    loaded = load_text(BASE, "f.yaml", {"HAL0_MCP_ALLOWED_HOSTS": "proxy.lan:443, 10.0.0.5:*"})
    assert loaded.config.mcp.allowed_hosts == ("box.lan", "proxy.lan:443", "10.0.0.5:*")
    assert loaded.source_of(("mcp", "allowed_hosts")) == "env"


def test_env_star_disables_the_gate_replacing_the_list() -> None:
    loaded = load_text(BASE, "f.yaml", {"HAL0_MCP_ALLOWED_HOSTS": "*"})
    assert loaded.config.mcp.allowed_hosts == ("*",)


def test_env_origins_replace_the_file_list() -> None:
    text = BASE + "  \n"
    loaded = load_text(text.replace("models", "models"), "f.yaml", {"HAL0_MCP_ALLOWED_ORIGINS": "https://proxy.lan"})
    assert loaded.config.mcp.allowed_origins == ("https://proxy.lan",)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("HAL0_MCP_ALLOWED_HOSTS", "http://x.lan", "a host has no scheme"),
        ("HAL0_MCP_ALLOWED_HOSTS", "*,box", "'*' cannot be mixed"),
        ("HAL0_MCP_ALLOWED_HOSTS", "x.lan/path", "a host has no path"),
        ("HAL0_MCP_ALLOWED_ORIGINS", "proxy.lan", "expected an origin"),
    ],
)
def test_bad_env_values_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(BASE, "f.yaml", {name: value})
    text = str(caught.value)
    assert f"${name}:1:1 mcp.allowed_" in text
    assert message in text


def test_blank_env_is_ignored() -> None:
    loaded = load_text(BASE, "f.yaml", {"HAL0_MCP_ALLOWED_HOSTS": " , "})
    assert loaded.config.mcp.allowed_hosts == ("box.lan",)
    assert loaded.source_of(("mcp", "allowed_hosts")) == "file"


def test_show_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "hal0.yaml"
    config.write_text(BASE + "server:\n  port: 9000\n")
    monkeypatch.setenv("HAL0_MCP_ALLOWED_HOSTS", "proxy.lan")
    assert main(["config", "show", "--config", str(config), "--sources"]) == 0
    out = capsys.readouterr().out
    assert 'server.port = 9000  # file' in out
    assert 'server.bind = "0.0.0.0"  # default' in out
    assert 'mcp.allowed_hosts = ["box.lan", "proxy.lan"]  # env' in out
    assert "# $HAL0_MCP_ALLOWED_HOSTS=proxy.lan" in out


def test_show_prints_the_effective_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "hal0.yaml"
    config.write_text(BASE)
    assert main(["config", "show", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "queue_limit: 16" in out and "allowed_hosts:\n  - box.lan" in out


def test_show_sources_resolves_null_threads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hal0.inference.threads import available_cores

    config = tmp_path / "hal0.yaml"
    config.write_text("models:\n  - {id: a, path: /a}\n  - {id: b, path: /b, n_threads: 3}\n")
    assert main(["config", "show", "--config", str(config), "--sources"]) == 0
    out = capsys.readouterr().out
    assert "models[0].n_threads = null  # default" in out
    assert f"# models[0].n_threads effective: {available_cores()} (physical cores available to this process)" in out
    assert "# models[1].n_threads effective: 3 (configured)" in out
