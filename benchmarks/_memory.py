"""Peak-memory and JSON helpers shared by the benchmark scripts (imported as ``_memory`` from benchmarks/).

Peak memory on the CPU is the growth of ``ru_maxrss`` (the process's resident-set high-water mark) over a baseline:
:func:`malloc_trim` first hands freed heap back to the OS and :func:`reset_peak_rss` lowers the high-water mark to the
resident size, so the growth measured afterwards belongs to the measured step.
"""

from __future__ import annotations

import ctypes
import math
import os
import resource

__all__ = ["current_rss_mib", "malloc_trim", "maxrss_mib", "nan_to_none", "none_to_nan", "reset_peak_rss"]


def maxrss_mib() -> float:
    """The resident-set high-water mark of this process, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def current_rss_mib() -> float:
    """The resident set of this process now, MiB (NaN where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark to the current RSS (Linux ``clear_refs``); False if unsupported.

    ``ru_maxrss`` is a high-water mark: if anything before the baseline (imports, input generation) briefly used more
    memory than is resident at the baseline, growth during the measured step up to that slack would be invisible.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def malloc_trim() -> None:
    """Give free heap memory back to the OS (glibc), so the baseline RSS holds live memory only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def nan_to_none(value):
    """Make a result strictly JSON-serialisable (NaN is not valid JSON)."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def none_to_nan(value):
    """Inverse of :func:`nan_to_none`."""
    if isinstance(value, dict):
        return {k: none_to_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [none_to_nan(v) for v in value]
    return float("nan") if value is None else value
