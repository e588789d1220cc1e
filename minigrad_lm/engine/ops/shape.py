"""Shapes (reshape, transpose, broadcast, dtype and device casts), indexing and joining."""
from __future__ import annotations

import builtins
import math
from typing import Sequence

import numpy as np

from ... import backend
from ..tensor import Function, Tensor
from .common import _broadcastable, _shape_arg, _single_axis, normalize_axis

# ---------------------------------------------------------------------------------------------
# shapes


class Reshape(Function):
    """y = x viewed with a new shape (a view when x is contiguous)"""

    def forward(self, x, shape):
        self.in_shape = x.shape
        return x.reshape(shape)

    def backward(self, gy):
        return gy.reshape(self.in_shape), None


class Transpose(Function):
    """y = x with axes permuted;  dx = gy with the inverse permutation"""

    def forward(self, x, axes):
        self.axes = axes
        return x.transpose(axes)

    def backward(self, gy):
        return gy.transpose(np.argsort(self.axes)), None


class BroadcastTo(Function):
    """y = x broadcast to shape; the engine sums the gradient back to x's shape"""

    def forward(self, x, shape):
        return self.xp.broadcast_to(x, shape)

    def backward(self, gy):
        return gy, None


class AsType(Function):
    """y = x cast to another dtype;  dx = gy cast back"""

    def forward(self, x, dtype):
        self.in_dtype = x.dtype
        return x.astype(dtype)

    def backward(self, gy):
        return gy.astype(self.in_dtype), None


class ToDevice(Function):
    """y = x copied to another device;  dx = gy copied back"""

    def forward(self, x, device):
        self.src = backend.device_of(x)
        return backend.to_device(x, device)

    def backward(self, gy):
        return backend.to_device(gy, self.src), None


def reshape(x: Tensor, *shape) -> Tensor:
    shape = _shape_arg(shape)
    known = math.prod(n for n in shape if n != -1)
    inferred = shape.count(-1) == 1 and known and x.size % known == 0
    if not (math.prod(shape) == x.size and -1 not in shape) and not inferred:
        raise ValueError(f"reshape: cannot reshape tensor of shape {x.shape} ({x.size} elements) "
                         f"into shape {shape}")
    return Reshape.apply(x, shape)


def transpose(x: Tensor, *axes) -> Tensor:
    """Permute axes (all reversed when none are given), like numpy.transpose."""
    axes = _shape_arg(axes) if axes else tuple(reversed(range(x.ndim)))
    if sorted(a % builtins.max(x.ndim, 1) for a in axes) != list(range(x.ndim)):
        raise ValueError(f"transpose: axes {axes} are not a permutation of a tensor of "
                         f"{x.ndim} dimensions")
    return Transpose.apply(x, tuple(a % x.ndim for a in axes))


def swapaxes(x: Tensor, axis1: int, axis2: int) -> Tensor:
    perm = list(range(x.ndim))
    a, b = _single_axis(axis1, x.ndim, "swapaxes"), _single_axis(axis2, x.ndim, "swapaxes")
    perm[a], perm[b] = perm[b], perm[a]
    return Transpose.apply(x, tuple(perm))


def broadcast_to(x: Tensor, *shape) -> Tensor:
    """Broadcast to `shape`; -1 keeps a dimension's size (torch's expand)."""
    shape = _shape_arg(shape)
    lead = len(shape) - x.ndim
    shape = tuple(x.shape[i - lead] if n == -1 and i >= lead else n for i, n in enumerate(shape))
    if lead < 0 or not _broadcastable(x.shape, shape) or np.broadcast_shapes(x.shape,
                                                                             shape) != shape:
        raise ValueError(f"broadcast_to: cannot broadcast shape {x.shape} to {shape}")
    return BroadcastTo.apply(x, shape)


expand = broadcast_to


def squeeze(x: Tensor, axis=None) -> Tensor:
    if axis is None:
        return Reshape.apply(x, tuple(n for n in x.shape if n != 1))
    axes = normalize_axis(axis, x.ndim, "squeeze")
    for a in axes:
        if x.shape[a] != 1:
            raise ValueError(f"squeeze: axis {a} of shape {x.shape} has size {x.shape[a]}, not 1")
    return Reshape.apply(x, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def unsqueeze(x: Tensor, axis: int) -> Tensor:
    axis = _single_axis(axis, x.ndim + 1, "unsqueeze")
    return Reshape.apply(x, x.shape[:axis] + (1,) + x.shape[axis:])


def astype(x: Tensor, dtype) -> Tensor:
    return AsType.apply(x, np.dtype(dtype))


# ---------------------------------------------------------------------------------------------
# indexing, joining


class GetItem(Function):
    """y = x[index];  dx = zeros with gy scattered (added, for repeated integer indices) back"""

    def forward(self, x, index, advanced):
        self.in_shape, self.index, self.advanced = x.shape, index, advanced
        return x[index]

    def backward(self, gy):
        gx = self.xp.zeros(self.in_shape, dtype=gy.dtype)
        if self.advanced:
            backend.scatter_add(self.xp, gx, self.index, gy)
        else:
            gx[self.index] = gy
        return gx, None, None


def _normalize_index(x: Tensor, index) -> tuple[tuple, bool]:
    """Unwrap Tensors, move arrays to x's device, check integer bounds (CuPy would not)."""
    xp = backend.array_module(x.data)
    items = index if isinstance(index, tuple) else (index,)
    consuming = builtins.sum(
        0 if it is None or it is Ellipsis else
        (np.ndim(it.data if isinstance(it, Tensor) else it) or 1)
        if getattr(it.data if isinstance(it, Tensor) else it, "dtype", None) == np.bool_
        else 1 for it in items)
    out, dim, advanced = [], 0, False
    for it in items:
        if isinstance(it, Tensor):
            it = it.data
        if isinstance(it, list):
            it = np.asarray(it)
        if it is None:
            out.append(None)
        elif it is Ellipsis:
            out.append(it)
            dim += x.ndim - consuming
        elif isinstance(it, slice):
            out.append(it)
            dim += 1
        elif isinstance(it, (int, np.integer)):
            if dim >= x.ndim or not -x.shape[dim] <= it < x.shape[dim]:
                raise IndexError(f"index {it} is out of bounds for axis {dim} of tensor shape "
                                 f"{x.shape}")
            out.append(int(it))
            dim += 1
        elif hasattr(it, "dtype"):
            arr = xp.asarray(backend.to_device(it, x.device) if xp is not np else
                             backend.to_numpy(it))
            advanced = True
            if arr.dtype == np.bool_:
                span = x.shape[dim:dim + arr.ndim]
                if span != arr.shape:
                    raise IndexError(f"boolean index of shape {arr.shape} does not match "
                                     f"tensor shape {x.shape} at axis {dim}")
                dim += arr.ndim
            elif arr.dtype.kind in "iu":
                if dim >= x.ndim:
                    raise IndexError(f"too many indices for tensor of shape {x.shape}")
                n = x.shape[dim]
                if arr.size:
                    lo, hi = int(arr.min()), int(arr.max())
                    if lo < -n or hi >= n:
                        bad = hi if hi >= n else lo
                        raise IndexError(f"index {bad} is out of bounds for axis {dim} with "
                                         f"size {n} (tensor shape {x.shape})")
                dim += 1
            else:
                raise IndexError(f"index arrays must be integer or boolean, got {arr.dtype}")
            out.append(arr)
        else:
            raise IndexError(f"unsupported index {it!r}")
    if dim > x.ndim:
        raise IndexError(f"too many indices for tensor of shape {x.shape}")
    return tuple(out), advanced


def getitem(x: Tensor, index) -> Tensor:
    """Basic slicing, integer-array gathers (repeats allowed, negatives too) and boolean masks."""
    idx, advanced = _normalize_index(x, index)
    return GetItem.apply(x, idx, advanced)


class Concatenate(Function):
    """y = concat(xs, axis);  each dx is its slice of gy"""

    def forward(self, *xs, axis):
        self.axis = axis
        self.bounds = np.cumsum([0] + [a.shape[axis] for a in xs])
        return self.xp.concatenate(xs, axis=axis)

    def backward(self, gy):
        lead = (slice(None),) * self.axis
        b = self.bounds
        return tuple(gy[lead + (slice(b[i], b[i + 1]),)] for i in range(len(b) - 1))


class Stack(Function):
    """y = stack(xs, axis);  each dx is gy taken at its position along axis"""

    def forward(self, *xs, axis):
        self.axis, self.n = axis, len(xs)
        return self.xp.stack(xs, axis=axis)

    def backward(self, gy):
        lead = (slice(None),) * self.axis
        return tuple(gy[lead + (i,)] for i in range(self.n))


def _check_join(tensors: Sequence[Tensor], name: str) -> None:
    if not tensors:
        raise ValueError(f"{name}: needs at least one tensor")
    if not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{name}: all inputs must be Tensors")


def concatenate(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    _check_join(tensors, "concatenate")
    ax = _single_axis(axis, tensors[0].ndim, "concatenate")
    for t in tensors:
        if t.ndim != tensors[0].ndim or any(
                a != b for i, (a, b) in enumerate(zip(t.shape, tensors[0].shape)) if i != ax):
            raise ValueError(f"concatenate: shapes {[t.shape for t in tensors]} differ outside "
                             f"axis {ax}")
    return Concatenate.apply(*tensors, axis=ax)


def stack(tensors: Sequence[Tensor], axis: int = 0) -> Tensor:
    _check_join(tensors, "stack")
    if len({t.shape for t in tensors}) != 1:
        raise ValueError(f"stack: all shapes must be equal, got {[t.shape for t in tensors]}")
    return Stack.apply(*tensors, axis=_single_axis(axis, tensors[0].ndim + 1, "stack"))


def split(x: Tensor, sections, axis: int = 0) -> list[Tensor]:
    """Split into `sections` equal parts (int) or at the given indices (list), like numpy."""
    ax = _single_axis(axis, x.ndim, "split")
    n = x.shape[ax]
    if isinstance(sections, int):
        if sections <= 0 or n % sections:
            raise ValueError(f"split: axis {ax} of size {n} does not divide into {sections} "
                             "equal parts")
        step = n // sections
        cuts = list(range(step, n, step))
    else:
        cuts = list(sections)
    bounds = [0] + cuts + [n]
    lead = (slice(None),) * ax
    return [getitem(x, lead + (slice(bounds[i], bounds[i + 1]),)) for i in range(len(bounds) - 1)]
