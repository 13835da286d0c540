"""image/build: the hal0 appliance image, built by the same site.yml and roles as a live box.

Stages (each prints its progress and time):
  1. declaration   image.yaml validated (hal0.config.image), the wheelhouse built (image/wheelhouse)
  2. provision     a fresh copy of the cached Debian rootfs booted as a systemd-nspawn box in a network
                   namespace of its own; `ansible-playbook site.yml image/image.yml` over SSH
  3. clean         box stopped; SSH host keys, machine-id, TLS keys, secrets, the build key removed
  4. export        rootfs directory, tarball, raw GPT disk (ESP: systemd-boot, kernel, initrd; ext4 root)
  5. manifest      packages with versions, hal0 and llama-cpp-python versions, model sha256s, image sha256s

Cache: the provisioned rootfs is kept under /var/cache/hal0/image/KEY/, KEY being the sha256 of every input
(the declaration, site.yml, roles/, image/image.yml, config, wheelhouse MANIFEST, model files, the base rootfs,
this file); the raw disk is cached next to it per disk layout. A rebuild with nothing changed only re-exports.

The build box never shares anything with image/lab's boxes: its own netns (hal0img-build), veth (hi-build), subnet
($HAL0_IMAGE_NET, 10.77.44.0/24) and nft table (inet hal0img), so it can run while a lab is up. It is brought up
by image/lab's own code (its identity, boot and wait: `image/lab _box-identity|_boot-box|_wait-box`), not a copy.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hal0.config import ConfigError
from hal0.config.image import ImageSpec, load_image, resolve
from hal0.inference.model_packages import sha256_of

REPO = Path(__file__).resolve().parents[1]
LAB = REPO / "image" / "lab"  # the box bring-up this shares with the lab (identity, boot, wait, the host's resolver)
VENV_BIN = REPO / "build" / "infra-venv" / "bin"
ROOTFS_TAR = Path(os.environ.get("HAL0_ROOTFS_TAR", "/var/cache/hal0/rootfs-bookworm.tar"))
CACHE = Path(os.environ.get("HAL0_IMAGE_CACHE", "/var/cache/hal0/image"))
WORK = Path(os.environ.get("HAL0_IMAGE_WORK", "/var/lib/hal0-image"))
NET = os.environ.get("HAL0_IMAGE_NET", "10.77.44")
PLAY_TIMEOUT = int(os.environ.get("HAL0_IMAGE_PLAY_TIMEOUT", "1800"))  # the provisioning play, seconds
COMMAND_TIMEOUT = 1800  # any other host command (tar, mkfs, ssh...), seconds
CACHE_KEEP = int(os.environ.get("HAL0_IMAGE_CACHE_KEEP", "3"))  # cache entries kept (least recently used go)
NETNS, VETH, NFT_TABLE = "hal0img-build", "hi-build", "hal0img"
BOX_ADDR, HOST_ADDR = f"{NET}.10", f"{NET}.1"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"  # Linux root (x86-64), discoverable partitions spec
BOOT_PARTLABEL, ROOT_PARTLABEL = "hal0-boot", "hal0-root"
# Removed from the provisioned rootfs: nothing machine-specific or secret is baked (firstboot makes them).
MACHINE_SPECIFIC = [
    "etc/ssh/ssh_host_*",
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
    "root/.ssh/authorized_keys",
    "root/.ansible",
    "root/.cache",
    "etc/nginx/hal0/selfsigned.key",
    "etc/nginx/hal0/selfsigned.crt",
    "etc/nginx/hal0/htpasswd",
    "var/lib/hal0-firstboot",
    "var/lib/hal0/firstboot-error.txt",
    "var/log/journal/*",
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "tmp/*",
    "var/tmp/*",
]

T0 = time.monotonic()
# What children get: no PYTHONPATH (image/build sets it for this process only; pip would take appliance/ for installed).
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}


def say(stage: str, message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {stage}: {message}", flush=True)


def sh(*args: str | Path, check: bool = True, capture: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    kwargs.setdefault("env", ENV)
    kwargs.setdefault("timeout", COMMAND_TIMEOUT)
    try:
        done = subprocess.run([str(a) for a in args], check=False, text=True, capture_output=capture, **kwargs)
    except subprocess.TimeoutExpired as expired:
        raise SystemExit(f"image/build: {' '.join(map(str, args))} did not finish within {kwargs['timeout']}s") from expired
    if check and done.returncode != 0:
        out = (done.stdout or "")[-4000:] + (done.stderr or "")[-4000:]
        raise SystemExit(f"image/build: {' '.join(map(str, args))} failed ({done.returncode}):\n{out}")
    return done


def hash_tree(digest: Any, root: Path) -> None:
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in paths:
        digest.update(str(path.relative_to(REPO) if path.is_relative_to(REPO) else path).encode())
        digest.update(path.read_bytes())


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return str(size)


# ---------------------------------------------------------------- declaration -> play variables
def config_models(spec: ImageSpec, config_file: Path) -> list[dict[str, Any]]:
    models = spec.config_overrides.get("models")
    if models is None:
        models = (yaml.safe_load(config_file.read_text()) or {}).get("models", [])
    return list(models)


def play_vars(spec: ImageSpec, spec_path: Path) -> dict[str, Any]:
    config_file = resolve(spec_path, spec.config) / "hal0.yaml"
    sources: dict[str, Any] = {}
    packages: list[str] = []
    for model in config_models(spec, config_file):
        declared = spec.models.get(model["id"])
        kind = declared.source if declared else "package"
        if kind == "file" and declared and declared.file:
            sources[model["id"]] = {"source": "file", "file": str(resolve(spec_path, declared.file))}
        elif kind == "test":
            sources[model["id"]] = {"source": "test"}
        else:
            from hal0.inference.model_packages import MODEL_PACKAGES

            entry = MODEL_PACKAGES.get(model["id"])
            if entry is None:
                raise SystemExit(f"image/build: model {model['id']!r} is not one of hal0's model packages; declare its source (file) in {spec_path}")
            packages.append(entry.distribution)
    return {
        "hal0_wheelhouse": str(REPO / "build" / "image" / f"wheelhouse-{spec.gpu_backend}"),
        "hal0_config_file": str(config_file),
        "hal0_config_overrides": spec.config_overrides,
        "hal0_model_sources": sources,
        "hal0_wheelhouse_model_packages": sorted(set(packages)),
        "hal0_gpu_backend": "" if spec.gpu_backend == "cpu" else spec.gpu_backend,
        "appliance_os_hostname": spec.hostname,
        "appliance_os_kernel": spec.kernel,
        "appliance_os_packages": list(spec.packages),
        "appliance_os_admin_name": spec.admin.name if spec.admin else "",
        "appliance_os_admin_ssh_keys": list(spec.admin.ssh_keys) if spec.admin else [],
        "firstboot_proxy": spec.proxy,
    }


def build_wheelhouse(variables: dict[str, Any], backend: str) -> Path:
    """The image's own wheelhouse (the role's hal0_wheelhouse): a lab play running meanwhile never swaps it."""
    out = Path(variables["hal0_wheelhouse"])
    args = [str(REPO / "image" / "wheelhouse"), "--backend", backend]
    args += [f"--model-package={p}" for p in variables["hal0_wheelhouse_model_packages"]]
    sh(*args, str(out), capture=False, stdout=subprocess.DEVNULL, env={**ENV, "HAL0_APPLIANCE_DIR": str(REPO / "appliance")})
    return out


def stage_sources(out: Path, wheelhouse: Path, backend: str) -> Path:
    """A frozen copy of site.yml, ansible.cfg, roles/ and image/ to run the play from: edits to the working tree
    during a build do not leak into it, and site.yml's wheelhouse step finds the image's wheelhouse up to date."""
    stage = out / "src"
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "build").mkdir(parents=True)
    for part in ("site.yml", "ansible.cfg", "roles", "image"):
        sh("cp", "-a", REPO / part, stage / part)
    for suffix in ("", ".venv"):
        (stage / "build" / f"wheelhouse-{backend}{suffix}").symlink_to(f"{wheelhouse}{suffix}")
    return stage


def input_key(spec: ImageSpec, variables: dict[str, Any], wheelhouse: Path) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode())
    digest.update(json.dumps(variables, sort_keys=True).encode())
    for part in ("site.yml", "ansible.cfg", "roles", "image/image.yml", "image/imagebuild.py"):
        hash_tree(digest, REPO / part)
    hash_tree(digest, Path(variables["hal0_config_file"]))
    hash_tree(digest, wheelhouse / "MANIFEST")
    for source in variables["hal0_model_sources"].values():
        if source.get("file"):
            digest.update(sha256_of(Path(source["file"])).encode())
    stat = ROOTFS_TAR.stat()
    digest.update(f"{ROOTFS_TAR}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------- the build box
def prepare_host() -> None:
    """The build host's packages (image/host-packages' image group) and image/lab's cached base rootfs."""
    # One list, one install step for the whole project (image/host-packages); prints what it installed.
    sh(REPO / "image" / "host-packages", "image", capture=False)
    # Built once and cached; image/lab checks a cached tarball (its root must be 0755 root) and rebuilds a bad one.
    sh(LAB, "rootfs", capture=False)


def teardown_network() -> None:
    sh("ip", "netns", "pids", NETNS, check=False)
    if NETNS in sh("ip", "netns", "list", check=False).stdout.split():
        for pid in sh("ip", "netns", "pids", NETNS, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        sh("ip", "netns", "delete", NETNS, check=False)
    sh("ip", "link", "delete", VETH, check=False)
    sh("nft", "delete", "table", "inet", NFT_TABLE, check=False)


@contextlib.contextmanager
def build_box(root: Path, hostname: str, key: Path, known_hosts: Path) -> Iterator[None]:
    """Boot ROOT as a systemd-nspawn box at BOX_ADDR; stop it and remove its network on exit."""
    dns = sh(LAB, "host-resolver").stdout.strip()
    known_hosts.write_text("")  # this box's key only (the lab appends one line per box)
    sh(LAB, "_box-identity", root, hostname, BOX_ADDR, dns, f"{key}.pub", known_hosts)

    teardown_network()
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    forward_before = forward.read_text().strip()
    process = None
    try:
        sh("ip", "netns", "add", NETNS)
        sh("ip", "link", "add", VETH, "type", "veth", "peer", "name", "eth0", "netns", NETNS)
        sh("ip", "addr", "add", f"{HOST_ADDR}/24", "dev", VETH)
        sh("ip", "link", "set", VETH, "up")
        sh("ip", "-n", NETNS, "link", "set", "lo", "up")
        sh("ip", "-n", NETNS, "addr", "add", f"{BOX_ADDR}/24", "dev", "eth0")
        sh("ip", "-n", NETNS, "link", "set", "eth0", "up")
        sh("ip", "-n", NETNS, "route", "add", "default", "via", HOST_ADDR)
        forward.write_text("1\n")
        # Egress for apt only (DNS to the host's resolver, HTTP/HTTPS), NAT; nothing else in or out.
        rules = f"""table inet {NFT_TABLE} {{
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    ip saddr {NET}.0/24 oifname != "{VETH}" masquerade
  }}
  chain forward {{ type filter hook forward priority filter; policy accept;
    iifname "{VETH}" ip daddr {dns} udp dport 53 accept
    iifname "{VETH}" ip daddr {dns} tcp dport 53 accept
    iifname "{VETH}" tcp dport {{ 80, 443 }} accept
    iifname "{VETH}" drop
    oifname "{VETH}" ct state established,related accept
    oifname "{VETH}" drop
  }}
}}"""
        sh("nft", "-f", "-", input=rules)
        box_log = WORK / "box.log"
        log = open(box_log, "w")  # noqa: SIM115 - lives as long as the box
        # image/lab's boot: the process becomes systemd-nspawn, so terminate() below halts the box cleanly.
        process = subprocess.Popen(
            [str(LAB), "_boot-box", str(root), hostname, NETNS],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=ENV,
        )  # fmt: skip
        started = time.monotonic()
        # image/lab's wait: SSH, then a bounded settle (failed units and queued jobs named); fails at once if the box stops.
        sh(LAB, "_wait-box", hostname, BOX_ADDR, key, known_hosts, box_log, str(process.pid), capture=False)
        say("provision", f"build box up at {BOX_ADDR} after {time.monotonic() - started:.0f}s")
        yield
    finally:
        if process is not None and process.poll() is None:
            process.terminate()  # nspawn asks the box's systemd to halt cleanly
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        teardown_network()
        forward.write_text(f"{forward_before}\n")


def ssh_command(key: Path, known_hosts: Path) -> list[str]:
    return ["ssh", "-i", str(key), "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR", f"root@{BOX_ADDR}"]  # fmt: skip


BOX_NAME = "image-box"  # inventory name of the build box (not "hal0": that is the group's name)


def write_build_inventory(path: Path, spec: ImageSpec, key: Path, known_hosts: Path, address: str = BOX_ADDR) -> None:
    """The build's inventory: the one build box in `hal0` (and in `proxy` for an image with the proxy), with a
    throwaway password. image/lab's write_inventory writes a topology of lab boxes; the SSH settings are the same."""
    host = {"ansible_host": address}
    inventory: dict[str, Any] = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_private_key_file": str(key),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes",
            },
            "children": {
                "hal0": {"hosts": {BOX_NAME: host}},
                "proxy": {"hosts": {BOX_NAME: host} if spec.proxy else {}},
            },
        }
    }
    if spec.proxy:
        # A throwaway password for the build: removed before export, a new one is made at first boot.
        build_password = hashlib.sha256(os.urandom(32)).hexdigest()[:24]
        inventory["all"]["children"]["proxy"]["vars"] = {
            "reverse_proxy_server_name": spec.hostname,
            "reverse_proxy_basic_auth_users": [{"name": "hal0", "password": build_password}],
        }
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))


def provision(spec: ImageSpec, variables: dict[str, Any], out: Path, root: Path, stage: Path) -> dict[str, Any]:
    key = out / "build_key"
    known_hosts = out / "known_hosts"
    if not key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hal0-image-build", "-f", key)
    inventory = out / "inventory.yml"
    write_build_inventory(inventory, spec, key, known_hosts)
    facts: dict[str, Any] = {}
    with build_box(root, spec.hostname, key, known_hosts):
        env = {
            **ENV,
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
            "ANSIBLE_CONFIG": str(stage / "ansible.cfg"),
            "ANSIBLE_FORCE_COLOR": "0",
            "HAL0_APPLIANCE_DIR": str(REPO / "appliance"),
        }
        say("provision", "ansible-playbook site.yml image/image.yml (the same play and roles as a live box)")
        play = subprocess.Popen(
            [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "site.yml", "image/image.yml", "-e", f"@{out / 'vars.yml'}"],
            cwd=stage, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        tail: list[str] = []
        assert play.stdout is not None
        # Bounded like every wait here: a play that runs over is killed and reported with its last lines.
        timed_out = threading.Event()
        watchdog = threading.Timer(PLAY_TIMEOUT, lambda: (timed_out.set(), play.kill()))
        watchdog.start()
        for line in play.stdout:
            tail = [*tail[-200:], line]
            if line.startswith(("PLAY [", "TASK [", "RUNNING HANDLER")):
                say("provision", line.strip(" *\n"))
            elif line.startswith(("fatal:", "failed:")) or re.match(r"^\S+\s+: ok=", line):
                print("    " + line.rstrip(), flush=True)
        (out / "play.log").write_text("".join(tail))
        watchdog.cancel()
        if play.wait(timeout=60) != 0:
            what = f"did not finish within {PLAY_TIMEOUT}s" if timed_out.is_set() else "failed"
            raise SystemExit(f"image/build: the play {what}; the last lines:\n{''.join(tail[-60:])}")
        ssh = ssh_command(key, known_hosts)
        facts["packages"] = dict(line.split("\t", 1) for line in sh(*ssh, "dpkg-query -W -f '${Package}\\t${Version}\\n'").stdout.splitlines() if "\t" in line)
        versions = sh(*ssh, "/opt/hal0/venv/bin/python -c \"import importlib.metadata as m, json; "
                            "print(json.dumps({'hal0': m.version('hal0'), 'llama-cpp-python': m.version('llama_cpp_python')}))\"").stdout  # fmt: skip
        facts["versions"] = json.loads(versions)
        models = sh(*ssh, "/opt/hal0/venv/bin/python -c \"import yaml, json, hashlib; "
                          "c = yaml.safe_load(open('/etc/hal0/hal0.yaml')); "
                          "print(json.dumps([{'id': m['id'], 'path': m['path'], 'sha256': hashlib.sha256(open(m['path'], 'rb').read()).hexdigest()} "
                          "for m in c['models']]))\"").stdout  # fmt: skip
        facts["models"] = json.loads(models)
        facts["kernel"] = sh(*ssh, "ls /lib/modules").stdout.split()
        say("provision", "stopping the build box")
    return facts


def clean(root: Path) -> None:
    for pattern in MACHINE_SPECIFIC:
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    (root / "etc" / "machine-id").write_text("")  # empty: systemd's "first boot"
    (root / "etc" / "resolv.conf").write_text("")  # the build host's resolver means nothing elsewhere
    (root / "boot" / "efi").mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------- exports
def tar_rootfs(root: Path, tarball: Path) -> None:
    tmp = tarball.with_suffix(".tmp")
    sh("tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", root, "-cf", tmp, ".")
    tmp.rename(tarball)


def extract(tarball: Path, root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    sh("tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", root, "-xf", tarball)


def du_bytes(root: Path) -> int:
    return int(sh("du", "-sb", root).stdout.split()[0])


def make_disk(spec: ImageSpec, root: Path, disk: Path, key: str) -> dict[str, str]:
    """GPT: ESP (FAT32, systemd-boot, kernel, initrd, hal0.yaml.example) + ext4 root, built without loop devices."""
    ids = {name: str(uuid.UUID(hashlib.sha256(f"{key}:{name}".encode()).hexdigest()[:32])) for name in ("esp", "root", "fs", "disk")}
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise SystemExit("image/build: no kernel in the rootfs's /boot (roles/appliance_os installs it)")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    initrd = root / "boot" / f"initrd.img-{version}"
    efi = root / "usr" / "lib" / "systemd" / "boot" / "efi" / "systemd-bootx64.efi"
    with tempfile.TemporaryDirectory(dir=disk.parent) as scratch_dir:
        scratch = Path(scratch_dir)
        esp_dir = scratch / "esp"
        for sub in ("EFI/BOOT", "EFI/systemd", "loader/entries"):
            (esp_dir / sub).mkdir(parents=True)
        shutil.copy(efi, esp_dir / "EFI" / "BOOT" / "BOOTX64.EFI")
        shutil.copy(efi, esp_dir / "EFI" / "systemd" / "systemd-bootx64.efi")
        shutil.copy(kernels[-1], esp_dir / "vmlinuz")
        shutil.copy(initrd, esp_dir / "initrd.img")
        (esp_dir / "loader" / "loader.conf").write_text("default hal0.conf\ntimeout 1\nconsole-mode keep\neditor no\n")
        (esp_dir / "loader" / "entries" / "hal0.conf").write_text(
            f"title hal0 ({spec.name})\nlinux /vmlinuz\ninitrd /initrd.img\noptions root=PARTUUID={ids['root']} rw {spec.disk.kernel_cmdline}\n"
        )
        baked = (root / "etc" / "hal0" / "hal0.yaml").read_text()
        (esp_dir / "hal0.yaml.example").write_text(
            "# The config this image was built with. Copy it to hal0.yaml on this partition and edit it: at first boot\n"
            "# hal0 validates hal0.yaml and, if good, installs it as /etc/hal0/hal0.yaml (errors: console, motd, dashboard).\n" + baked
        )
        esp_bytes = spec.disk.esp_mib << 20
        esp_img = scratch / "esp.img"
        with esp_img.open("wb") as handle:
            handle.truncate(esp_bytes)
        sh("mkfs.vfat", "-F", "32", "-n", "HAL0-BOOT", "-i", ids["esp"].replace("-", "")[:8], esp_img)
        sh("mcopy", "-s", "-i", esp_img, *sorted(esp_dir.iterdir()), "::/")
        root_bytes = ((du_bytes(root) * 12 // 10 + (spec.disk.root_free_mib << 20)) >> 20 << 20) + (64 << 20)
        root_img = scratch / "root.img"
        sh("mkfs.ext4", "-q", "-F", "-L", "hal0-root", "-U", ids["fs"], "-d", root, "-E", "root_owner=0:0", root_img, f"{root_bytes >> 10}k")
        mib = 1 << 20
        total = mib + esp_bytes + root_bytes + mib
        tmp = disk.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            handle.truncate(total)
        table = (
            f"label: gpt\nlabel-id: {ids['disk']}\nfirst-lba: 2048\n"
            f"start=2048, size={esp_bytes // 512}, type={ESP_TYPE}, uuid={ids['esp']}, name={BOOT_PARTLABEL}\n"
            f"start={(mib + esp_bytes) // 512}, size={root_bytes // 512}, type={ROOT_TYPE}, uuid={ids['root']}, name={ROOT_PARTLABEL}\n"
        )
        sh("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", tmp, input=table)
        sh("dd", f"if={esp_img}", f"of={tmp}", "bs=1M", f"seek={mib // mib}", "conv=notrunc,sparse", "status=none")
        sh("dd", f"if={root_img}", f"of={tmp}", "bs=1M", f"seek={(mib + esp_bytes) // mib}", "conv=notrunc,sparse", "status=none")
        tmp.rename(disk)
    return {"kernel": version, "root_partuuid": ids["root"], "esp_bytes": str(esp_bytes), "root_bytes": str(root_bytes)}


def link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        sh("cp", "--sparse=always", "--reflink=auto", source, target)


def prune_cache(current: Path) -> None:
    """Keep the CACHE_KEEP most recently used entries (each is a rootfs tarball and disks: about 1-3 GiB)."""
    os.utime(current)
    entries = sorted((p for p in CACHE.iterdir() if p.is_dir() and p != current), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[max(CACHE_KEEP - 1, 0) :]:
        say("cache", f"pruning {old}")
        shutil.rmtree(old)


@contextlib.contextmanager
def locked() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit("image/build: another image build is running") from None
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image/build", description="Build the hal0 appliance image.")
    parser.add_argument("image", nargs="?", default=str(REPO / "image" / "image.yaml"), help="image declaration (default: image/image.yaml)")
    parser.add_argument("--no-cache", action="store_true", help="ignore the cache and build everything")
    parser.add_argument("--out", help="output directory (default: build/image/NAME)")
    args = parser.parse_args(argv)
    spec_path = Path(args.image).resolve()

    say("declaration", f"{spec_path}")
    try:
        spec = load_image(spec_path)
    except ConfigError as error:
        for issue in error.issues:
            print(issue, file=sys.stderr)
        return 1
    out = Path(args.out).resolve() if args.out else REPO / "build" / "image" / spec.name
    out.mkdir(parents=True, exist_ok=True)
    variables = play_vars(spec, spec_path)
    (out / "vars.yml").write_text("# Written by image/build: the play variables this image was built with.\n" + yaml.safe_dump(variables, sort_keys=False))

    with locked():
        prepare_host()
        stage = time.monotonic()
        wheelhouse = build_wheelhouse(variables, spec.gpu_backend)
        key = input_key(spec, variables, wheelhouse)
        say("declaration", f"inputs hashed: key {key[:16]} (wheelhouse ready in {time.monotonic() - stage:.0f}s)")
        cached = CACHE / key[:16]
        cached_tar, cached_meta = cached / "rootfs.tar", cached / "meta.json"
        if args.no_cache and cached.exists():
            shutil.rmtree(cached)
        timings: dict[str, float] = {}

        if cached_tar.is_file() and cached_meta.is_file():
            say("provision", f"cached: {cached_tar} (nothing changed since it was built)")
            meta = json.loads(cached_meta.read_text())
        else:
            stage = time.monotonic()
            WORK.mkdir(parents=True, exist_ok=True)
            root = WORK / "root"
            say("provision", f"fresh copy of {ROOTFS_TAR}")
            extract(ROOTFS_TAR, root)
            stage_dir = stage_sources(out, wheelhouse, spec.gpu_backend)
            facts = provision(spec, variables, out, root, stage_dir)
            shutil.rmtree(stage_dir)
            timings["provision_s"] = round(time.monotonic() - stage, 1)
            stage = time.monotonic()
            say("clean", "removing SSH host keys, machine-id, TLS keys, secrets, the build key, caches")
            clean(root)
            cached.mkdir(parents=True, exist_ok=True)
            tar_rootfs(root, cached_tar)
            shutil.rmtree(root)
            meta = {**facts, "key": key, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "tar_sha256": sha256_of(cached_tar)}
            cached_meta.write_text(json.dumps(meta, indent=2))
            timings["clean_s"] = round(time.monotonic() - stage, 1)

        stage = time.monotonic()
        outputs: dict[str, Any] = {}
        rootfs_dir = out / "rootfs"
        stamp = out / ".rootfs-key"
        need_dir = "rootfs" in spec.outputs or ("disk" in spec.outputs)
        if need_dir and not (stamp.is_file() and stamp.read_text() == key and rootfs_dir.is_dir()):
            say("export", f"rootfs directory {rootfs_dir}")
            stamp.unlink(missing_ok=True)
            extract(cached_tar, rootfs_dir)
            stamp.write_text(key)
        if "rootfs" in spec.outputs:
            outputs["rootfs"] = {"path": str(rootfs_dir), "bytes": du_bytes(rootfs_dir)}
        if "tarball" in spec.outputs:
            tarball = out / f"{spec.name}.tar"
            link_or_copy(cached_tar, tarball)
            say("export", f"tarball {tarball}")
            outputs["tarball"] = {"path": str(tarball), "bytes": tarball.stat().st_size, "sha256": meta["tar_sha256"]}
        if "disk" in spec.outputs:
            layout = hashlib.sha256(json.dumps(spec.disk.model_dump(), sort_keys=True).encode()).hexdigest()[:12]
            cached_disk, disk_meta = cached / f"disk-{layout}.raw", cached / f"disk-{layout}.json"
            if not (cached_disk.is_file() and disk_meta.is_file()):
                say("export", "raw disk: GPT, ESP (FAT32, systemd-boot, kernel, initrd), ext4 root (mkfs.ext4 -d, no loop devices)")
                info = make_disk(spec, rootfs_dir, cached_disk, key)
                info["sha256"] = sha256_of(cached_disk)
                disk_meta.write_text(json.dumps(info, indent=2))
            else:
                say("export", f"raw disk cached: {cached_disk}")
            info = json.loads(disk_meta.read_text())
            disk = out / f"{spec.name}.raw"
            link_or_copy(cached_disk, disk)
            allocated = disk.stat().st_blocks * 512
            outputs["disk"] = {"path": str(disk), "bytes": disk.stat().st_size, "allocated_bytes": allocated, **info}
        if "rootfs" not in spec.outputs and rootfs_dir.exists():
            shutil.rmtree(rootfs_dir)
            stamp.unlink(missing_ok=True)
        timings["export_s"] = round(time.monotonic() - stage, 1)
        prune_cache(cached)

    timings["total_s"] = round(time.monotonic() - T0, 1)
    manifest = {
        "image": spec.name,
        "declaration": str(spec_path),
        "key": key,
        "built_at": meta["built_at"],
        "cache": "warm" if "provision_s" not in timings else "cold",
        "timings": timings,
        "hal0": meta["versions"]["hal0"],
        "llama-cpp-python": meta["versions"]["llama-cpp-python"],
        "kernel": meta.get("kernel"),
        "models": meta["models"],
        "outputs": outputs,
        "packages": meta["packages"],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    say("manifest", f"{out / 'manifest.json'} ({len(meta['packages'])} packages, hal0 {manifest['hal0']}, llama-cpp-python {manifest['llama-cpp-python']})")
    for model in meta["models"]:
        say("manifest", f"model {model['id']}: sha256 {model['sha256']}")
    for name, item in outputs.items():
        extra = f", {human(item['allocated_bytes'])} allocated (sparse)" if "allocated_bytes" in item else ""
        digest = f", sha256 {item['sha256'][:16]}..." if "sha256" in item else ""
        say("done", f"{name}: {item['path']} {human(item['bytes'])}{extra}{digest}")
    say("done", f"{manifest['cache']} build in {timings['total_s']:.0f}s " + ", ".join(f"{k[:-2]} {v:.0f}s" for k, v in timings.items() if k != "total_s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
