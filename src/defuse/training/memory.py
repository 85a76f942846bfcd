"""Keep freed memory in the process for the next training step (glibc's allocator on Linux).

A training step allocates and frees the same activation and gradient buffers again and again. glibc's
``malloc`` serves every block over its mmap threshold (128 KiB at first, raised as such blocks are freed)
with fresh pages from the kernel and gives them back at ``free``, and trims the top of its heap whenever
more than twice that threshold is free there, so the next step faults every page of its buffers in again,
zero-filled by the kernel. :func:`keep_freed_memory` raises the mmap threshold to glibc's ceiling (32 MiB on
64-bit) and the trim threshold to 1 GiB, so buffers up to 32 MiB come from the heap and stay there once
freed: on the tiny default's attack SFT (1,808 steps, one thread, AMD EPYC Zen 3) half the page faults and
6-7% less training time, SmolLM2-135M's full fine-tune 5.5%, the same weights bit for bit
(benchmarks/RESULTS.md, "#28 Freed memory kept").
Blocks over 32 MiB are mmapped as before. The cost: up to 1 GiB of freed heap stays with the process
instead of going back to the system, which a training process reuses at its next step.

The command line calls it once per process (:func:`defuse.cli.main`, and each ``bench --jobs`` worker).
It does nothing where the C library is not glibc, or where the user has set glibc's malloc tunables
(``GLIBC_TUNABLES``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``): theirs win.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter numbers (``malloc.h``)."""

MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks up to this size come from the heap: glibc's ceiling for the mmap threshold on 64-bit systems."""
TRIM_THRESHOLD = 1024 * 1024 * 1024
"""The heap's top is given back to the system only when more than this is free there."""

USER_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
"""Environment variables through which a user tunes glibc's malloc; with any of them set, nothing is done."""


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds as the module says; True when they were set."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):
        return False
