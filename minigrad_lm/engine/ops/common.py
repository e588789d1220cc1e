"""Argument handling shared by the ops: scalars as tensors, broadcasting, axes and shapes."""
from __future__ import annotations

import math

import numpy as np

from ... import backend
from ..tensor import Tensor


def _as_tensor(value, like: Tensor) -> Tensor:
    """Wrap a Python scalar or array as a constant on `like`'s device, keeping float32 float32."""
    if isinstance(value, Tensor):
        return value
    xp = backend.array_module(like.data)
    if isinstance(value, (bool, int, float)):
        promote = isinstance(value, float) and like.dtype.kind not in "fc"
        return Tensor(xp.asarray(value, dtype=np.float32 if promote else like.dtype))
    arr = value
    if xp is not np and isinstance(arr, np.ndarray):
        arr = backend.to_device(arr, like.device)
    return Tensor(xp.asarray(arr))


def _pair(a, b) -> tuple[Tensor, Tensor]:
    if not isinstance(a, Tensor):
        if not isinstance(b, Tensor):
            raise TypeError("expected at least one Tensor")
        a = _as_tensor(a, b)
    elif not isinstance(b, Tensor):
        b = _as_tensor(b, a)
    return a, b


def _binary(fn_cls, name: str, a, b) -> Tensor:
    a, b = _pair(a, b)
    try:
        return fn_cls.apply(a, b)
    except ValueError:
        if a.ndim and b.ndim and not _broadcastable(a.shape, b.shape):
            raise ValueError(f"{name}: shapes {a.shape} and {b.shape} cannot be broadcast "
                             "together") from None
        raise


def _broadcastable(s1: tuple, s2: tuple) -> bool:
    try:
        np.broadcast_shapes(s1, s2)
        return True
    except ValueError:
        return False


def normalize_axis(axis, ndim: int, name: str) -> tuple | None:
    """int / tuple / None -> sorted tuple of non-negative axes (None means all)."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ValueError(f"{name}: axis {ax} is out of range for a tensor of {ndim} "
                             "dimensions")
        out.append(int(ax) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: repeated axis in {axis}")
    return tuple(sorted(out))


def _keepdims_shape(shape: tuple, axes: tuple | None) -> tuple:
    if axes is None:
        return (1,) * len(shape)
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _reduced_count(shape: tuple, axes: tuple | None) -> int:
    if axes is None:
        return math.prod(shape)
    return math.prod(shape[i] for i in axes)


def _single_axis(axis: int, ndim: int, name: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: axis {axis} is out of range for a tensor of {ndim} dimensions")
    return axis % ndim


def _shape_arg(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)
