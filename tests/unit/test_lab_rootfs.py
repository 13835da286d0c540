"""The lab's rootfs check: a tarball whose root is not `./` 0755 owned by root is refused (image/lab check-rootfs).

A 0700 root (what `tar -C "$(mktemp -d)" .` gives) locks every unprivileged user out of `/`: dbus, logind and
the hal0 service user fail, and the box never settles. The check runs where the tarball is made and before a
cached one is reused.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[2] / "image" / "lab"


def tarball(path: Path, mode: int, uid: int = 0, name: str = ".") -> Path:
    with tarfile.open(path, "w") as tar:
        root = tarfile.TarInfo(name)
        root.type, root.mode, root.uid = tarfile.DIRTYPE, mode, uid
        tar.addfile(root)
        hostname = tarfile.TarInfo(f"{name.rstrip('/') or '.'}/etc-hostname")
        data = b"box\n"
        hostname.size, hostname.mode = len(data), 0o644
        tar.addfile(hostname, io.BytesIO(data))
    return path


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(LAB), "check-rootfs", str(path)], capture_output=True, text=True, check=False, timeout=30)


def test_a_root_of_0755_owned_by_root_passes(tmp_path: Path) -> None:
    done = check(tarball(tmp_path / "good.tar", 0o755))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ". mode 0755 uid 0"


@pytest.mark.parametrize(("mode", "uid", "name"), [(0o700, 0, "."), (0o750, 0, "./"), (0o755, 1000, "."), (0o755, 0, "etc")])
def test_a_root_others_cannot_traverse_or_not_roots_is_refused(tmp_path: Path, mode: int, uid: int, name: str) -> None:
    done = check(tarball(tmp_path / "bad.tar", mode, uid, name))
    assert done.returncode == 1
    assert f"mode {mode:04o} uid {uid}" in done.stdout


def test_a_missing_tarball_is_refused(tmp_path: Path) -> None:
    assert check(tmp_path / "absent.tar").returncode != 0
