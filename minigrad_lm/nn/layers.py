"""Basic layers: Linear, Embedding, LayerNorm, Dropout, activations, FeedForward."""
from __future__ import annotations

import math

import numpy as np

from ..engine import rng
from ..engine.tensor import Tensor
from . import functional as F
from .module import Module, Parameter


def _uniform(shape: tuple, bound: float) -> np.ndarray:
    return rng.host().uniform(-bound, bound, size=shape).astype(np.float32)


class Linear(Module):
    """y = x W^T + b, W of shape (out_features, in_features); PyTorch's default init."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features) if in_features else 0.0
        self.weight = Parameter(_uniform((out_features, in_features), bound))
        self.bias = Parameter(_uniform((out_features,), bound)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Embedding(Module):
    """Lookup table of `num_embeddings` vectors of size `embedding_dim` (init N(0, 1))."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(rng.host().standard_normal((num_embeddings, embedding_dim))
                                .astype(np.float32))

    def forward(self, idx) -> Tensor:
        return F.embedding(idx, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    """Normalize over the last `dim` features, then scale (init 1) and shift (init 0)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, dtype=np.float32))
        self.bias = Parameter(np.zeros(dim, dtype=np.float32)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    """Zero each element with probability p while training, scaling the rest by 1 / (1 - p)."""

    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.relu()


class GELU(Module):
    """GELU, exact ("none") or with GPT-2's tanh approximation ("tanh")."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


ACTIVATIONS = {"gelu": lambda: GELU("none"), "gelu_tanh": lambda: GELU("tanh"), "relu": ReLU}


def activation(name: str) -> Module:
    """'gelu' (exact), 'gelu_tanh' (GPT-2) or 'relu'."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class FeedForward(Module):
    """Linear(d, d_ff) -> activation -> Linear(d_ff, d); d_ff = 4 d by default."""

    def __init__(self, d_model: int, d_ff: int | None = None, activation_name: str = "gelu",
                 bias: bool = True):
        super().__init__()
        self.fc = Linear(d_model, d_ff or 4 * d_model, bias)
        self.act = activation(activation_name)
        self.proj = Linear(d_ff or 4 * d_model, d_model, bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.act(self.fc(x)))
