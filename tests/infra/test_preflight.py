"""site.yml's preflight on the controller: before any box is touched, each thing the play will need is checked,
and a failure names what is missing and the command that fixes it (`make test-infra`; no lab needed).

The inventory's boxes sit at 127.0.0.1 port 1: nothing listens there, so a play that got past the preflight fails
fast as UNREACHABLE (which the passing case asserts), and no traffic leaves loopback. The wheelhouse build is
skipped (--skip-tags hal0_wheelhouse): a fake wheelhouse and CLI stand in for it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.conftest import REPO

pytestmark = pytest.mark.infra

BIN = Path(sys.executable).parent
NOWHERE = {
    "ansible_host": "127.0.0.1",
    "ansible_port": 1,
    "ansible_user": "root",
    "ansible_ssh_common_args": "-o ConnectTimeout=2 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
}


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Any]:
    """A fake wheelhouse and CLI, a test model file, and the variables that point at them."""
    wheelhouse = tmp_path / "wheelhouse-cpu"
    wheelhouse.mkdir()
    wheels = ["hal0-0.1.0-py3-none-any.whl", "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"]
    for name in wheels:
        (wheelhouse / name).write_bytes(b"wheel")
    (wheelhouse / "MANIFEST").write_text("".join(f"{'0' * 64} {name}\n" for name in wheels))
    cli = tmp_path / "hal0"
    cli.write_text("#!/bin/sh\nexit 0\n")
    cli.chmod(0o755)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF model bytes")
    return {
        "tmp": tmp_path,
        "model": model,
        "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        "vars": {"hal0_wheelhouse": str(wheelhouse), "hal0_controller_cli": str(cli)},
    }


def play(tmp: Path, hal0: dict[str, Any] | None, proxy: dict[str, Any] | None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    inventory = {
        "all": {
            "children": {
                "hal0": {"hosts": {"hal0-x": {**NOWHERE, **hal0}} if hal0 is not None else {}},
                "proxy": {"hosts": {"proxy-x": {**NOWHERE, **proxy}} if proxy is not None else {}},
            }
        }
    }
    path = tmp / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(path), "site.yml", "--skip-tags", "hal0_wheelhouse"],
        cwd=REPO,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(done.stdout[-3000:])
    return done


def untouched(done: subprocess.CompletedProcess[str]) -> None:
    """Failed in the preflight: no task of the hal0 or proxy play ran, no box was contacted."""
    assert done.returncode != 0
    assert "UNREACHABLE" not in done.stdout, "the play reached for a box after a failed preflight"
    assert "PLAY [Provision the hal0 appliance]" not in done.stdout


def test_a_good_site_passes_the_preflight_and_reaches_the_boxes(site: dict[str, Any]) -> None:
    sources = {"gemma3-270m": {"source": "file", "file": str(site["model"])}}
    overrides = {"models": [{"id": "gemma3-270m", "path": "/var/lib/hal0/models/m.gguf", "default": True, "sha256": site["sha256"]}]}
    hal0 = {**site["vars"], "hal0_model_sources": sources, "hal0_config_overrides": overrides}
    done = play(site["tmp"], hal0, {"reverse_proxy_basic_auth_users": [{"name": "a", "password": "pw"}]})
    assert "PLAY [Provision the hal0 appliance]" in done.stdout, done.stdout[-3000:]
    assert "UNREACHABLE" in done.stdout  # past every check: the first task on a box found nobody at 127.0.0.1:1


def test_passlib_missing_fails_before_any_box(site: dict[str, Any]) -> None:
    shim = site["tmp"] / "shim" / "passlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('passlib hidden by tests/infra/test_preflight.py')\n")
    users = [{"name": "alice", "password": "secret"}]
    done = play(site["tmp"], site["vars"], {"reverse_proxy_basic_auth_users": users}, env={"PYTHONPATH": str(shim.parent)})
    untouched(done)
    assert "passlib is missing" in done.stdout and "make controller" in done.stdout and "pip install passlib" in done.stdout
    assert "secret" not in done.stdout
    # password_hash entries need nothing on the controller.
    hashed = [{"name": "alice", "password_hash": "$6$x$y"}]
    done = play(site["tmp"], site["vars"], {"reverse_proxy_basic_auth_users": hashed}, env={"PYTHONPATH": str(shim.parent)})
    assert "passlib is missing" not in done.stdout and "UNREACHABLE" in done.stdout


def test_missing_cli_and_wheelhouse_name_the_build_command(site: dict[str, Any]) -> None:
    done = play(site["tmp"], {**site["vars"], "hal0_controller_cli": str(site["tmp"] / "no-cli")}, None)
    untouched(done)
    assert "no-cli (the hal0 CLI) is missing on the controller" in done.stdout and "make wheelhouse BACKEND=cpu" in done.stdout
    done = play(site["tmp"], {**site["vars"], "hal0_wheelhouse": str(site["tmp"] / "none"), "hal0_gpu_backend": "cuda"}, None)
    untouched(done)
    assert "none/MANIFEST is missing" in done.stdout and "make wheelhouse BACKEND=cuda" in done.stdout
    (Path(site["vars"]["hal0_wheelhouse"]) / "hal0-0.1.0-py3-none-any.whl").unlink()
    done = play(site["tmp"], site["vars"], None)
    untouched(done)
    assert "is incomplete (missing hal0-0.1.0-py3-none-any.whl)" in done.stdout


def test_model_files_are_checked_against_the_config(site: dict[str, Any]) -> None:
    overrides = {"models": [{"id": "gemma3-270m", "path": "/var/lib/hal0/models/m.gguf", "default": True, "sha256": site["sha256"]}]}
    missing = {"gemma3-270m": {"source": "file", "file": str(site["tmp"] / "absent.gguf")}}
    done = play(site["tmp"], {**site["vars"], "hal0_model_sources": missing, "hal0_config_overrides": overrides}, None)
    untouched(done)
    assert "absent.gguf does not exist on the controller" in done.stdout
    site["model"].write_bytes(b"other bytes")
    present = {"gemma3-270m": {"source": "file", "file": str(site["model"])}}
    done = play(site["tmp"], {**site["vars"], "hal0_model_sources": present, "hal0_config_overrides": overrides}, None)
    untouched(done)
    assert f"the config ({REPO}/config/hal0.yaml) expects {site['sha256']}" in done.stdout


def test_url_sources_need_a_lan_address_and_the_config_sha256(site: dict[str, Any]) -> None:
    overrides = {"models": [{"id": "gemma3-270m", "path": "/var/lib/hal0/models/m.gguf", "default": True, "sha256": site["sha256"]}]}
    public = {"gemma3-270m": {"source": "url", "url": "http://203.0.113.7/m.gguf", "sha256": site["sha256"]}}
    done = play(site["tmp"], {**site["vars"], "hal0_model_sources": public, "hal0_config_overrides": overrides}, None)
    untouched(done)
    assert "is not a private (LAN) address" in done.stdout and "hal0_model_url_allow_public: true" in done.stdout
    other = {"gemma3-270m": {"source": "url", "url": "http://10.1.2.3:8000/m.gguf", "sha256": "f" * 64}}
    done = play(site["tmp"], {**site["vars"], "hal0_model_sources": other, "hal0_config_overrides": overrides}, None)
    untouched(done)
    assert f"differs from the config models[].sha256 {site['sha256']}" in done.stdout
    no_sha = {"gemma3-270m": {"source": "url", "url": "http://10.1.2.3:8000/m.gguf"}}
    done = play(site["tmp"], {**site["vars"], "hal0_model_sources": no_sha}, None)
    untouched(done)
    assert "url needs an http(s) url: and a sha256:" in done.stdout
    allowed = {**site["vars"], "hal0_model_sources": public, "hal0_config_overrides": overrides, "hal0_model_url_allow_public": True}
    done = play(site["tmp"], allowed, None)
    assert "PLAY [Provision the hal0 appliance]" in done.stdout and "UNREACHABLE" in done.stdout
