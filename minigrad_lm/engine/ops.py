"""Differentiable primitives, each written once against `xp` (NumPy or CuPy).

A Function's docstring states its math; backward returns one gradient per positional argument and
never writes into the upstream gradient `gy` (it may be a read-only broadcast view).
"""
from __future__ import annotations

import builtins
import math
from typing import Sequence

import numpy as np

from .. import backend
from ..backend import kernels
from .tensor import Function, Tensor

# ---------------------------------------------------------------------------------------------
# helpers


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


# ---------------------------------------------------------------------------------------------
# elementwise binary


class Add(Function):
    """y = a + b"""

    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        return gy, gy


class Sub(Function):
    """y = a - b"""

    def forward(self, a, b):
        return a - b

    def backward(self, gy):
        return gy, (-gy if self.needs_grad[1] else None)


class Mul(Function):
    """y = a * b"""

    def forward(self, a, b):
        self.a = a if self.needs_grad[1] else None
        self.b = b if self.needs_grad[0] else None
        return a * b

    def backward(self, gy):
        return (gy * self.b if self.needs_grad[0] else None,
                gy * self.a if self.needs_grad[1] else None)


class Div(Function):
    """y = a / b;  da = gy / b,  db = -gy * y / b"""

    def forward(self, a, b):
        y = a / b
        self.b, self.y = b, (y if self.needs_grad[1] else None)
        return y

    def backward(self, gy):
        ga = gy / self.b
        return (ga if self.needs_grad[0] else None,
                -ga * self.y if self.needs_grad[1] else None)


class PowScalar(Function):
    """y = x ** p for a constant p;  dx = p * x ** (p - 1), 0 for p = 0 (as torch)"""

    def forward(self, x, p):
        self.x, self.p = x, p
        return x ** p

    def backward(self, gy):
        x, p = self.x, self.p
        if p == 0:  # 0 * 0 ** -1 would be NaN at x = 0
            return self.xp.zeros_like(gy), None
        return gy * (p * x ** (p - 1)), None


class Pow(Function):
    """y = a ** b;  da = b * a ** (b - 1),  db = y * log(a).

    Where torch defines the limits, so do we: da = 0 where b = 0, db = 0 where a = 0 and b >= 0
    (0 * log 0 would be NaN)."""

    def forward(self, a, b):
        y = a ** b
        self.a, self.b, self.y = a, b, y
        return y

    def backward(self, gy):
        a, b, y, xp = self.a, self.b, self.y, self.xp
        zero = gy.dtype.type(0)
        ga = gb = None
        with np.errstate(divide="ignore", invalid="ignore"):  # the masked-out limits warn
            if self.needs_grad[0]:
                ga = xp.where(b == 0, zero, gy * b * a ** (b - 1))
            if self.needs_grad[1]:
                gb = xp.where((a == 0) & (b >= 0), zero, gy * y * xp.log(a))
        return ga, gb


class Maximum(Function):
    """y = max(a, b); ties send half the gradient to each side"""

    def forward(self, a, b):
        self.wa = (a > b) + 0.5 * (a == b)
        return self.xp.maximum(a, b)

    def backward(self, gy):
        wa = self.wa.astype(gy.dtype, copy=False)
        return gy * wa, gy * (1 - wa)


class Minimum(Function):
    """y = min(a, b); ties send half the gradient to each side"""

    def forward(self, a, b):
        self.wa = (a < b) + 0.5 * (a == b)
        return self.xp.minimum(a, b)

    def backward(self, gy):
        wa = self.wa.astype(gy.dtype, copy=False)
        return gy * wa, gy * (1 - wa)


def add(a, b) -> Tensor:
    return _binary(Add, "add", a, b)


def sub(a, b) -> Tensor:
    return _binary(Sub, "sub", a, b)


def mul(a, b) -> Tensor:
    return _binary(Mul, "mul", a, b)


def div(a, b) -> Tensor:
    return _binary(Div, "div", a, b)


def pow(a, b) -> Tensor:
    if isinstance(a, Tensor) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return PowScalar.apply(a, b)
    return _binary(Pow, "pow", a, b)


def maximum(a, b) -> Tensor:
    return _binary(Maximum, "maximum", a, b)


def minimum(a, b) -> Tensor:
    return _binary(Minimum, "minimum", a, b)


# ---------------------------------------------------------------------------------------------
# elementwise unary


class Neg(Function):
    """y = -x"""

    def forward(self, x):
        return -x

    def backward(self, gy):
        return (-gy,)


class Exp(Function):
    """y = exp(x);  dx = y"""

    def forward(self, x):
        self.y = self.xp.exp(x)
        return self.y

    def backward(self, gy):
        return (gy * self.y,)


class Log(Function):
    """y = log(x);  dx = 1 / x"""

    def forward(self, x):
        self.x = x
        return self.xp.log(x)

    def backward(self, gy):
        return (gy / self.x,)


class Sqrt(Function):
    """y = sqrt(x);  dx = 1 / (2 y)"""

    def forward(self, x):
        self.y = self.xp.sqrt(x)
        return self.y

    def backward(self, gy):
        return (gy / (2 * self.y),)


class Tanh(Function):
    """y = tanh(x);  dx = 1 - y^2"""

    def forward(self, x):
        self.y = self.xp.tanh(x)
        return self.y

    def backward(self, gy):
        return (gy * (1 - self.y * self.y),)


class Sigmoid(Function):
    """y = 1 / (1 + exp(-x)), computed without overflow;  dx = y (1 - y)"""

    def forward(self, x):
        xp = self.xp
        e = xp.exp(-xp.abs(x))
        self.y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return self.y

    def backward(self, gy):
        return (gy * self.y * (1 - self.y),)


class Relu(Function):
    """y = max(x, 0);  dx = [x > 0]"""

    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, gy):
        return (gy * self.mask,)


class Abs(Function):
    """y = |x|;  dx = sign(x)"""

    def forward(self, x):
        self.sign = self.xp.sign(x)
        return self.xp.abs(x)

    def backward(self, gy):
        return (gy * self.sign,)


class Clip(Function):
    """y = clip(x, lo, hi);  dx = [lo <= x <= hi]"""

    def forward(self, x, lo, hi):
        y = self.xp.clip(x, lo, hi)
        self.mask = y == x
        return y

    def backward(self, gy):
        return gy * self.mask, None, None


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_GELU_C = 0.044715


class Gelu(Function):
    """Exact: y = x Phi(x);  dx = Phi(x) + x phi(x).
    tanh: y = x/2 (1 + tanh(u)) = x s, s = sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3) (one
    exp instead of tanh);  dx = s + x s (1 - s) 2 du/dx.  Kernels: gelu_tanh_forward/backward."""

    def forward(self, x, approximate):
        xp = self.xp
        self.x, self.approximate = x, approximate
        if approximate == "none":
            self.cdf = 0.5 * (1 + backend.erf(xp, x * _INV_SQRT_2))
            return x * self.cdf
        self.kernels = kernels.for_op("gelu_tanh_forward", x)
        if self.kernels:
            y, self.saved = self.kernels.gelu_tanh_forward(x)
            return y
        u = _SQRT_2_OVER_PI * (x + _GELU_C * x * x * x)
        self.saved = s = 1 / (1 + xp.exp(xp.minimum(-2 * u, 80.0)))  # y is ~0 beyond the clip
        return x * s

    def backward(self, gy):
        x, xp = self.x, self.xp
        if self.approximate == "none":
            return gy * (self.cdf + x * (_INV_SQRT_2PI * xp.exp(-0.5 * x * x))), None
        if self.kernels:
            return self.kernels.gelu_tanh_backward(gy, x, self.saved), None
        s = self.saved
        du_dx = _SQRT_2_OVER_PI * (1 + 3 * _GELU_C * x * x)
        return gy * (s + x * s * (1 - s) * 2 * du_dx), None


def neg(x: Tensor) -> Tensor:
    return Neg.apply(x)


def exp(x: Tensor) -> Tensor:
    return Exp.apply(x)


def log(x: Tensor) -> Tensor:
    return Log.apply(x)


def sqrt(x: Tensor) -> Tensor:
    return Sqrt.apply(x)


def tanh(x: Tensor) -> Tensor:
    return Tanh.apply(x)


def sigmoid(x: Tensor) -> Tensor:
    return Sigmoid.apply(x)


def relu(x: Tensor) -> Tensor:
    return Relu.apply(x)


def abs(x: Tensor) -> Tensor:
    return Abs.apply(x)


def clip(x: Tensor, min=None, max=None) -> Tensor:
    if min is None and max is None:
        raise ValueError("clip: give at least one of min and max")
    return Clip.apply(x, min, max)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return Gelu.apply(x, approximate)


# ---------------------------------------------------------------------------------------------
# selection


class Where(Function):
    """y = cond ? a : b"""

    def forward(self, cond, a, b):
        self.cond = cond
        return self.xp.where(cond, a, b)

    def backward(self, gy):
        zero = gy.dtype.type(0)
        xp = self.xp
        return (None,
                xp.where(self.cond, gy, zero) if self.needs_grad[1] else None,
                xp.where(self.cond, zero, gy) if self.needs_grad[2] else None)


class MaskedFill(Function):
    """y = mask ? value : x"""

    def forward(self, x, mask, value):
        self.mask = mask
        return self.xp.where(mask, x.dtype.type(value), x)

    def backward(self, gy):
        return self.xp.where(self.mask, gy.dtype.type(0), gy), None, None


def _mask_array(mask, like: Tensor, name: str):
    """A boolean mask (Tensor, array or nested lists) as an array on like's device."""
    arr = mask.data if isinstance(mask, Tensor) else mask
    arr = backend.to_device(arr if hasattr(arr, "dtype") else np.asarray(arr), like.device)
    arr = backend.array_module(like.data).asarray(arr)
    if arr.dtype != np.bool_:
        raise TypeError(f"{name}: the mask must be boolean, got dtype {arr.dtype}")
    return arr


def where(cond, a, b) -> Tensor:
    """Elementwise cond ? a : b, broadcasting all three."""
    like = a if isinstance(a, Tensor) else b
    if not isinstance(like, Tensor):
        raise TypeError("where: a or b must be a Tensor")
    a, b = _pair(a, b)
    c = _mask_array(cond, like, "where")
    try:
        return Where.apply(c, a, b)
    except ValueError:
        raise ValueError(f"where: shapes {c.shape}, {a.shape} and {b.shape} cannot be broadcast "
                         "together") from None


def masked_fill(x: Tensor, mask, value: float) -> Tensor:
    """Copy of x with `value` where the (broadcastable) boolean mask is True."""
    m = _mask_array(mask, x, "masked_fill")
    if not _broadcastable(m.shape, x.shape) or np.broadcast_shapes(m.shape, x.shape) != x.shape:
        raise ValueError(f"masked_fill: mask of shape {m.shape} does not broadcast to tensor "
                         f"shape {x.shape}")
    return MaskedFill.apply(x, m, value)


# ---------------------------------------------------------------------------------------------
# reductions


class Sum(Function):
    """y = sum(x, axes);  dx = broadcast(gy)"""

    def forward(self, x, axes, keepdims):
        self.in_shape, self.axes = x.shape, axes
        return x.sum(axis=axes, keepdims=keepdims)

    def backward(self, gy):
        g = gy.reshape(_keepdims_shape(self.in_shape, self.axes))
        return self.xp.broadcast_to(g, self.in_shape), None, None


class Mean(Function):
    """y = mean(x, axes);  dx = broadcast(gy) / n"""

    def forward(self, x, axes, keepdims):
        self.in_shape, self.axes = x.shape, axes
        return x.mean(axis=axes, keepdims=keepdims)

    def backward(self, gy):
        n = _reduced_count(self.in_shape, self.axes)
        g = gy.reshape(_keepdims_shape(self.in_shape, self.axes)) / gy.dtype.type(builtins.max(n, 1))
        return self.xp.broadcast_to(g, self.in_shape), None, None


class MaxMin(Function):
    """y = max (or min) over axes; ties share the gradient equally"""

    def forward(self, x, axes, keepdims, largest):
        if x.size == 0:
            raise ValueError(f"{'max' if largest else 'min'}: reduction of an empty tensor of "
                             f"shape {x.shape}")
        y = x.max(axis=axes, keepdims=True) if largest else x.min(axis=axes, keepdims=True)
        mask = x == y
        self.weights = mask / mask.sum(axis=axes, keepdims=True).astype(x.dtype)
        self.keep_shape = y.shape
        return y if keepdims else y.reshape(x.mean(axis=axes).shape)

    def backward(self, gy):
        return gy.reshape(self.keep_shape) * self.weights, None, None, None


class LogSumExp(Function):
    """y = log(sum(exp(x))), shifted by the max for stability;  dx = softmax(x)"""

    def forward(self, x, axes, keepdims):
        xp = self.xp
        m = x.max(axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        e = xp.exp(x - m)
        s = e.sum(axis=axes, keepdims=True)
        y = xp.log(s) + m
        self.p = e / s
        self.keep_shape = y.shape
        return y if keepdims else y.reshape(x.sum(axis=axes).shape)

    def backward(self, gy):
        return gy.reshape(self.keep_shape) * self.p, None, None


class Softmax(Function):
    """y = exp(x - max) / sum;  dx = y (gy - sum(gy y)).  Kernels over the rows of the last axis:
    softmax_forward/backward."""

    def forward(self, x, axis):
        xp = self.xp
        self.axis = axis
        self.kernels = None
        if axis == x.ndim - 1:
            rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
            self.kernels = kernels.for_op("softmax_forward", rows)
            if self.kernels:
                self.y = self.kernels.softmax_forward(rows).reshape(x.shape)
                return self.y
        y = xp.exp(x - x.max(axis=axis, keepdims=True))
        y /= y.sum(axis=axis, keepdims=True)
        self.y = y
        return y

    def backward(self, gy):
        y = self.y
        if self.kernels:
            rows = (math.prod(y.shape[:-1]), y.shape[-1])
            return self.kernels.softmax_backward(gy.reshape(rows), y.reshape(rows)).reshape(
                y.shape), None
        return y * (gy - (gy * y).sum(axis=self.axis, keepdims=True)), None


class LogSoftmax(Function):
    """y = x - logsumexp(x);  dx = gy - softmax(x) * sum(gy)"""

    def forward(self, x, axis):
        xp = self.xp
        shifted = x - x.max(axis=axis, keepdims=True)
        y = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        self.y, self.axis = y, axis
        return y

    def backward(self, gy):
        return gy - self.xp.exp(self.y) * gy.sum(axis=self.axis, keepdims=True), None


def sum(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    return Sum.apply(x, normalize_axis(axis, x.ndim, "sum"), keepdims)


def mean(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    return Mean.apply(x, normalize_axis(axis, x.ndim, "mean"), keepdims)


def max(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    return MaxMin.apply(x, normalize_axis(axis, x.ndim, "max"), keepdims, True)


def min(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    return MaxMin.apply(x, normalize_axis(axis, x.ndim, "min"), keepdims, False)


def var(x: Tensor, axis=None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Variance with NumPy's ddof convention (0: population variance)."""
    axes = normalize_axis(axis, x.ndim, "var")
    n = _reduced_count(x.shape, axes)
    if n - ddof <= 0:
        raise ValueError(f"var: ddof={ddof} leaves no degrees of freedom for {n} elements")
    centered = x - mean(x, axes, keepdims=True)
    return sum(centered * centered, axes, keepdims) * (1.0 / (n - ddof))


def std(x: Tensor, axis=None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    return sqrt(var(x, axis, keepdims, ddof))


def logsumexp(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    return LogSumExp.apply(x, normalize_axis(axis, x.ndim, "logsumexp"), keepdims)


def _single_axis(axis: int, ndim: int, name: str) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: axis {axis} is out of range for a tensor of {ndim} dimensions")
    return axis % ndim


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    return Softmax.apply(x, _single_axis(axis, x.ndim, "softmax"))


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    return LogSoftmax.apply(x, _single_axis(axis, x.ndim, "log_softmax"))


def argmax(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    return Tensor(x.data.argmax(axis=axis, keepdims=keepdims))


def argmin(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    return Tensor(x.data.argmin(axis=axis, keepdims=keepdims))


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


def _shape_arg(shape) -> tuple:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


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


# ---------------------------------------------------------------------------------------------
# matmul


class MatMul(Function):
    """y = a @ b (batched, batch dims broadcast);  da = gy @ b^T,  db = a^T @ gy"""

    def forward(self, a, b):
        self.a = a if self.needs_grad[1] else None
        self.b = b if self.needs_grad[0] else None
        return self.xp.matmul(a, b)

    def backward(self, gy):
        xp = self.xp
        ga = xp.matmul(gy, self.b.swapaxes(-1, -2)) if self.needs_grad[0] else None
        gb = xp.matmul(self.a.swapaxes(-1, -2), gy) if self.needs_grad[1] else None
        return ga, gb


def matmul(a, b) -> Tensor:
    """Matrix product with NumPy semantics: 1-D operands are promoted and the axis removed."""
    a, b = _pair(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have at least 1 dimension, got shapes "
                         f"{a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[b.ndim - 2 if b.ndim > 1 else 0]:
        k2 = b.shape[b.ndim - 2 if b.ndim > 1 else 0]
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align "
                         f"({a.shape[-1]} != {k2})")
    if not _broadcastable(a.shape[:-2], b.shape[:-2]):
        raise ValueError(f"matmul: batch dimensions of shapes {a.shape} and {b.shape} cannot "
                         "be broadcast together")
    if a.ndim > 1 and b.ndim > 1:
        return MatMul.apply(a, b)
    y = MatMul.apply(unsqueeze(a, 0) if a.ndim == 1 else a, unsqueeze(b, 1) if b.ndim == 1 else b)
    if b.ndim == 1:
        y = squeeze(y, -1)
    if a.ndim == 1:
        y = squeeze(y, -1 if b.ndim == 1 else -2)
    return y


# ---------------------------------------------------------------------------------------------
# comparisons and logic (no gradient)


def _compare(ufunc_name: str, a, b) -> Tensor:
    a, b = _pair(a, b)
    xp = backend.array_module(a.data)
    if a.device != b.device:
        raise RuntimeError(f"{ufunc_name}: tensors on different devices ({a.device} and "
                           f"{b.device})")
    return Tensor(getattr(xp, ufunc_name)(a.data, b.data))


def equal(a, b) -> Tensor:
    return _compare("equal", a, b)


def not_equal(a, b) -> Tensor:
    return _compare("not_equal", a, b)


def less(a, b) -> Tensor:
    return _compare("less", a, b)


def less_equal(a, b) -> Tensor:
    return _compare("less_equal", a, b)


def greater(a, b) -> Tensor:
    return _compare("greater", a, b)


def greater_equal(a, b) -> Tensor:
    return _compare("greater_equal", a, b)


def logical_not(x: Tensor) -> Tensor:
    return Tensor(backend.array_module(x.data).logical_not(x.data))
