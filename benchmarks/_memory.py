"""Peak-memory helpers shared by the benchmark scripts (imported as ``_memory`` from benchmarks/).

Peak memory on the CPU is the growth of ``ru_maxrss`` (the process's resident-set high-water mark) over a baseline:
:func:`malloc_trim` first hands freed heap back to the OS and :func:`reset_peak_rss` lowers the high-water mark to the
resident size, so the growth measured afterwards belongs to the measured step.
"""

from __future__ import annotations

import ctypes
import os
import resource
from collections.abc import Callable
from typing import Any

__all__ = ["current_rss_mib", "malloc_trim", "maxrss_mib", "peak_growth", "reset_peak_rss"]


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


def peak_growth(fn: Callable[[], Any], trim: bool = False) -> dict[str, Any]:
    """Run ``fn()`` and measure how far it raises the resident-set high-water mark.

    Args:
        fn: The measured work (one step).
        trim: Hand freed heap back to the OS first (:func:`malloc_trim`), so the baseline holds live memory only.

    Returns:
        ``peak_mib`` (growth of ``ru_maxrss`` over the baseline), ``slack_mib`` (high-water mark above the resident
        size at the baseline: growth below it goes unseen), ``reset`` (whether the mark could be reset; without it a
        second measurement sees nothing) and ``result`` (what ``fn`` returned).
    """
    if trim:
        malloc_trim()
    reset = reset_peak_rss()
    baseline = maxrss_mib()
    slack = max(0.0, baseline - current_rss_mib())
    result = fn()
    return {"peak_mib": maxrss_mib() - baseline, "slack_mib": slack, "reset": reset, "result": result}
