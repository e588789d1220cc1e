"""Factories: tensor, zeros, ones, full, arange, randn, rand (float32 unless told otherwise)."""
from __future__ import annotations

import numpy as np

from .. import backend
from . import rng
from .tensor import Tensor


def _place(array: np.ndarray, device: str | None, requires_grad: bool) -> Tensor:
    device = backend.normalize_device(device)
    data = array if device == "cpu" else backend.to_device(array, device)
    return Tensor(data, requires_grad=requires_grad)


def tensor(data, dtype=None, device: str | None = None, requires_grad: bool = False) -> Tensor:
    """A new tensor from a Python number, nested list, NumPy/CuPy array or Tensor.

    Python floats become float32 (as in PyTorch); arrays keep their dtype unless `dtype` is given.
    """
    if isinstance(data, Tensor):
        data = data.data
    if not isinstance(data, np.ndarray) and backend.array_module(data) is not np:
        arr = data.astype(dtype) if dtype is not None else data.copy()
        device = device or backend.device_of(arr)
        return Tensor(backend.to_device(arr, backend.normalize_device(device)), requires_grad)
    if isinstance(data, np.ndarray):
        arr = np.array(data, dtype=dtype)
    else:
        arr = np.array(data, dtype=dtype)
        if dtype is None and arr.dtype == np.float64:
            arr = arr.astype(np.float32)
    return _place(arr, device, requires_grad)


def full(shape, fill_value, dtype=np.float32, device=None, requires_grad=False) -> Tensor:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    device = backend.normalize_device(device)
    xp = backend.xp_for(device)
    if device == "cpu":
        return Tensor(np.full(shape, fill_value, dtype=dtype), requires_grad)
    with backend.cupy().cuda.Device(backend.device_index(device)):
        return Tensor(xp.full(shape, fill_value, dtype=dtype), requires_grad)


def zeros(*shape, dtype=np.float32, device=None, requires_grad=False) -> Tensor:
    return full(_shape(shape), 0, dtype, device, requires_grad)


def ones(*shape, dtype=np.float32, device=None, requires_grad=False) -> Tensor:
    return full(_shape(shape), 1, dtype, device, requires_grad)


def zeros_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return full(t.shape, 0, dtype or t.dtype, t.device, requires_grad)


def ones_like(t: Tensor, dtype=None, requires_grad=False) -> Tensor:
    return full(t.shape, 1, dtype or t.dtype, t.device, requires_grad)


def arange(start, stop=None, step=1, dtype=None, device=None) -> Tensor:
    arr = np.arange(start, stop, step) if stop is not None else np.arange(start)
    if dtype is not None:
        arr = arr.astype(dtype)
    elif arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    return _place(arr, device, False)


def randn(*shape, dtype=np.float32, device=None, requires_grad=False) -> Tensor:
    """Standard normal samples drawn from the seeded host generator (same on every device)."""
    arr = rng.host().standard_normal(_shape(shape), dtype=np.float64).astype(dtype)
    return _place(arr, device, requires_grad)


def rand(*shape, dtype=np.float32, device=None, requires_grad=False) -> Tensor:
    """Uniform samples in [0, 1) drawn from the seeded host generator."""
    arr = rng.host().random(_shape(shape), dtype=np.float64).astype(dtype)
    return _place(arr, device, requires_grad)


def _shape(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)
