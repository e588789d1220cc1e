"""Devices and array modules: "cpu" is NumPy, "cuda" / "cuda:N" is CuPy (imported lazily).

Every operation is written once against `xp`, the array module of its inputs; this file is the
only place that knows which module that is and how to move arrays between devices.
"""
from __future__ import annotations

import os
from types import ModuleType

import numpy as np

_cupy: ModuleType | None = None
_default_device: str | None = None

CUPY_INSTALL_HINT = (
    "install CuPy for your CUDA version, e.g. `pip install -e \".[gpu]\"` (cupy-cuda12x), "
    "on a machine with an NVIDIA GPU"
)


def cupy() -> ModuleType:
    """Import CuPy on first use, with one clear error when it or a GPU is missing."""
    global _cupy
    if _cupy is None:
        try:
            import cupy as cp
            count = cp.cuda.runtime.getDeviceCount()
        except Exception as exc:  # ImportError, or CUDA driver/runtime errors
            raise RuntimeError(f"device 'cuda' is not available ({exc}); {CUPY_INSTALL_HINT}") from None
        if count == 0:
            raise RuntimeError(f"device 'cuda' is not available (no GPU found); {CUPY_INSTALL_HINT}")
        _cupy = cp
    return _cupy


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        cupy()
        return True
    except RuntimeError:
        return False


def normalize_device(device: str | None) -> str:
    """'cpu', 'cuda' or 'cuda:N' -> canonical 'cpu' / 'cuda:N'; None -> the default device."""
    if device is None:
        return get_default_device()
    if not isinstance(device, str):
        device = str(device)
    name = device.strip().lower()
    if name == "cpu":
        return "cpu"
    if name == "cuda":
        return "cuda:0"
    if name.startswith("cuda:") and name[5:].isdigit():
        return name
    raise ValueError(f"unknown device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")


def set_default_device(device: str) -> None:
    """Device used when a tensor is created without one (overrides MINIGRAD_DEVICE)."""
    global _default_device
    _default_device = normalize_device(device)


def get_default_device() -> str:
    if _default_device is not None:
        return _default_device
    env = os.environ.get("MINIGRAD_DEVICE")
    return normalize_device(env) if env else "cpu"


def xp_for(device: str) -> ModuleType:
    """The array module (numpy or cupy) that holds arrays of `device`."""
    return np if device == "cpu" else cupy()


def array_module(array) -> ModuleType:
    """numpy for NumPy arrays, cupy for CuPy arrays (without importing CuPy for NumPy input)."""
    if isinstance(array, np.ndarray):
        return np
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy
    return np


def device_of(array) -> str:
    if isinstance(array, (np.ndarray, np.generic)):
        return "cpu"
    return f"cuda:{array.device.id}"


def to_device(array, device: str):
    """Move an array to `device` (no copy when it is already there)."""
    src = device_of(array)
    if src == device:
        return array
    if device == "cpu":
        return array.get()
    cp = cupy()
    with cp.cuda.Device(int(device.split(":")[1])):
        return cp.asarray(array)


def to_numpy(array) -> np.ndarray:
    return np.asarray(array) if isinstance(array, (np.ndarray, np.generic)) else array.get()


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
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        ok = libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        ok &= libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024)
        ok &= libc.mallopt(m_top_pad, 64 * 1024 * 1024)
        return bool(ok)
    except (OSError, AttributeError):
        return False


def scatter_add(xp: ModuleType, target, index, values) -> None:
    """target[index] += values, correct when `index` repeats (add.at on either backend)."""
    xp.add.at(target, index, values)


def index_add_rows(xp: ModuleType, target, index, rows) -> None:
    """target[index[i]] += rows[i] for a 1-D integer index with repeats (embedding backward).

    On NumPy, sorting the ids and summing each run with add.reduceat is ~4x faster than
    np.add.at; CuPy's scatter_add is a single atomic-add kernel already.
    """
    if xp is not np:
        scatter_add(xp, target, index, rows)
        return
    if index.size == 0:
        return
    order = np.argsort(index, kind="stable")
    ids = index[order]
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    target[ids[starts]] += np.add.reduceat(rows[order], starts, axis=0)


# erf: NumPy has none, and gelu(approximate="none") needs it to float64 accuracy for gradcheck.
# Rational approximations with the published coefficients of Cephes' ndtr.c (S. L. Moshier).
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
          7.00332514112805075473e3, 5.55923013010394962768e4)
_ERF_U = (1.0, 3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
          2.26290000613890934246e4, 4.92673942608635921086e4)
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
           4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
           9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)
_ERFC_Q = (1.0, 1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
           9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
           1.65666309194161350182e3, 5.57535340817727675546e2)
_ERFC_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0,
           6.16021097993053585195e0, 7.40974269950448939160e0, 2.97886665372100240670e0)
_ERFC_S = (1.0, 2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1,
           1.70814450747565897222e1, 9.60896809063285878198e0, 3.36907645100081516050e0)


def _poly(coeffs, x):
    """Horner evaluation, highest power first."""
    acc = np.full_like(x, coeffs[0])
    for c in coeffs[1:]:
        acc *= x
        acc += c
    return acc


def erf(xp: ModuleType, x):
    """Elementwise error function to ~1e-15 relative accuracy, on either backend."""
    if xp is not np:
        import cupyx.scipy.special
        return cupyx.scipy.special.erf(x)
    x64 = x.astype(np.float64, copy=False)
    a = np.abs(x64)
    small = np.minimum(a, 1.0)
    z = small * small
    inner = small * _poly(_ERF_T, z) / _poly(_ERF_U, z)
    big = np.maximum(a, 1.0)
    mid = _poly(_ERFC_P, big) / _poly(_ERFC_Q, big)
    tail = _poly(_ERFC_R, big) / _poly(_ERFC_S, big)
    erfc = np.exp(-big * big) * np.where(big < 8.0, mid, tail)
    out = np.where(a <= 1.0, inner, 1.0 - erfc)
    return np.copysign(out, x64).astype(x.dtype, copy=False)


def peak_memory_bytes(device: str) -> int:
    """Peak memory of this process on `device`: the host's resident-set high-water mark
    (VmHWM) on the CPU, the bytes the CuPy memory pool holds on a GPU (it caches what it
    allocated, so it only grows: its size is the peak of what the arrays needed, rounded up)."""
    if device == "cpu":
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    cp = cupy()
    with cp.cuda.Device(int(device.split(":")[1])):
        return int(cp.get_default_memory_pool().total_bytes())


def memory_text(nbytes: int) -> str:
    """1536 MiB -> '1.50 GiB', 300 MiB -> '300 MiB'."""
    mib = nbytes / 2**20
    return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"
