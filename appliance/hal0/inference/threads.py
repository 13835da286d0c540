"""How many threads `n_threads: null` means: the physical cores this process may run on.

llama-cpp-python's own default is `cpu_count() // 2`, which ignores the process's CPU affinity
and any cgroup quota, and on a 2-core box leaves half the machine idle. llama.cpp's generation
is bound by memory bandwidth and its threads spin between steps, so one thread per physical core
is the sweet spot: SMT siblings share a core's load/store units (counted once), and a thread
beyond a cgroup CPU quota only gets the whole process throttled.

The host is read from paths passed in (sysfs, the cgroup v2 mount, /proc/self/cgroup) so tests
hand in a fake tree instead of patching the machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SYSFS_CPU = Path("/sys/devices/system/cpu")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class Host:
    """Where to read the CPU topology and the process's cgroup from."""

    sysfs_cpu: Path = SYSFS_CPU
    cgroup_root: Path = CGROUP_ROOT
    proc_cgroup: Path = PROC_CGROUP


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def physical_cores(cpus: Iterable[int], sysfs_cpu: Path = SYSFS_CPU) -> int:
    """Distinct physical cores among `cpus`: SMT siblings share one core_cpus_list.

    A CPU whose topology cannot be read counts as a core of its own.
    """
    cores: set[str] = set()
    for cpu in cpus:
        topology = sysfs_cpu / f"cpu{cpu}" / "topology"
        siblings = _read(topology / "core_cpus_list") or _read(topology / "thread_siblings_list")
        if siblings is None:
            cores.add(f"cpu{cpu}")
        else:
            package = _read(topology / "physical_package_id") or "0"
            cores.add(f"{package}:{siblings}")
    return len(cores)


def cgroup_cpu_limit(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int | None:
    """Whole CPUs the cgroup v2 `cpu.max` quotas allow this process (the tightest on the way up
    to the root), or None without a quota. A fraction of a CPU rounds down, but never below one."""
    text = _read(proc_cgroup)
    if text is None:
        return None
    # cgroup v2 has a single line "0::/path"; v1 hierarchies have other numbers and are not read.
    relative = next((line[3:] for line in text.splitlines() if line.startswith("0::")), None)
    if relative is None:
        return None
    limit: float | None = None
    group = cgroup_root / relative.lstrip("/")
    while True:
        quota = _read(group / "cpu.max")
        if quota is not None:
            parts = quota.split()
            if len(parts) == 2 and parts[0] != "max":
                try:
                    cpus = int(parts[0]) / int(parts[1])
                except (ValueError, ZeroDivisionError):
                    cpus = None
                if cpus is not None and cpus > 0:
                    limit = cpus if limit is None else min(limit, cpus)
        if group == cgroup_root or cgroup_root not in group.parents:
            break
        group = group.parent
    return None if limit is None else max(1, int(limit))


def available_cores(host: Host = Host(), affinity: Iterable[int] | None = None) -> int:
    """Physical cores this process may use: its affinity, SMT siblings once, capped by a cgroup quota."""
    cpus = set(os.sched_getaffinity(0) if affinity is None else affinity)
    cores = physical_cores(sorted(cpus), host.sysfs_cpu) or 1
    quota = cgroup_cpu_limit(host.cgroup_root, host.proc_cgroup)
    return max(1, min(cores, quota) if quota is not None else cores)


def effective_threads(configured: int | None, host: Host = Host()) -> int:
    """The thread count a model runs with: what the config says, or the available physical cores."""
    return configured if configured is not None else available_cores(host)
