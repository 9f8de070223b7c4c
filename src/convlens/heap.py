"""How glibc's malloc serves the large, short-lived blocks of a training step.

A CPU training step allocates and frees the same activations and gradients every step, most of
them larger than glibc's mmap threshold (at most 32 MiB). glibc maps each one fresh from the OS and
unmaps it when freed, so every step touches its memory as new pages: the kernel zeroes them and
takes a page fault for every 4 KiB. For the full-width CIFAR-10 network at batch 2000 in bf16 that
is about 830,000 faults and a sixth of the step's CPU time (``benchmarks/bench_speed_heap.py``).

:func:`reuse_freed_blocks` serves every block from the heap and keeps freed memory for the next
step while it is active (``mallopt``: no mmap, no trimming below 2 GiB), then hands the retained
memory back (``malloc_trim``) and leaves glibc where its own adaptive threshold settles for such
work: blocks of 32 MiB and more mapped and returned, smaller ones from the heap (4 MiB where an
image cache is read, :func:`return_large_blocks`). glibc stops adapting once any of these is set,
so the threshold is set explicitly rather than left at its starting 128 KiB. Peak memory stays
what the step needs; what changes is that it is not returned to the OS between steps.

:func:`return_large_blocks` is the opposite setting, for reading an on-disk image cache outside
training: blocks of 4 MiB or more go back to the OS when freed, so the resident set does not grow
with the number of images read.

Nothing is changed where the C library is not glibc, where the process already tunes malloc
(``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_`` or ``glibc.malloc``
tunables in ``GLIBC_TUNABLES``), or with ``CONVLENS_REUSE_HEAP=0`` in the environment.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import threading
from collections.abc import Iterator

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
GLIBC_MMAP_MAX = 65536  # glibc's default, restored on the way out
SETTLED_THRESHOLD = 32 << 20  # glibc's largest adaptive mmap threshold (64-bit)
CACHE_THRESHOLD = 4 << 20  # return_large_blocks's
KEEP_BELOW = 2**31 - 1  # mallopt takes an int: the largest trim threshold it can set

_lock = threading.Lock()
_depth = 0
_threshold = SETTLED_THRESHOLD  # the mmap threshold outside reuse_freed_blocks


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has neither this nor mallopt)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


def tuned_elsewhere() -> str | None:
    """Why the heap is left as it is (an environment setting), or None."""
    if os.environ.get("CONVLENS_REUSE_HEAP", "").strip() in ("0", "false", "no", "off"):
        return "CONVLENS_REUSE_HEAP=0"
    for key in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
        if key in os.environ:
            return key
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def reusing() -> bool:
    """Whether :func:`reuse_freed_blocks` is in effect now."""
    return _depth > 0


@contextlib.contextmanager
def reuse_freed_blocks() -> Iterator[bool]:
    """Keep freed blocks for reuse while the block runs; yields whether it does so.

    Nested and concurrent uses share one setting: it is applied by the first to enter and undone
    by the last to leave.
    """
    global _depth
    libc = _glibc()
    if libc is None or tuned_elsewhere() is not None:
        yield False
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, KEEP_BELOW)
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX)
                if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
                    libc.mallopt(M_MMAP_THRESHOLD, _threshold)
                libc.mallopt(M_TRIM_THRESHOLD, 2 * _threshold)  # glibc's own rule: twice the threshold
                libc.malloc_trim(0)


def return_large_blocks() -> None:
    """Make glibc hand every block of 4 MiB or more back to the OS when it is freed.

    By default glibc raises its mmap threshold to the largest block freed so far (up to 32 MiB);
    after the first batch, batch buffers then come from the heap, which fragments, and the
    resident set grew with the length of an epoch: peak RSS 415, 438 and 506 MB for one pass over
    4,000, 16,000 and 40,000 images of 128 px here, against 366, 370 and 375 MB with the
    threshold fixed at 4 MiB (benchmarks/bench_data_cache.py, step eval; ``MALLOC_MMAP_THRESHOLD_``
    set in the environment is left alone). Called when a split is read from the on-disk cache;
    a no-op where there is no glibc. Inside :func:`reuse_freed_blocks` no block is mapped at all;
    this threshold applies again after it.
    """
    global _threshold
    libc = _glibc()
    if libc is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    with _lock:
        _threshold = CACHE_THRESHOLD
        libc.mallopt(M_MMAP_THRESHOLD, CACHE_THRESHOLD)
