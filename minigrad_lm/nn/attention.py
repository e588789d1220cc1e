"""Multi-head attention with an optional key/value cache for generation."""
from __future__ import annotations

from typing import ClassVar

import numpy as np

from .. import backend
from ..engine import ops
from ..engine.recompute import checkpoint
from ..engine.tensor import Tensor, is_grad_enabled, no_grad
from . import functional as F
from .layers import Dropout, Linear
from .module import Module


class KVCache:
    """Keys and values of the tokens seen so far, per layer, for incremental decoding.

    Arrays are preallocated to `capacity` positions, so each new token costs one write and
    attention over the cached prefix, not a re-run of the whole sequence.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self.layers: dict[int, tuple] = {}

    def append(self, layer: int, k, v) -> tuple:
        """Store k, v (B, H, T, D) after the cached prefix; return the full prefix views."""
        xp = backend.array_module(k)
        if layer not in self.layers:
            b, h, _, d = k.shape
            self.layers[layer] = (xp.zeros((b, h, self.capacity, d), k.dtype),
                                  xp.zeros((b, h, self.capacity, d), v.dtype))
        kc, vc = self.layers[layer]
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} positions; {end} needed")
        kc[:, :, self.length:end] = k
        vc[:, :, self.length:end] = v
        return kc[:, :, :end], vc[:, :, :end]


class AttentionRecorder:
    """Collects the attention probabilities of every attention layer that runs inside
    ``with AttentionRecorder() as rec:``; ``rec.maps`` holds (layer module, probabilities
    (B, H, Tq, Tk) as a host float64 array) in call order.

    A layer hands its own projections and masks to :meth:`record`, which runs the reference
    attention forward (functional._attention_forward: the softmax the model's kernels compute)
    once more beside the fused one: the speed path is untouched, and a layer pays one check
    of ``AttentionRecorder.active`` when nothing records. Dropout is not applied (the model
    is explained in eval mode); cached incremental decoding records nothing.
    """

    active: ClassVar[list["AttentionRecorder"]] = []

    def __init__(self) -> None:
        self.maps: list[tuple[Module, np.ndarray]] = []

    def __enter__(self) -> "AttentionRecorder":
        AttentionRecorder.active.append(self)
        return self

    def __exit__(self, *exc) -> bool:
        AttentionRecorder.active.remove(self)
        return False

    @classmethod
    def record(cls, module: Module, q, k, v, causal: bool, mask, alibi: bool = False) -> None:
        """Probabilities of queries q over keys k, (B, H, T, D) arrays; mask (B, 1, 1, Tk)
        boolean (True = real key) or None; alibi: the heads' distance biases too."""
        xp = backend.array_module(q)
        _, probs, _ = F._attention_forward(xp, q, k, v, causal, mask, 0.0, alibi=alibi)
        host = backend.to_numpy(probs).astype(np.float64)
        for recorder in cls.active:
            recorder.maps.append((module, host))


class MultiHeadAttention(Module):
    """softmax(Q K^T / sqrt(d_k)) V over n_heads heads, with packed Q/K/V and output projections.

    forward(x, causal, key_padding_mask): x (B, T, d_model); key_padding_mask (B, T) boolean,
    True for real tokens. Dropout applies to the attention weights while training.
    `tiled` picks the attention core: True by tiles (no (T, T) matrix), False the blocked one,
    None (default) by length and dtype (functional.TILED_MIN_KEYS). `alibi` biases each head's
    scores by the distance between query and key (nn/alibi.py).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 alibi: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.d_model, self.n_heads = d_model, n_heads
        self.qkv = Linear(d_model, 3 * d_model, bias)  # rows: [W_q; W_k; W_v]
        self.out = Linear(d_model, d_model, bias)
        self.attn_dropout = Dropout(dropout)
        self.recompute = False  # recompute the attention core in backward (keeps qkv only)
        self.tiled: bool | None = None
        self.alibi = alibi

    def forward(self, x: Tensor, causal: bool = False, key_padding_mask=None,
                cache: KVCache | None = None, layer_index: int = 0) -> Tensor:
        if cache is not None:
            return self._cached(x, cache, layer_index)
        p = self.attn_dropout.p if self.training else 0.0
        qkv = self.qkv(x)
        if AttentionRecorder.active:
            self._record(qkv, causal, key_padding_mask)
        if self.recompute and is_grad_enabled():
            y = checkpoint(F.multi_head_attention, qkv, self.n_heads, causal, key_padding_mask,
                           p, self.tiled, self.alibi)
        else:
            y = F.multi_head_attention(qkv, self.n_heads, causal, key_padding_mask, p,
                                       self.tiled, self.alibi)
        return self.out(y)

    def _record(self, qkv: Tensor, causal: bool, key_padding_mask) -> None:
        b, t, c3 = qkv.shape
        d = c3 // 3 // self.n_heads
        q, k, v = qkv.data.reshape(b, t, 3, self.n_heads, d).transpose(2, 0, 3, 1, 4)
        mask = None if key_padding_mask is None else ops._mask_array(
            key_padding_mask, qkv, "attention")[:, None, None, :]  # (B, 1, 1, T)
        AttentionRecorder.record(self, q, k, v, causal, mask, self.alibi)

    @no_grad()
    def _cached(self, x: Tensor, cache: KVCache, layer_index: int) -> Tensor:
        """Causal attention of the new tokens x over the cached prefix plus themselves."""
        xp = backend.array_module(x.data)
        b, t, c = x.shape
        h, d = self.n_heads, c // self.n_heads
        qkv = self.qkv(x).data.reshape(b, t, 3, h, d).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, D)
        q, k, v = (xp.ascontiguousarray(qkv[i]) for i in range(3))
        keys, values = cache.append(layer_index, k, v)
        out, _, _ = F._attention_forward(xp, q, keys, values, True, None, 0.0,
                                         offset=cache.length, alibi=self.alibi)
        merged = out.transpose(0, 2, 1, 3).reshape(b, t, c)
        return self.out(Tensor(np.ascontiguousarray(merged) if xp is np else merged))

    def extra_repr(self) -> str:
        alibi = ", alibi=True" if self.alibi else ""
        return f"d_model={self.d_model}, n_heads={self.n_heads}{alibi}"
