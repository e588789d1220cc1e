"""Process-wide tuning for training on the CPU, switched on by the command-line tools.

``import minigrad_lm`` changes nothing outside the package. The CLIs call
:func:`tune_for_training` first; a library user who trains in their own script calls it once
(``mg.backend.tune_for_training()``) to get the same speed. It does two things:

- glibc keeps large freed blocks for reuse instead of returning them to the OS
  (:func:`tune_host_allocator`), and
- the CPU kernels split their work over all cores, with OpenBLAS's idle threads set to
  spin briefly (threads.py, :func:`~minigrad_lm.backend.threads.use_all_cores`).
"""
from __future__ import annotations

import ctypes
import os

from . import threads


def tune_for_training() -> None:
    """Both tunings below; safe to call more than once."""
    tune_host_allocator()
    threads.use_all_cores()


def tune_host_allocator() -> bool:
    """Let glibc reuse freed memory for large temporaries instead of returning it to the OS.

    A training step allocates and frees many arrays of megabytes. By default glibc serves them
    with fresh mmap()s, so every step pays page faults and zeroing for each temporary: that
    cost 30-40% of a GPT step on the CPU here. Raising the mmap threshold to its maximum (32 MiB)
    and the trim threshold keeps that memory in the heap for reuse. Process-wide; skipped
    when MINIGRAD_MALLOC_TUNING=0 or when the C library is not glibc.
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
