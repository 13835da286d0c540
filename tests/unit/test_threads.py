"""n_threads: null resolves to the physical cores available to the process, read from fake host trees."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from hal0.inference.threads import (
    PROBE_CAP,
    WINDOW,
    Host,
    ThreadGovernor,
    available_cores,
    cgroup_cpu_limit,
    effective_threads,
    physical_cores,
)


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


# --- the governor: thread counts that follow measured speed --------------------------------------


def _feed(governor: ThreadGovernor, speeds: dict[int, float], steps: int, tokens: int = 1) -> list[int]:
    """Run `steps` decodes whose time depends only on the thread count; the counts used, step by step."""
    used = []
    for _ in range(steps):
        used.append(governor.threads)
        governor.record(tokens, speeds[governor.threads])
    return used


def test_a_quiet_box_keeps_every_thread() -> None:
    governor = ThreadGovernor(most=2, batch=2)
    used = _feed(governor, {1: 0.044, 2: 0.025}, 500)
    assert used.count(1) == WINDOW  # one window tries one thread fewer, once
    assert used[-100:] == [2] * 100
    assert governor.batch_threads == 2


def test_a_busy_box_drops_to_the_faster_count_and_tries_more_now_and_then() -> None:
    governor = ThreadGovernor(most=2, batch=2)
    _feed(governor, {1: 0.044, 2: 0.025}, 40)  # quiet: the best at 2 threads is known
    used = _feed(governor, {1: 0.050, 2: 0.300}, 2000)  # one core busy: 2 threads stall at every barrier
    assert used[WINDOW] == 1  # dropped after one slow window
    assert governor.threads == 1 and governor.batch_threads == 1
    tries = [index for index in range(1, len(used)) if used[index] == 2 and used[index - 1] == 1]
    assert 1 <= len(tries) <= 6  # a failed try doubles the wait for the next one
    assert used.count(2) <= WINDOW * (len(tries) + 1)


def test_the_box_quiet_again_gets_every_thread_back() -> None:
    governor = ThreadGovernor(most=2, batch=2)
    _feed(governor, {1: 0.044, 2: 0.025}, 40)
    _feed(governor, {1: 0.050, 2: 0.300}, 100)
    assert governor.threads == 1
    _feed(governor, {1: 0.044, 2: 0.025}, PROBE_CAP + 2 * WINDOW)
    assert governor.threads == 2 and governor.batch_threads == 2


def test_counts_step_one_at_a_time_and_never_leave_their_bounds() -> None:
    governor = ThreadGovernor(most=4, batch=8)
    assert governor.batch_threads == 8  # at full strength prompts get the configured count
    used = _feed(governor, {1: 0.05, 2: 0.04, 3: 0.6, 4: 0.9}, 3000)
    assert max(abs(a - b) for a, b in itertools.pairwise(used)) == 1
    assert min(used) >= 1 and max(used) <= 4
    assert governor.threads == 2 and governor.batch_threads == 2


def test_steps_of_other_sizes_are_not_compared() -> None:
    governor = ThreadGovernor(most=2, batch=2)
    _feed(governor, {1: 0.044, 2: 0.025}, 40, tokens=1)
    _feed(governor, {1: 0.2, 2: 0.1}, 40, tokens=4)  # four slots generating: slower steps, same speed
    assert governor.threads == 2


def test_one_thread_is_never_governed() -> None:
    governor = ThreadGovernor(most=1, batch=4)
    _feed(governor, {1: 5.0}, 100)
    assert governor.threads == 1 and governor.batch_threads == 4


def test_counts_reach_the_context_only_when_they_change() -> None:
    governor = ThreadGovernor(most=2, batch=3)
    calls: list[tuple[int, int]] = []
    for _ in range(3):
        governor.apply(lambda threads, batch: calls.append((threads, batch)))
    _feed(governor, {1: 0.044, 2: 0.025}, 40)
    _feed(governor, {1: 0.050, 2: 0.300}, WINDOW)
    governor.apply(lambda threads, batch: calls.append((threads, batch)))
    assert calls == [(2, 3), (1, 1)]
