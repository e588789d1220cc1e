"""Transformer layer (pre-norm GPT-2 form or post-norm classic form) and positional encodings."""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..engine.tensor import Tensor
from . import functional as F
from .attention import KVCache, MultiHeadAttention
from .layers import Dropout, Embedding, FeedForward, LayerNorm
from .module import Module


class TransformerLayer(Module):
    """Self-attention and feed-forward sublayers, each with a residual connection.

    norm_first=True (GPT-2):   x = x + drop(attn(norm1(x)));  x = x + drop(ff(norm2(x)))
    norm_first=False (classic): x = norm1(x + drop(attn(x)));  x = norm2(x + drop(ff(x)))
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None, dropout: float = 0.0,
                 norm_first: bool = True, activation: str = "gelu", bias: bool = True,
                 eps: float = 1e-5, alibi: bool = False):
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps, bias)
        self.attn = MultiHeadAttention(d_model, n_heads, dropout, bias, alibi)
        self.norm2 = LayerNorm(d_model, eps, bias)
        self.ff = FeedForward(d_model, d_ff, activation, bias)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, causal: bool = False, key_padding_mask=None,
                cache: KVCache | None = None, layer_index: int = 0) -> Tensor:
        def attend(h):
            return self.drop(self.attn(h, causal, key_padding_mask, cache, layer_index))

        if self.norm_first:
            x = x + attend(self.norm1(x))
            return x + self.drop(self.ff(self.norm2(x)))
        x = self.norm1(x + attend(x))
        return self.norm2(x + self.drop(self.ff(x)))

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}"


def sinusoidal_table(length: int, dim: int) -> np.ndarray:
    """PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d))."""
    pos = np.arange(length, dtype=np.float64)[:, None]
    freq = np.exp(-math.log(10000.0) * np.arange(0, dim, 2, dtype=np.float64) / dim)
    table = np.zeros((length, dim), dtype=np.float64)
    table[:, 0::2] = np.sin(pos * freq)
    table[:, 1::2] = np.cos(pos * freq[: dim // 2])
    return table.astype(np.float32)


class SinusoidalPositionalEncoding(Module):
    """Fixed sinusoidal position vectors (not trained), looked up for positions 0..T-1."""

    def __init__(self, context_length: int, d_model: int):
        super().__init__()
        self.table = Tensor(sinusoidal_table(context_length, d_model))  # a buffer, not a Parameter

    def forward(self, positions) -> Tensor:
        return self.table[positions]


class LearnedPositionalEncoding(Module):
    """One trained vector per position (GPT-2's wpe)."""

    def __init__(self, context_length: int, d_model: int):
        super().__init__()
        self.embedding = Embedding(context_length, d_model)

    def forward(self, positions) -> Tensor:
        # positions come from positions() below and are in range by construction: skip the
        # range check (it would synchronise with a GPU)
        return F.EmbeddingFunction.apply(self.embedding.weight, positions)


def positions(start: int, length: int, device: str):
    """Integer positions start..start+length-1 on `device`."""
    return backend.xp_for(device).arange(start, start + length)
