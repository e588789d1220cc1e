"""Matrix products."""
from __future__ import annotations

from ..tensor import Function, Tensor
from .common import _broadcastable, _pair
from .shape import squeeze, unsqueeze


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
