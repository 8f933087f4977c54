"""Let a CPU job reuse the memory it frees instead of handing it back to the kernel.

glibc's ``malloc`` serves a large allocation (above its *mmap threshold*, at most 32 MiB) with a
fresh ``mmap`` and unmaps it when it is freed, and gives the top of its heap back to the kernel
once more than the *trim threshold* of it is free. A training step or a batch of maps allocates
and frees the same tens to hundreds of megabytes every step, so each step faults those pages in
again, zeroed by the kernel. On the offline benchmark's small models, one thread, tuned against
untuned (``bench/bench_allocator.py``, 2 cores, 2026-12-07): a training step 1.13× faster, an
engine pass over 128 canvases 1.26–1.34× (up to 52,000 page faults per pass untuned, a few
hundred tuned); a small ResNet sensitivity job 21.1 s → 18.5 s (2.0 M → 0.33 M page faults).

:func:`reuse_freed_memory` turns both off: no allocation gets its own mapping and the heap is
never trimmed, so the blocks a step frees serve the next one. A job's memory then stays near its
peak until it exits (a sensitivity job's peak RSS 1.6 → 1.8 GB, from the heap's fragmentation).
It changes no value a job computes, only where its memory comes from. It is meant for a
process that runs one job and exits, as the workflow's jobs do (``Job.logged`` calls it).

It does nothing (and says why) where ``malloc`` is not glibc's, and where the environment
already tunes it: ``MALLOC_MMAP_MAX_``, ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``
or ``GLIBC_TUNABLES`` set, or another allocator (jemalloc, tcmalloc) preloaded by
``LD_PRELOAD``.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["TUNED_BY_ENVIRONMENT", "reuse_freed_memory"]

# mallopt's parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_NEVER_TRIM = 2**31 - 1  # bytes of free heap kept before trimming (mallopt takes an int)

TUNED_BY_ENVIRONMENT = (
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "GLIBC_TUNABLES",
)
"""The environment variables through which a user tunes glibc's malloc: any of them set, it is
left as the user set it."""


def reuse_freed_memory() -> str:
    """Tune glibc's ``malloc`` for a job that reuses its memory every step (module docstring).

    Returns:
        What was done, for the job's log: ``"tuned"``, or why it was left alone.
    """
    if not _glibc():
        return "left alone: malloc is not glibc's"
    tuned = [name for name in TUNED_BY_ENVIRONMENT if os.environ.get(name)]
    if tuned:
        return f"left alone: the environment sets {', '.join(tuned)}"
    if os.environ.get("LD_PRELOAD"):
        return "left alone: LD_PRELOAD may bring another allocator"
    libc = ctypes.CDLL(None)  # the symbols the process already has: its C library's mallopt
    if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM)):
        return "left alone: mallopt refused the settings"
    return "tuned"


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or no such name
        return False
