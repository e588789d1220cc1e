"""Reductions over axes: sum, mean, max/min, var/std, logsumexp, argmax/argmin."""
from __future__ import annotations

import builtins

from ..tensor import Function, Tensor
from .common import _keepdims_shape, _reduced_count, normalize_axis
from .elementwise import sqrt


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
        g = gy.reshape(_keepdims_shape(self.in_shape, self.axes))
        g = g / gy.dtype.type(builtins.max(n, 1))
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


def argmax(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    return Tensor(x.data.argmax(axis=axis, keepdims=keepdims))


def argmin(x: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    return Tensor(x.data.argmin(axis=axis, keepdims=keepdims))
