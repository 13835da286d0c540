"""roles/reverse_proxy/files/hal0-upstream: drain/undrain edits the nginx site, never the last box in rotation."""

from __future__ import annotations

import subprocess
import types
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from typing import Any

import pytest
import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "roles" / "reverse_proxy" / "files" / "hal0-upstream"
SITE = """map $hal0_route_key $hal0_pool { "" hal0_balanced; default hal0_affine; }
upstream hal0_affine {
    hash $hal0_route_key consistent;
    server 10.0.0.1:8080 max_fails=2 fail_timeout=10s;
    server 10.0.0.10:8080 max_fails=2 fail_timeout=10s;
}
upstream hal0_balanced {
    least_conn;
    server 10.0.0.1:8080 max_fails=2 fail_timeout=10s;
    server 10.0.0.10:8080 max_fails=2 fail_timeout=10s;
}
server {
    location = /fleet/boxes.json {
        return 200 '{"boxes": ["10.0.0.1:8080", "10.0.0.10:8080"], "drained": []}';
    }
}
"""


@pytest.fixture
def tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[types.ModuleType, Path, list[list[str]]]:
    loader = SourceFileLoader("hal0_upstream", str(SCRIPT))
    spec = spec_from_loader("hal0_upstream", loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    site = tmp_path / "hal0.conf"
    site.write_text(SITE)
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(module, "SITE", site)
    monkeypatch.setattr(module.subprocess, "run", fake_run)
    return module, site, calls


def test_drain_marks_every_line_of_that_box_only(tool: tuple[types.ModuleType, Path, list[list[str]]], capsys: pytest.CaptureFixture[str]) -> None:
    module, site, calls = tool
    assert module.main(["hal0-upstream", "drain", "10.0.0.1:8080"]) == 0
    assert capsys.readouterr().out.strip() == "changed"
    text = site.read_text()
    assert text.count("server 10.0.0.1:8080 max_fails=2 fail_timeout=10s down;") == 2
    assert text.count("server 10.0.0.10:8080 max_fails=2 fail_timeout=10s;") == 2
    assert calls == [["nginx", "-t", "-q"], ["systemctl", "reload", "nginx"]]
    assert '"drained": ["10.0.0.1:8080"]}' in text, "the dashboard's fleet list names the drained box"
    assert module.main(["hal0-upstream", "status", "10.0.0.1:8080"]) == 0
    assert capsys.readouterr().out.strip() == "drained"
    # Idempotent, and the last box in rotation is never drained.
    assert module.main(["hal0-upstream", "drain", "10.0.0.1:8080"]) == 0
    assert capsys.readouterr().out.strip() == "unchanged"
    assert module.main(["hal0-upstream", "drain", "10.0.0.10:8080"]) == 0
    assert capsys.readouterr().out.strip() == "last"
    assert module.main(["hal0-upstream", "undrain", "10.0.0.1:8080"]) == 0
    assert capsys.readouterr().out.strip() == "changed"
    assert site.read_text() == SITE


def test_unknown_box_is_absent_and_untouched(tool: tuple[types.ModuleType, Path, list[list[str]]], capsys: pytest.CaptureFixture[str]) -> None:
    module, site, calls = tool
    assert module.main(["hal0-upstream", "drain", "10.0.0.1:80"]) == 0
    assert capsys.readouterr().out.strip() == "absent"
    assert site.read_text() == SITE
    assert calls == []


def test_failed_nginx_check_restores_the_site(tool: tuple[types.ModuleType, Path, list[list[str]]], monkeypatch: pytest.MonkeyPatch) -> None:
    module, site, _ = tool
    monkeypatch.setattr(module.subprocess, "run", lambda argv, **_: subprocess.CompletedProcess(argv, 1, "", "bad"))
    assert module.main(["hal0-upstream", "drain", "10.0.0.1:8080"]) == 1
    assert site.read_text() == SITE


def test_edits_the_site_the_role_writes() -> None:
    """The role names the site once (vars/main.yml); the tool it installs must edit that same file."""
    loader = SourceFileLoader("hal0_upstream_paths", str(SCRIPT))
    spec = spec_from_loader("hal0_upstream_paths", loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    role_vars = yaml.safe_load((SCRIPT.parents[1] / "vars" / "main.yml").read_text())
    assert str(module.SITE) == role_vars["reverse_proxy_site_file"]
