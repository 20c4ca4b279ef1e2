"""The torch thread count of ``lightning-mm``: the CPUs this process may use, not the machine's.

torch starts with one thread per core it sees, whatever else runs there: a container's CPU quota is not among what it
reads, nor are other trainings on the same cores. Its threads then wait for each other and for the other processes,
and a run takes several times the CPU time. The Trainer subcommands therefore lower the count to the CPUs the process
may run on (``os.sched_getaffinity``) and its cgroup CPU quota, whichever is smaller, less the CPUs other processes
keep busy when the run starts (the machine's one-minute load average, or the processes runnable right now if fewer,
for the share of its CPUs this process may use; rounded, at least one thread). The load average trails by a minute:
a run started just after another one ended would otherwise see the finished run's load and take one thread on idle
cores. On a shared machine a run therefore takes fewer threads while others train, and keeps that count to its end.

An explicit choice wins: ``LIGHTNING_MM_NUM_THREADS=<n>`` sets the count, ``OMP_NUM_THREADS`` (read by torch itself)
is left alone, and a count already below the available CPUs (``torch.set_num_threads`` before ``main``) is kept.
Multi-process strategies (DDP, FSDP) then divide the count between their processes (Lightning does).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

from lightning_mm.errors import ConfigError

__all__ = [
    "NUM_THREADS_ENV",
    "available_cpus",
    "busy_cpus_now",
    "cgroup_cpu_limit",
    "choose_num_threads",
    "thread_count_line",
]

#: Environment variable that sets the thread count of ``lightning-mm`` (a positive integer).
NUM_THREADS_ENV = "LIGHTNING_MM_NUM_THREADS"


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup") -> int | None:
    """CPUs the cgroup's quota allows, rounded up (cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``); None: none.

    ``cpu.max`` holds ``"<quota> <period>"`` in microseconds, or ``"max <period>"`` without a quota.
    """
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        return None


def available_cpus(cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: its CPU affinity, capped by its cgroup's CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_root)
    return max(1, min(cpus, limit) if limit else cpus)


def busy_cpus_now(
    loadavg: str | os.PathLike = "/proc/loadavg", samples: int = 5, interval: float = 0.02
) -> float | None:
    """CPUs other processes keep busy now: the kernel's count of runnable threads, less this reader; None: unknown.

    ``/proc/loadavg``'s fourth field is ``"<runnable>/<total>"``; the reading thread is one of the runnable ones. The
    mean of ``samples`` readings ``interval`` seconds apart smooths a single moment's count.
    """
    counts = []
    for i in range(samples):
        if i:
            time.sleep(interval)
        try:
            counts.append(int(Path(loadavg).read_text().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return None
    return max(0.0, sum(counts) / len(counts))


def choose_num_threads(current: int, available: int, load: float, env: Mapping[str, str]) -> tuple[int | None, str]:
    """The thread count to set (None: keep ``current``) and why.

    Args:
        current: torch's thread count now.
        available: CPUs this process may use (:func:`available_cpus`).
        load: Of those, the CPUs busy with other work (0 when unknown).
        env: The environment (``LIGHTNING_MM_NUM_THREADS``, ``OMP_NUM_THREADS``).

    Raises:
        ConfigError: ``LIGHTNING_MM_NUM_THREADS`` is not a positive integer.
    """
    value = env.get(NUM_THREADS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"{NUM_THREADS_ENV}={value!r}: the thread count must be a positive integer.")
        return int(value), f"{NUM_THREADS_ENV}={value}"
    if env.get("OMP_NUM_THREADS", "").strip():
        return None, f"OMP_NUM_THREADS={env['OMP_NUM_THREADS'].strip()}"
    free = max(1, min(available, round(available - load)))
    reason = f"{available} CPU(s) available" + (f", {load:.1f} busy with other work" if free < available else "")
    if current <= free:
        return None, reason
    return free, reason


def thread_count_line(current: int, env: Mapping[str, str] | None = None) -> tuple[int | None, str]:
    """:func:`choose_num_threads` for this process (its CPUs, the machine's load, ``os.environ``), and a line for the
    log that says the count and where it comes from."""
    available = available_cpus()
    try:  # the machine's load, spread over all its CPUs: the share that falls on ours
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on Unix
        load = 0.0
    now = busy_cpus_now()
    if now is not None:  # the average trails by a minute: a run that just ended is not load any more
        load = min(load, now)
    load *= available / (os.cpu_count() or available)
    count, reason = choose_num_threads(current, available, load, os.environ if env is None else env)
    line = f"torch threads: {count or current} ({reason}; {NUM_THREADS_ENV}=<n> sets the count)"
    return count, line
