"""Elementwise arithmetic (binary, broadcasting; unary) and selection (where, masked_fill)."""
from __future__ import annotations

import numpy as np

from ... import backend
from ..tensor import Function, Tensor
from .common import _binary, _broadcastable, _pair

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


def neg(x: Tensor) -> Tensor:
    return Neg.apply(x)


def exp(x: Tensor) -> Tensor:
    return Exp.apply(x)


def log(x: Tensor) -> Tensor:
    return Log.apply(x)


def sqrt(x: Tensor) -> Tensor:
    return Sqrt.apply(x)


def abs(x: Tensor) -> Tensor:
    return Abs.apply(x)


def clip(x: Tensor, min=None, max=None) -> Tensor:
    if min is None and max is None:
        raise ValueError("clip: give at least one of min and max")
    return Clip.apply(x, min, max)


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
