"""Encoder-decoder pieces: cross-attention, the decoder layer and the decoding cache.

Cross-attention is the project's fused attention (functional._AttentionCore) fed with queries
from one sequence and packed keys/values from another, so it shares the CPU chunking, the
padding mask and the CUDA softmax with self-attention.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..engine import ops
from ..engine.tensor import Tensor, no_grad
from . import functional as F
from .attention import KVCache, MultiHeadAttention
from .layers import Dropout, FeedForward, LayerNorm, Linear
from .module import Module


class CrossAttention(F._AttentionCore):
    """Multi-head attention of q (B, Tq, C) over packed kv (B, Tk, 2C) -> (B, Tq, C).

    Heads are split and merged inside the Function, as in QKVAttention, so gradients land
    straight in the (B, Tq, C) and (B, Tk, 2C) layouts.
    """

    def forward(self, q, kv, n_heads, mask, dropout_p):
        b, tq, c = q.shape
        tk, d = kv.shape[1], c // n_heads
        qh = q.reshape(b, tq, n_heads, d).transpose(0, 2, 1, 3)  # (B, H, Tq, D)
        k, v = kv.reshape(b, tk, 2, n_heads, d).transpose(2, 0, 3, 1, 4)  # 2 x (B, H, Tk, D)
        out = self.xp.empty((b, tq, n_heads, d), dtype=q.dtype)  # merged heads
        self.dims = (b, tq, tk, n_heads, d)
        self._forward(qh, k, v, False, mask, dropout_p, out.transpose(0, 2, 1, 3))
        return out.reshape(b, tq, c)

    def backward(self, gy):
        b, tq, tk, h, d = self.dims
        gq = self.xp.empty((b, tq, h, d), dtype=gy.dtype)
        gkv = self.xp.empty((b, tk, 2, h, d), dtype=gy.dtype)
        self._backward(gy.reshape(b, tq, h, d).transpose(0, 2, 1, 3), gq.transpose(0, 2, 1, 3),
                       *gkv.transpose(2, 0, 3, 1, 4))
        return gq.reshape(b, tq, h * d), gkv.reshape(b, tk, 2 * h * d), None, None, None


class TiledCrossAttention(F._TiledCore, CrossAttention):
    """CrossAttention (same arguments and results) computed by tiles, never holding (Tq, Tk)."""


def _padding_mask(key_padding_mask, like: Tensor, b: int, tk: int):
    """(B, Tk) boolean (True = real key) -> (B, 1, 1, Tk) array on like's device, or None."""
    if key_padding_mask is None:
        return None
    m = ops._mask_array(key_padding_mask, like, "cross_attention")
    if m.shape != (b, tk):
        raise ValueError(f"key_padding_mask of shape {m.shape} does not match (batch, source "
                         f"length) = {(b, tk)}")
    return m[:, None, None, :]


def cross_attention(q: Tensor, kv: Tensor, n_heads: int, key_padding_mask=None,
                    dropout_p: float = 0.0, tiled: bool | None = None) -> Tensor:
    """Attention of projected queries q (B, Tq, C) over packed projections kv (B, Tk, 2C).

    key_padding_mask: boolean (B, Tk), True for real source tokens and False for padding.
    tiled: as in functional.scaled_dot_product_attention.
    """
    b, tq, c = q.shape
    if kv.ndim != 3 or kv.shape[0] != b or kv.shape[2] != 2 * c or c % n_heads:
        raise ValueError(f"cross_attention: q {q.shape} and kv {kv.shape} do not fit (need kv "
                         f"(B, Tk, 2C) with C = {c} a multiple of n_heads={n_heads})")
    m = _padding_mask(key_padding_mask, q, b, kv.shape[1])
    core = TiledCrossAttention if F._use_tiled(tiled, kv.shape[1], q.dtype) else CrossAttention
    return core.apply(q, kv, n_heads, m, dropout_p)


class Seq2SeqCache(KVCache):
    """What incremental decoding keeps: the decoder's self-attention keys/values (KVCache), the
    cross-attention keys/values of the encoder output per layer (computed once), and the
    source padding mask."""

    def __init__(self, capacity: int, memory_mask):
        super().__init__(capacity)
        self.memory_mask = memory_mask  # (B, 1, 1, Ts) array or None
        self.cross: dict[int, tuple] = {}

    def select(self, rows) -> None:
        """Keep the given batch rows (an index array on the cache's device, in that order):
        beam search reorders its hypotheses."""
        self.layers = {i: (k[rows], v[rows]) for i, (k, v) in self.layers.items()}
        self.cross = {i: (k[rows], v[rows]) for i, (k, v) in self.cross.items()}
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask[rows]


class MultiHeadCrossAttention(Module):
    """Queries from the decoder, keys and values from the encoder output (`memory`), with the
    source padding mask. q and kv projections are separate: [W_k; W_v] is one (2C, C) Linear."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model, self.n_heads = d_model, n_heads
        self.q = Linear(d_model, d_model, bias)
        self.kv = Linear(d_model, 2 * d_model, bias)
        self.out = Linear(d_model, d_model, bias)
        self.attn_dropout = Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, memory_key_padding_mask=None,
                cache: Seq2SeqCache | None = None, layer_index: int = 0) -> Tensor:
        if cache is not None:
            return self._cached(x, memory, cache, layer_index)
        p = self.attn_dropout.p if self.training else 0.0
        y = cross_attention(self.q(x), self.kv(memory), self.n_heads, memory_key_padding_mask, p)
        return self.out(y)

    @no_grad()
    def _cached(self, x: Tensor, memory: Tensor, cache: Seq2SeqCache, layer_index: int):
        """The new queries over the encoder's keys/values, projected on the first call only."""
        xp = backend.array_module(x.data)
        b, t, c = x.shape
        h, d = self.n_heads, c // self.n_heads
        if layer_index not in cache.cross:
            tk = memory.shape[1]
            kv = self.kv(memory).data.reshape(b, tk, 2, h, d).transpose(2, 0, 3, 1, 4)
            cache.cross[layer_index] = (xp.ascontiguousarray(kv[0]), xp.ascontiguousarray(kv[1]))
        k, v = cache.cross[layer_index]
        q = xp.ascontiguousarray(self.q(x).data.reshape(b, t, h, d).transpose(0, 2, 1, 3))
        out, _, _ = F._attention_forward(xp, q, k, v, False, cache.memory_mask, 0.0)
        merged = out.transpose(0, 2, 1, 3).reshape(b, t, c)  # (B, T, C)
        return self.out(Tensor(np.ascontiguousarray(merged) if xp is np else merged))

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}"


class TransformerDecoderLayer(Module):
    """Causal self-attention, cross-attention over the encoder output, feed-forward.

    norm_first=False (the paper, torch's default): x = norm(x + drop(sublayer(x))) three times;
    norm_first=True: x = x + drop(sublayer(norm(x))).
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int | None = None, dropout: float = 0.0,
                 norm_first: bool = False, activation: str = "relu", bias: bool = True,
                 eps: float = 1e-5):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout, bias)
        self.norm1 = LayerNorm(d_model, eps, bias)
        self.cross_attn = MultiHeadCrossAttention(d_model, n_heads, dropout, bias)
        self.norm2 = LayerNorm(d_model, eps, bias)
        self.ff = FeedForward(d_model, d_ff, activation, bias)
        self.norm3 = LayerNorm(d_model, eps, bias)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor, memory_key_padding_mask=None,
                tgt_key_padding_mask=None, cache: Seq2SeqCache | None = None,
                layer_index: int = 0) -> Tensor:
        sublayers = (
            lambda h: self.self_attn(h, True, tgt_key_padding_mask, cache, layer_index),
            lambda h: self.cross_attn(h, memory, memory_key_padding_mask, cache, layer_index),
            self.ff,
        )
        for sublayer, norm in zip(sublayers, (self.norm1, self.norm2, self.norm3)):
            if self.norm_first:
                x = x + self.drop(sublayer(norm(x)))
            else:
                x = norm(x + self.drop(sublayer(x)))
        return x

    def extra_repr(self) -> str:
        return f"norm_first={self.norm_first}"
