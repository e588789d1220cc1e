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
    with cp.cuda.Device(device_index(device)):
        return cp.asarray(array)


def to_numpy(array) -> np.ndarray:
    return np.asarray(array) if isinstance(array, (np.ndarray, np.generic)) else array.get()


def check_device(name: str) -> str:
    """Canonical device name; an unknown name or a missing GPU is a ValueError, not a crash
    halfway through loading."""
    device = normalize_device(name)
    if device != "cpu":
        try:
            cupy()
        except RuntimeError as e:
            raise ValueError(str(e)) from None
    return device


def device_index(device: str) -> int:
    """The GPU number of a canonical "cuda:N" name."""
    return device_index(device)


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
    with cp.cuda.Device(device_index(device)):
        return int(cp.get_default_memory_pool().total_bytes())


def memory_text(nbytes: int) -> str:
    """1536 MiB -> '1.50 GiB', 300 MiB -> '300 MiB'."""
    mib = nbytes / 2**20
    return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"
