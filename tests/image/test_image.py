"""The appliance image, end to end (root; `make test-image`, CI):

build tests/image/image-ci.yaml (tiny test model, Debian's cloud kernel) -> a warm rebuild is fast ->
the tarball booted as a systemd-nspawn box passes tests/infra/test_box.py unchanged -> site.yml against it
reports changed=0 -> its first boot rejected a bad hal0.yaml and kept the baked config -> the raw disk boots
under qemu (KVM when there is one, else software emulation) with a good hal0.yaml on its boot partition,
and /health answers from the host through user-net port forwarding on loopback, with that config's digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.conftest import REPO

sys.path.insert(0, str(REPO / "image"))
import imagebuild

pytestmark = pytest.mark.image

CI_IMAGE = REPO / "tests" / "image" / "image-ci.yaml"
OUT = REPO / "build" / "image" / "hal0-ci"
BIN = Path(sys.executable).parent
# No PYTHONPATH for children (make test-image sets it for this process): site.yml's wheelhouse step runs pip.
ENV = {
    **{key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
    "PATH": f"{BIN}:{os.environ['PATH']}",
    "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
    "ANSIBLE_FORCE_COLOR": "0",
}
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
BAD_CONFIG = "server:\n  port: 80800\n"
QEMU_TIMEOUT = int(os.environ.get("HAL0_IMAGE_QEMU_TIMEOUT", "600"))


def run(*args: str | Path, check: bool = True, timeout: float = 1800, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    try:
        done = subprocess.run([str(a) for a in args], cwd=REPO, env=ENV, capture_output=True, text=True, check=False, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as expired:
        out = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        pytest.fail(f"{' '.join(map(str, args))} did not finish within {timeout:.0f}s; what it printed:\n{out[-6000:]}")
    print(f"$ {' '.join(map(str, args))}  ({time.monotonic() - started:.1f}s, rc={done.returncode})")
    if check and done.returncode != 0:
        pytest.fail(f"{args[0]} failed ({done.returncode}):\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}")
    return done


@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    done = run(REPO / "image" / "build", CI_IMAGE)
    print("\n".join(line for line in done.stdout.splitlines() if "] done:" in line or "] manifest:" in line))
    return json.loads((OUT / "manifest.json").read_text())


def test_build_outputs_and_manifest(built: dict[str, Any]) -> None:
    assert set(built["outputs"]) == {"rootfs", "tarball", "disk"}
    assert built["hal0"] and built["llama-cpp-python"]
    assert {"linux-image-cloud-amd64", "systemd-boot-efi", "python3-venv", "openssh-server"} <= set(built["packages"])
    assert [m["id"] for m in built["models"]] == ["gemma3-270m"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", m["sha256"]) for m in built["models"])
    disk = built["outputs"]["disk"]
    assert Path(disk["path"]).stat().st_size == disk["bytes"]
    assert re.fullmatch(r"[0-9a-f]{64}", disk["sha256"]) and re.fullmatch(r"[0-9a-f]{64}", built["outputs"]["tarball"]["sha256"])
    assert built["timings"]["total_s"] > 0
    # Nothing machine-specific or secret is baked in.
    root = Path(built["outputs"]["rootfs"]["path"])
    assert not list((root / "etc" / "ssh").glob("ssh_host_*"))
    assert (root / "etc" / "machine-id").read_text() == ""
    assert not (root / "root" / ".ssh" / "authorized_keys").exists()
    assert not (root / "var" / "lib" / "hal0-firstboot").exists()
    assert not (root / "var" / "lib" / "systemd" / "credential.secret").exists()
    assert (root / "etc" / "systemd" / "system" / "multi-user.target.wants" / "hal0-firstboot.service").is_symlink()
    model = root / "var" / "lib" / "hal0" / "models" / "hal0-test-model.gguf"
    assert hashlib.sha256(model.read_bytes()).hexdigest() == built["models"][0]["sha256"]


def test_warm_rebuild_is_fast(built: dict[str, Any]) -> None:
    started = time.monotonic()
    run(REPO / "image" / "build", CI_IMAGE)
    elapsed = time.monotonic() - started
    warm = json.loads((OUT / "manifest.json").read_text())
    assert warm["cache"] == "warm" and warm["key"] == built["key"]
    assert warm["outputs"]["disk"]["sha256"] == built["outputs"]["disk"]["sha256"]
    # A cache hit is the behaviour (manifest "warm", same key, same disk); the time is reported, not asserted.
    print(f"warm rebuild: {elapsed:.0f}s (first build in this session: {built['timings']['total_s']:.0f}s, {built['cache']} cache)")


@pytest.fixture(scope="module")
def image_box(built: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The image's tarball booted as a systemd-nspawn box, a bad hal0.yaml in its boot directory."""
    spec = imagebuild.load_image(CI_IMAGE)
    work = tmp_path_factory.mktemp("box")
    key, known_hosts, inventory = work / "id_ed25519", work / "known_hosts", work / "inventory.yml"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
    root = imagebuild.WORK / "test-box"
    imagebuild.extract(Path(built["outputs"]["tarball"]["path"]), root)
    (root / "boot" / "efi" / "hal0.yaml").write_text(BAD_CONFIG)
    imagebuild.write_build_inventory(inventory, spec, key, known_hosts)
    with imagebuild.locked(), imagebuild.build_box(root, spec.hostname, key, known_hosts):
        yield inventory
    shutil.rmtree(root)


def box(inventory: Path, command: str) -> str:
    variables = yaml.safe_load(inventory.read_text())["all"]["vars"]
    known = variables["ansible_ssh_common_args"].split("UserKnownHostsFile=")[1].split()[0]
    ssh = imagebuild.ssh_command(Path(variables["ansible_ssh_private_key_file"]), Path(known))
    return run(*ssh, command).stdout.strip()


def test_testinfra_passes_on_the_image_box(image_box: Path) -> None:
    run(BIN / "pytest", "-p", "no:cacheprovider", "-q", "tests/infra/test_box.py", "--hosts=ansible://hal0", f"--ansible-inventory={image_box}")


def test_site_yml_changes_nothing_on_the_image_box(image_box: Path) -> None:
    done = run(BIN / "ansible-playbook", "-i", image_box, REPO / "site.yml", "-e", f"@{OUT / 'vars.yml'}")
    counts = {host: int(changed) for host, _, changed, _, _ in RECAP.findall(done.stdout)}
    assert counts.get(imagebuild.BOX_NAME) == 0, done.stdout[-6000:]


def test_first_boot_rejected_a_bad_config_and_kept_the_baked_one(image_box: Path, built: dict[str, Any]) -> None:
    baked = (Path(built["outputs"]["rootfs"]["path"]) / "etc" / "hal0" / "hal0.yaml").read_text()
    assert box(image_box, "cat /etc/hal0/hal0.yaml") == baked.strip()
    error = box(image_box, "cat /var/lib/hal0/firstboot-error.txt")
    assert "rejected at first boot" in error and "hal0.yaml (boot partition):2:9 server.port: must be" in error, error
    assert box(image_box, "stat -c '%U:%G %a' /var/lib/hal0/firstboot-error.txt") == "root:hal0 640"
    assert "server.port" in box(image_box, "cat /etc/motd.d/hal0-firstboot /etc/issue.d/hal0-firstboot.issue")
    assert "server.port" in box(image_box, "journalctl -u hal0-firstboot -p err --no-pager")
    assert re.fullmatch(r"[0-9a-f]{32}", box(image_box, "cat /etc/machine-id"))
    assert box(image_box, "systemctl is-active hal0 hal0-firstboot") == "active\nactive"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_raw_disk_boots_under_qemu(built: dict[str, Any], tmp_path: Path) -> None:
    from hal0.config import load_text

    # Installed up front with every other package the sessions need (image/host-packages test, run by make test).
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu and OVMF_CODE.exists(), "qemu-system-x86 or ovmf is missing: run image/host-packages test"
    disk = tmp_path / "disk.raw"
    run("cp", "--sparse=always", built["outputs"]["disk"]["path"], disk)
    # A good hal0.yaml on the boot partition (FAT, at 1 MiB): a policy edit of the baked config.
    baked = yaml.safe_load((Path(built["outputs"]["rootfs"]["path"]) / "etc" / "hal0" / "hal0.yaml").read_text())
    baked["agents"]["personas"][0]["system_prompt"] = "You are the qemu test's assistant."
    good = tmp_path / "hal0.yaml"
    good.write_text(yaml.safe_dump(baked, sort_keys=False))
    expected = load_text(good.read_text(), "hal0.yaml", environ={}).digest
    run("mcopy", "-i", f"{disk}@@1M", good, "::/hal0.yaml")
    nvram = tmp_path / "OVMF_VARS.fd"
    shutil.copy(OVMF_VARS, nvram)
    port = free_port()
    console = tmp_path / "console.log"

    def boot(kvm: bool) -> subprocess.Popen[str]:
        # KVM with the host's CPU (minus arch-capabilities, which nested hosts may refuse); else software emulation
        # of a Haswell (with "-cpu max", QEMU 7.2 soft-locks Debian's generic 6.1 kernel in its crypto self-tests).
        accel = ["-accel", "kvm", "-cpu", "host,-arch-capabilities"] if kvm else ["-accel", "tcg", "-cpu", "Haswell-noTSX"]
        args = [
            qemu, "-machine", "q35", *accel, "-m", "2048", "-smp", "2",
            "-display", "none", "-monitor", "none", "-serial", f"file:{console}", "-no-reboot",
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive", f"if=pflash,format=raw,unit=1,file={nvram}",
            "-drive", f"file={disk},format=raw,if=virtio",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:8080", "-device", "virtio-net-pci,netdev=n0",
        ]  # fmt: skip
        errors.write_text("")
        return subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL, stderr=errors.open("w"), text=True)

    def kvm_failed(vm: subprocess.Popen[str]) -> bool:
        # Nested KVM may refuse to start or stop with "KVM internal error" (the VM then hangs, paused).
        return vm.poll() is not None or "KVM internal error" in errors.read_text(errors="replace")

    errors = tmp_path / "qemu.err"
    accel = os.environ.get("HAL0_IMAGE_QEMU_ACCEL", "auto")
    kvm = accel == "kvm" or (accel == "auto" and os.access("/dev/kvm", os.R_OK | os.W_OK))
    started = time.monotonic()
    vm = boot(kvm)
    health: dict[str, Any] = {}
    try:
        while time.monotonic() - started < QEMU_TIMEOUT:
            if kvm and accel == "auto" and kvm_failed(vm):
                print(f"qemu with KVM failed ({errors.read_text(errors='replace')[:200].strip()}); software emulation")
                vm.kill()
                vm.wait(timeout=20)
                kvm, vm = False, boot(False)
            assert vm.poll() is None, f"qemu exited: {errors.read_text()}\n{console.read_text(errors='replace')[-4000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    health = json.loads(response.read())
                    break
            except OSError:
                time.sleep(2)
        print(f"qemu ({'KVM' if kvm else 'software emulation'}): /health answered after {time.monotonic() - started:.0f}s: {health}")
        assert health.get("status") == "ok", console.read_text(errors="replace")[-6000:]
        assert health["hostname"] == "hal0"
        assert health["config_digest"] == expected, "the boot partition's hal0.yaml was installed at first boot"
    finally:
        vm.terminate()
        try:
            vm.wait(timeout=20)
        except subprocess.TimeoutExpired:
            vm.kill()
            vm.wait(timeout=20)
