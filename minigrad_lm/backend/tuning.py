"""The one process-wide setting of the engine: glibc keeps freed memory for reuse.

A training step on the CPU allocates and frees hundreds of arrays of megabytes: config M of
benchmarks/train_step.py allocates about 900 MiB in blocks of 128 KiB or more per step, about
half of them NumPy temporaries inside the kernels' own expressions. glibc returns freed memory
at the top of its heap to the OS once more than a few MiB are free there (its trim threshold
follows the largest block freed so far), so every step faulted its working set back in: 12,600
page faults per step on config S and 51,000 on config M (getrusage), with 9-18 ms and 110 ms of
system time a step (benchmarks/results/cpu_tuning.json). An engine-side pool could hold only
the arrays the engine allocates itself, not the temporaries of each NumPy expression, so the
heap would still shrink and grow every step; raising glibc's mmap and trim thresholds removes
the faults (3 per step).

Importing the package changes nothing. The engine calls :func:`engine_started` at its first
heavy use (the first backward() of a CPU graph, the first kernel that splits its work over
threads), and the command-line tools call :func:`tune_for_training` first thing; both switch
the setting on once. MINIGRAD_MALLOC_TUNING=0 leaves the allocator as it is.
"""
from __future__ import annotations

import ctypes
import os

_started = False


def engine_started() -> None:
    """The engine's first heavy use: tune the allocator once (cheap on every later call)."""
    global _started
    if not _started:
        _started = True
        tune_host_allocator()


def tune_for_training() -> None:
    """Switch on now what the engine's first heavy use would; safe to call more than once."""
    engine_started()


def tune_host_allocator() -> bool:
    """Let glibc keep freed memory for reuse by the next large temporary (see the module
    docstring): the mmap threshold at its maximum (32 MiB), the trim threshold at 1 GiB.
    Process-wide; skipped when MINIGRAD_MALLOC_TUNING=0 or when the C library is not glibc.
    """
    if os.environ.get("MINIGRAD_MALLOC_TUNING", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        ok = libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        ok &= libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024)
        ok &= libc.mallopt(m_top_pad, 64 * 1024 * 1024)
        return bool(ok)
    except (OSError, AttributeError):
        return False
