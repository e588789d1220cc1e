"""Activations: tanh, sigmoid, relu, gelu (exact and tanh) and softmax / log_softmax."""
from __future__ import annotations

import math

import numpy as np

from ... import backend
from ...backend import kernels
from ...backend.kernels.constants import GELU_C, SQRT_2_OVER_PI
from .. import amp
from ..tensor import Function, Tensor
from .common import _single_axis
from .shape import astype


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


_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


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
        self.kernels = kernels.module_with("gelu_tanh_forward", x)
        if self.kernels:
            y, self.saved = self.kernels.gelu_tanh_forward(x)
            return y
        u = SQRT_2_OVER_PI * (x + GELU_C * x * x * x)
        self.saved = s = 1 / (1 + xp.exp(xp.minimum(-2 * u, 80.0)))  # y is ~0 beyond the clip
        return x * s

    def backward(self, gy):
        x, xp = self.x, self.xp
        if self.approximate == "none":
            return gy * (self.cdf + x * (_INV_SQRT_2PI * xp.exp(-0.5 * x * x))), None
        if self.kernels:
            return self.kernels.gelu_tanh_backward(gy, x, self.saved), None
        s = self.saved
        du_dx = SQRT_2_OVER_PI * (1 + 3 * GELU_C * x * x)
        return gy * (s + x * s * (1 - s) * 2 * du_dx), None


def tanh(x: Tensor) -> Tensor:
    return Tanh.apply(x)


def sigmoid(x: Tensor) -> Tensor:
    return Sigmoid.apply(x)


def relu(x: Tensor) -> Tensor:
    return Relu.apply(x)


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return Gelu.apply(x, approximate)


class Softmax(Function):
    """y = exp(x - max) / sum;  dx = y (gy - sum(gy y)).  Kernels over the rows of the last axis:
    softmax_forward/backward."""

    def forward(self, x, axis):
        xp = self.xp
        self.axis = axis
        self.kernels = None
        if axis == x.ndim - 1:
            rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
            self.kernels = kernels.module_with("softmax_forward", rows)
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


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """exp(x) / sum(exp(x)) along axis; in float32 under amp.autocast."""
    return Softmax.apply(_full_precision(x), _single_axis(axis, x.ndim, "softmax"))


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """x - logsumexp(x) along axis; in float32 under amp.autocast."""
    return LogSoftmax.apply(_full_precision(x), _single_axis(axis, x.ndim, "log_softmax"))


def _full_precision(x: Tensor) -> Tensor:
    return astype(x, np.float32) if amp.full_precision(x) else x
