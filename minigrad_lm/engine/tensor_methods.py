"""Tensor's operators and named methods, each the op of the same name in ops/.

They are bound onto Tensor here, once both modules exist, so that tensor.py (the autograd core)
never imports the ops built on it: ``x + y`` is ``ops.add(x, y)``, ``x.sum(0)`` is
``ops.sum(x, 0)``.
"""
from __future__ import annotations

from types import FunctionType

import numpy as np

from .. import backend
from . import ops
from .tensor import Tensor


class TensorMethods:
    """Not instantiated: a namespace of Tensor's methods, copied onto Tensor below."""

    @property
    def T(self) -> "Tensor":
        return ops.transpose(self)

    def to(self, device: str | None = None, dtype=None) -> "Tensor":
        """Copy to another device and/or dtype (differentiable); self when nothing changes."""
        out = self
        if device is not None:
            device = backend.normalize_device(device)
            if device != self.device:
                out = ops.ToDevice.apply(out, device)
        if dtype is not None and np.dtype(dtype) != self.dtype:
            out = ops.astype(out, dtype)
        return out

    # arithmetic (Python scalars and broadcasting)
    def __add__(self, other): return ops.add(self, other)
    def __radd__(self, other): return ops.add(other, self)
    def __sub__(self, other): return ops.sub(self, other)
    def __rsub__(self, other): return ops.sub(other, self)
    def __mul__(self, other): return ops.mul(self, other)
    def __rmul__(self, other): return ops.mul(other, self)
    def __truediv__(self, other): return ops.div(self, other)
    def __rtruediv__(self, other): return ops.div(other, self)
    def __pow__(self, other): return ops.pow(self, other)
    def __rpow__(self, other): return ops.pow(other, self)
    def __matmul__(self, other): return ops.matmul(self, other)
    def __rmatmul__(self, other): return ops.matmul(other, self)
    def __neg__(self): return ops.neg(self)
    def __abs__(self): return ops.abs(self)
    def __getitem__(self, index): return ops.getitem(self, index)
    def __eq__(self, other): return ops.equal(self, other)
    def __ne__(self, other): return ops.not_equal(self, other)
    def __lt__(self, other): return ops.less(self, other)
    def __le__(self, other): return ops.less_equal(self, other)
    def __gt__(self, other): return ops.greater(self, other)
    def __ge__(self, other): return ops.greater_equal(self, other)
    def __invert__(self): return ops.logical_not(self)

    # methods mirroring the functions in ops
    def exp(self): return ops.exp(self)
    def log(self): return ops.log(self)
    def sqrt(self): return ops.sqrt(self)
    def tanh(self): return ops.tanh(self)
    def sigmoid(self): return ops.sigmoid(self)
    def relu(self): return ops.relu(self)
    def gelu(self, approximate: str = "none"): return ops.gelu(self, approximate)
    def abs(self): return ops.abs(self)
    def clip(self, min=None, max=None): return ops.clip(self, min, max)
    def maximum(self, other): return ops.maximum(self, other)
    def minimum(self, other): return ops.minimum(self, other)
    def sum(self, axis=None, keepdims=False): return ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return ops.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return ops.max(self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return ops.min(self, axis, keepdims)
    def var(self, axis=None, keepdims=False, ddof=0): return ops.var(self, axis, keepdims, ddof)
    def std(self, axis=None, keepdims=False, ddof=0): return ops.std(self, axis, keepdims, ddof)
    def logsumexp(self, axis=None, keepdims=False): return ops.logsumexp(self, axis, keepdims)
    def softmax(self, axis=-1): return ops.softmax(self, axis)
    def log_softmax(self, axis=-1): return ops.log_softmax(self, axis)
    def argmax(self, axis=None, keepdims=False): return ops.argmax(self, axis, keepdims)
    def argmin(self, axis=None, keepdims=False): return ops.argmin(self, axis, keepdims)
    def reshape(self, *shape): return ops.reshape(self, *shape)
    def view(self, *shape): return ops.reshape(self, *shape)
    def flatten(self): return ops.reshape(self, -1)
    def transpose(self, *axes): return ops.transpose(self, *axes)
    def swapaxes(self, axis1, axis2): return ops.swapaxes(self, axis1, axis2)
    def expand(self, *shape): return ops.broadcast_to(self, *shape)
    def broadcast_to(self, *shape): return ops.broadcast_to(self, *shape)
    def squeeze(self, axis=None): return ops.squeeze(self, axis)
    def unsqueeze(self, axis): return ops.unsqueeze(self, axis)
    def masked_fill(self, mask, value): return ops.masked_fill(self, mask, value)
    def split(self, sections, axis=0): return ops.split(self, sections, axis)
    def matmul(self, other): return ops.matmul(self, other)
    def astype(self, dtype): return ops.astype(self, dtype)


for _name, _method in vars(TensorMethods).items():
    if isinstance(_method, (property, FunctionType)):
        setattr(Tensor, _name, _method)
