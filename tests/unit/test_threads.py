"""n_threads: null resolves to the physical cores available to the process, read from fake host trees."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hal0.inference.threads import Host, available_cores, cgroup_cpu_limit, effective_threads, physical_cores


def _sysfs(root: Path, siblings: dict[int, str], package: dict[int, str] | None = None) -> Path:
    """A /sys/devices/system/cpu with one core_cpus_list per CPU."""
    for cpu, listed in siblings.items():
        topology = root / "cpu" / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "core_cpus_list").write_text(listed + "\n")
        (topology / "physical_package_id").write_text((package or {}).get(cpu, "0") + "\n")
    return root / "cpu"


def _cgroup(root: Path, path: str, limits: dict[str, str]) -> Host:
    """A cgroup v2 mount with cpu.max files at the given levels, and a /proc/self/cgroup naming `path`."""
    mount = root / "cgroup"
    for level, value in limits.items():
        group = mount / level.lstrip("/")
        group.mkdir(parents=True, exist_ok=True)
        (group / "cpu.max").write_text(value + "\n")
    (mount / path.lstrip("/")).mkdir(parents=True, exist_ok=True)
    proc = root / "proc-self-cgroup"
    proc.write_text(f"0::{path}\n")
    return Host(sysfs_cpu=root / "no-sysfs", cgroup_root=mount, proc_cgroup=proc)


def test_smt_siblings_count_once(tmp_path: Path) -> None:
    # 2 cores x 2 threads, Linux numbering: cpu0/cpu2 share core 0, cpu1/cpu3 share core 1.
    sysfs = _sysfs(tmp_path, {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"})
    assert physical_cores([0, 1, 2, 3], sysfs) == 2
    assert physical_cores([0, 2], sysfs) == 1  # affinity to both threads of one core
    assert physical_cores([0, 1], sysfs) == 2


def test_same_sibling_list_on_two_packages_is_two_cores(tmp_path: Path) -> None:
    sysfs = _sysfs(tmp_path, {0: "0", 1: "1"}, package={0: "0", 1: "1"})
    assert physical_cores([0, 1], sysfs) == 2


def test_unreadable_topology_counts_each_cpu(tmp_path: Path) -> None:
    assert physical_cores([0, 1, 5], tmp_path / "missing") == 3


def test_cgroup_quota_caps_and_rounds_down(tmp_path: Path) -> None:
    host = _cgroup(tmp_path, "/system.slice/hal0.service", {"/system.slice/hal0.service": "150000 100000"})
    assert cgroup_cpu_limit(host.cgroup_root, host.proc_cgroup) == 1
    assert available_cores(host, affinity=range(8)) == 1


def test_tightest_quota_on_the_way_up_applies(tmp_path: Path) -> None:
    host = _cgroup(tmp_path, "/a/b", {"/a/b": "400000 100000", "/a": "200000 100000", "/": "max 100000"})
    assert cgroup_cpu_limit(host.cgroup_root, host.proc_cgroup) == 2
    assert available_cores(host, affinity=range(8)) == 2


def test_no_quota_leaves_the_cores(tmp_path: Path) -> None:
    host = _cgroup(tmp_path, "/user.slice", {"/user.slice": "max 100000"})
    assert cgroup_cpu_limit(host.cgroup_root, host.proc_cgroup) is None
    assert available_cores(host, affinity=range(3)) == 3


def test_a_small_quota_still_gives_one_thread(tmp_path: Path) -> None:
    host = _cgroup(tmp_path, "/tiny", {"/tiny": "10000 100000"})
    assert available_cores(host, affinity=range(4)) == 1


def test_cgroup_v1_is_not_read(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("4:cpu,cpuacct:/user.slice\n")
    assert cgroup_cpu_limit(tmp_path, proc) is None


def test_affinity_sysfs_and_quota_together(tmp_path: Path) -> None:
    sysfs = _sysfs(tmp_path / "sys", {cpu: f"{cpu % 4},{cpu % 4 + 4}" for cpu in range(8)})
    host = _cgroup(tmp_path, "/svc", {"/svc": "300000 100000"})
    host = Host(sysfs_cpu=sysfs, cgroup_root=host.cgroup_root, proc_cgroup=host.proc_cgroup)
    assert available_cores(host, affinity=range(8)) == 3  # 4 physical cores, quota of 3
    assert available_cores(host, affinity={0, 4, 1}) == 2  # affinity covers 2 cores


def test_configured_threads_win(tmp_path: Path) -> None:
    host = _cgroup(tmp_path, "/svc", {"/svc": "100000 100000"})
    assert effective_threads(6, host) == 6
    assert effective_threads(None, host) == 1


def test_this_process_gets_at_least_one_and_at_most_its_cpus() -> None:
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))


@pytest.mark.parametrize("bad", ["", "garbage", "abc 100000", "100000 0"])
def test_malformed_cpu_max_is_no_quota(tmp_path: Path, bad: str) -> None:
    host = _cgroup(tmp_path, "/svc", {"/svc": bad})
    assert cgroup_cpu_limit(host.cgroup_root, host.proc_cgroup) is None
