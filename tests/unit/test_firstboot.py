"""hal0.firstboot: the first boot's error notice is read from the path hal0's unit passes, never a copy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hal0.firstboot import FIRSTBOOT_ERROR_ENV, firstboot_error

ROLES = Path(__file__).resolve().parents[2] / "roles"


def test_reads_the_file_the_environment_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = tmp_path / "firstboot-error.txt"
    report.write_text("hal0.yaml (boot partition):3:9 server.port: must be >= 1\n")
    monkeypatch.setenv(FIRSTBOOT_ERROR_ENV, str(report))
    assert firstboot_error() == "hal0.yaml (boot partition):3:9 server.port: must be >= 1"
    report.write_text("  \n")
    assert firstboot_error() is None, "an empty notice is no notice"
    monkeypatch.setenv(FIRSTBOOT_ERROR_ENV, str(tmp_path / "absent.txt"))
    assert firstboot_error() is None


def test_no_path_in_the_environment_means_no_first_boot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FIRSTBOOT_ERROR_ENV, raising=False)
    assert firstboot_error() is None


def test_the_roles_share_one_path_and_the_unit_passes_it_to_hal0() -> None:
    """roles/hal0 owns the path (under hal0_state_dir); its unit hands it to the service; roles/firstboot writes it."""
    derived = yaml.safe_load((ROLES / "hal0" / "vars" / "main.yml").read_text())
    assert derived["hal0_firstboot_error_file"] == "{{ hal0_state_dir }}/firstboot-error.txt"
    unit = (ROLES / "hal0" / "templates" / "hal0.service.j2").read_text()
    assert f"Environment={FIRSTBOOT_ERROR_ENV}={{{{ hal0_firstboot_error_file }}}}\n" in unit
    script = (ROLES / "firstboot" / "templates" / "hal0-firstboot.sh.j2").read_text()
    assert "error_file={{ hal0_firstboot_error_file | quote }}\n" in script
    assert not re.search(r"/var/lib/hal0(?![\w-])", unit + script), "no copy of the state directory (firstboot's own /var/lib/hal0-firstboot aside)"
