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
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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


# The governor's measures (ThreadGovernor): steps per measurement, and how often a busy box is
# re-tried with one thread more (doubling after each try that did not pay, up to the cap).
WINDOW = 4
PROBE_AFTER = 64
PROBE_CAP = 1024


@dataclass
class ThreadGovernor:
    """Threads for the next decode: all `most` while that is fastest, fewer while the box is busy.

    llama.cpp's threads meet at a barrier after every operation of the graph (hundreds per token).
    With every core given to it, a thread descheduled in favour of other work holds all the others
    at each barrier, and generation collapses instead of slowing down in proportion. So the count
    follows measured speed, over WINDOWs of like steps (the same number of tokens): a window slower
    than one thread fewer last ran (or the first at a count) tries one thread fewer; now and then
    a window tries one thread more. A try is kept only when it beats the window before it.
    Prompt steps follow: `batch_threads` is the configured count at full strength, never more
    than the governed count below it.
    """

    most: int
    batch: int
    current: int = 0
    _tokens: int = 0
    _window: list[float] = field(default_factory=list)
    _last: dict[tuple[int, int], float] = field(default_factory=dict)  # (threads, tokens) -> last window's median
    _trial_from: int | None = None
    _since_try: int = 0
    _try_after: int = PROBE_AFTER
    _applied: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.most = max(1, self.most)
        self.current = self.most

    @property
    def threads(self) -> int:
        return self.current

    @property
    def batch_threads(self) -> int:
        return self.batch if self.current >= self.most else min(self.batch, self.current)

    def apply(self, set_threads: Callable[[int, int], None]) -> None:
        """Hand the counts for the next decode to the context (`llama_set_n_threads`) when they changed."""
        counts = (self.threads, self.batch_threads)
        if counts != self._applied:
            set_threads(*counts)
            self._applied = counts

    def record(self, tokens: int, seconds: float) -> None:
        """One decode of `tokens` tokens took `seconds` at the current count."""
        if self.most == 1:
            return
        if tokens != self._tokens:
            self._tokens, self._window = tokens, []
        self._window.append(seconds)
        if len(self._window) < WINDOW:
            return
        measured, self._window = statistics.median(self._window), []
        threads = self.current
        self._last[(threads, tokens)] = measured
        self._since_try += WINDOW
        if self._trial_from is not None:
            before = self._last.get((self._trial_from, tokens))
            failed = before is not None and measured >= before
            if threads > self._trial_from:  # a try of more threads: after a failed one, wait longer for the next
                self._try_after = min(PROBE_CAP, self._try_after * 2) if failed else PROBE_AFTER
                self._since_try = 0
            if failed:
                self.current = self._trial_from
            self._trial_from = None
            return
        fewer = self._last.get((threads - 1, tokens))
        if threads > 1 and (fewer is None or measured > fewer):
            self._try(threads - 1)
        elif threads < self.most and self._since_try >= self._try_after:
            self._try(threads + 1)

    def _try(self, threads: int) -> None:
        self._trial_from, self.current = self.current, threads
