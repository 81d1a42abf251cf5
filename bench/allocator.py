"""glibc's allocator settings for training: keep large activations in the heap instead of mapping them.

glibc serves an allocation above its mmap threshold (128 KiB, raised dynamically, never past 32 MiB)
with its own ``mmap`` and unmaps it on ``free``; it also trims the heap's top whenever more than
``M_TRIM_THRESHOLD`` is free. A training step allocates and frees the same multi-megabyte activations
every step (a 60-way ProtoNet episode's conv maps are ~70 MiB, above any threshold), so with the
defaults each step maps fresh pages, takes a minor page fault on each and has the kernel zero them.
Turning ``mmap`` off for the heap (``M_MMAP_MAX = 0``) and keeping up to 1 GiB free at its top lets
the next step reuse those blocks without a fault.

Measured on the 2-core EPYC, 100 steps of the ProtoNet Omniglot quick profile (60-way episodes), one
process per setting: glibc's defaults 30.1 s of system time and 15.3 million minor faults; glibc's
``MALLOC_MMAP_THRESHOLD_=32 MiB`` and 1 GiB trim threshold, 10.4 s and 4.9 million; these settings,
1.0 s and 0.29 million, for 17% more peak RSS (1.24 against 1.06 GB).

The cost is memory the process keeps after a peak, which a training process wants anyway. Nothing
changes on other C libraries or operating systems; ``METABENCH_MALLOC=default`` keeps glibc's own
settings (to measure the difference, or on a machine short of memory).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: mallopt parameter numbers from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

#: glibc's own default for M_MMAP_MAX (how many blocks it may map at once) and its trim threshold
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024
#: glibc's starting mmap threshold; it raises it by itself (up to 32 MiB) until any ``mallopt`` call fixes it
DEFAULT_MMAP_THRESHOLD = 128 * 1024
#: free memory at the heap's top kept for the next step instead of being returned to the kernel
TRIM_THRESHOLD = 1024 * 1024 * 1024

_applied: bool | None = None


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def set_allocator(mmap_max: int, trim_threshold: int) -> bool:
    """Set glibc's ``M_MMAP_MAX`` and ``M_TRIM_THRESHOLD``; False where the C library is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_MAX, ctypes.c_int(mmap_max))
    ok &= libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(trim_threshold))
    return bool(ok)


def glibc_defaults() -> bool:
    """Put back glibc's starting settings (``M_MMAP_MAX`` 65536, mmap and trim thresholds 128 KiB), as
    :mod:`metabench.step_speed` does to time the "before" of :func:`tune_for_training` in the same process.

    Not exactly a fresh process's behaviour: glibc raises its mmap threshold by itself (to the size of
    each mapped block freed, up to 32 MiB, and the trim threshold to twice that) only until a program
    calls ``mallopt`` for any of these settings, which fixes them. These are the settings a fresh process
    starts with and keeps for blocks above 32 MiB; a fresh process maps blocks between 128 KiB and the
    largest such block freed so far less often than this does. False where the C library is not glibc.
    """
    libc = _libc()
    if libc is None:
        return False
    ok = set_allocator(DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD)
    return bool(ok and libc.mallopt(M_MMAP_THRESHOLD, ctypes.c_int(DEFAULT_MMAP_THRESHOLD)))


def tune_for_training() -> bool:
    """Apply the training settings once per process, unless ``METABENCH_MALLOC=default``; True if applied."""
    global _applied
    if _applied is None:
        wanted = os.environ.get("METABENCH_MALLOC", "tuned") != "default"
        _applied = wanted and set_allocator(0, TRIM_THRESHOLD)
    return _applied
