"""Tiled ("flash") attention on arrays: softmax(q k^T / sqrt(d) + masks) v without the (Tq, Tk)
matrix, written once against `xp`.

Forward: each block of queries walks the key blocks, keeping a running row max m, a running sum
l of exp(s - m) and a running weighted sum of the values, rescaled by exp(m_old - m_new) when the
max grows (online softmax). Only the log-sum-exp per query (m + log l) is saved. Backward
recomputes each block's probabilities from it, exp(s - lse), and uses
sum_j p_ij dP_ij = sum_d dO_id O_id, so no (Tq, Tk) array ever exists: memory is O(T) per
(batch, head) besides one (query tile, key tile) block of scores.

Dropout draws its keep mask from a counter-based generator (engine.rng.counter_uniform) keyed by
(seed, flat index of the score), so backward regenerates exactly the forward's mask block by
block and the result does not depend on the tile sizes or on how the batch is split.

Float16 inputs are computed in float32 (scores, running statistics, accumulators) and the output
is rounded once; other dtypes are computed in their own precision.
"""
from __future__ import annotations

import math

import numpy as np

from ..engine import rng
from .alibi import alibi_bias

# Queries and keys per tile: the (QUERY_TILE, KEY_TILE) scores of every (batch, head) of a chunk
# are the only quadratic-in-tile temporaries (benchmarks/memory.py --sections attention).
QUERY_TILE = 128
KEY_TILE = 256


def _tiles(n: int, size: int) -> list[slice]:
    return [slice(lo, min(lo + size, n)) for lo in range(0, n, size)]


def _compute_dtype(dtype):
    return np.promote_types(dtype, np.float32)


class Tiling:
    """The blocks of one attention problem: which key tiles each query tile visits, and the
    masks, biases and dropout of a (query tile, key tile) block.

    mask: boolean, broadcastable to batch + (Tq, Tk), True where a query may attend to a key.
    first: the flat index of this chunk's first (batch..., ) item in the whole batch (dropout
    counters); offset: the position of the first query among the keys (causal, ALiBi);
    alibi: add each head's distance bias (nn/alibi.py; the heads are batch's last axis).
    """

    def __init__(self, xp, batch: tuple, tq: int, tk: int, causal: bool, mask, dropout_p: float,
                 seed: int, first: int = 0, offset: int = 0, alibi: bool = False):
        self.xp, self.batch, self.tq, self.tk = xp, batch, tq, tk
        self.causal, self.offset, self.alibi = causal, offset, alibi
        self.query_tile, self.key_tile = QUERY_TILE, KEY_TILE  # backward uses forward's tiles
        self.mask = None if mask is None else xp.broadcast_to(mask, batch + (tq, tk))
        self.dropout_p, self.seed = dropout_p, seed
        if dropout_p:
            items = math.prod(batch)
            self.items = (first + xp.arange(items, dtype=xp.uint64)).reshape(batch + (1, 1))

    def key_tiles(self, rows: slice) -> list[slice]:
        """Key tiles a query tile sees: causal attention stops at the tile's last query."""
        end = min(self.tk, rows.stop + self.offset) if self.causal else self.tk
        return _tiles(max(end, 0), self.key_tile)

    def query_tiles(self) -> list[slice]:
        return _tiles(self.tq, self.query_tile)

    def mask_scores_(self, s, rows: slice, keys: slice) -> None:
        """Add the block's ALiBi biases, if any, and set the scores of hidden (query, key)
        pairs to -inf, in place."""
        xp = self.xp
        if self.alibi:
            s += alibi_bias(xp, self.batch[-1], rows, keys, self.offset, s.dtype)
        if self.causal and keys.stop - 1 > rows.start + self.offset:  # the block crosses the diagonal
            future = (xp.arange(keys.start, keys.stop)[None, :]
                      > xp.arange(rows.start, rows.stop)[:, None] + self.offset)
            xp.copyto(s, s.dtype.type(-np.inf), where=future)
        if self.mask is not None:
            xp.copyto(s, s.dtype.type(-np.inf), where=~self.mask[..., rows, keys])

    def dropout_scale(self, rows: slice, keys: slice, dtype):
        """keep / (1 - p) for the block, keep drawn from (seed, flat score index)."""
        xp = self.xp
        i = xp.arange(rows.start, rows.stop, dtype=xp.uint64)[:, None]
        j = xp.arange(keys.start, keys.stop, dtype=xp.uint64)[None, :]
        counters = (self.items * xp.uint64(self.tq) + i) * xp.uint64(self.tk) + j
        keep = rng.counter_uniform(xp, self.seed, counters) >= self.dropout_p
        return keep * dtype.type(1.0 / (1.0 - self.dropout_p))


def dropout_scales(xp, batch: tuple, tq: int, tk: int, dropout_p: float, seed: int):
    """The whole (batch..., Tq, Tk) dropout scale that tiled attention applies (for tests and
    references: this is the one place the full matrix is built)."""
    tiling = Tiling(xp, batch, tq, tk, False, None, dropout_p, seed)
    return tiling.dropout_scale(slice(0, tq), slice(0, tk), _compute_dtype(np.float32))


def forward(xp, q, k, v, tiling: Tiling, out):
    """Writes attention of q (..., Tq, D) over k, v (..., Tk, D) (batch axes broadcast to
    tiling.batch) into `out`; returns the log-sum-exp (batch..., Tq) in the compute dtype (+inf
    for queries that see no key)."""
    ct = _compute_dtype(q.dtype)
    scale = ct.type(1.0 / math.sqrt(q.shape[-1]))
    lse = xp.empty(tiling.batch + (tiling.tq,), dtype=ct)
    for rows in tiling.query_tiles():
        qs = q[..., rows, :].astype(ct) * scale  # scaling q is cheaper than scaling s
        n = rows.stop - rows.start
        m = xp.full(tiling.batch + (n, 1), -np.inf, dtype=ct)
        total = xp.zeros_like(m)
        acc = xp.zeros(tiling.batch + (n, v.shape[-1]), dtype=ct)
        for keys in tiling.key_tiles(rows):
            s = xp.matmul(qs, k[..., keys, :].astype(ct, copy=False).swapaxes(-1, -2))
            tiling.mask_scores_(s, rows, keys)
            m_new = xp.maximum(m, s.max(axis=-1, keepdims=True))
            m_safe = xp.where(xp.isfinite(m_new), m_new, 0)  # rows with no key yet: exp(-inf)=0
            rescale = xp.exp(m - m_safe)
            s -= m_safe
            xp.exp(s, out=s)
            total *= rescale
            total += xp.matmul(s, xp.ones(s.shape[-1], dtype=ct))[..., None]  # row sums: a GEMV
            if tiling.dropout_p:
                s *= tiling.dropout_scale(rows, keys, ct)
            acc *= rescale
            acc += xp.matmul(s, v[..., keys, :].astype(ct, copy=False))
            m = m_new
        empty = total == 0
        acc /= xp.where(empty, 1, total)
        out[..., rows, :] = acc
        lse[..., rows] = xp.where(empty, np.inf, m + xp.log(xp.where(empty, 1, total)))[..., 0]
    return lse


def backward(xp, go, q, k, v, out, lse, tiling: Tiling, gq, gk, gv) -> None:
    """Writes the gradients of forward() for the output gradient `go` into gq, gk, gv (of the
    broadcast batch shape tiling.batch)."""
    ct = lse.dtype
    scale = ct.type(1.0 / math.sqrt(q.shape[-1]))
    # sum_j p_ij dP_ij (dropout included), from the (T, D) output instead of the (T, T) p
    delta = (go.astype(ct) * out.astype(ct)).sum(axis=-1)[..., None]
    g_k = xp.zeros(tiling.batch + k.shape[-2:], dtype=ct)
    g_v = xp.zeros(tiling.batch + v.shape[-2:], dtype=ct)
    for rows in tiling.query_tiles():
        qs = q[..., rows, :].astype(ct) * scale
        gos = go[..., rows, :].astype(ct, copy=False)
        g_q = xp.zeros(tiling.batch + qs.shape[-2:], dtype=ct)
        for keys in tiling.key_tiles(rows):
            kb, vb = k[..., keys, :].astype(ct, copy=False), v[..., keys, :].astype(ct, copy=False)
            p = xp.matmul(qs, kb.swapaxes(-1, -2))
            tiling.mask_scores_(p, rows, keys)
            p -= lse[..., rows, None]
            xp.exp(p, out=p)  # the block's probabilities, masked entries 0
            dp = xp.matmul(gos, vb.swapaxes(-1, -2))
            if tiling.dropout_p:
                dropped = tiling.dropout_scale(rows, keys, ct)
                dp *= dropped
                g_v[..., keys, :] += xp.matmul((p * dropped).swapaxes(-1, -2), gos)
            else:
                g_v[..., keys, :] += xp.matmul(p.swapaxes(-1, -2), gos)
            dp -= delta[..., rows, :]
            dp *= p  # d scores
            g_q += xp.matmul(dp, kb)
            g_k[..., keys, :] += xp.matmul(dp.swapaxes(-1, -2), qs)
        g_q *= scale
        gq[..., rows, :] = g_q
    gk[...] = g_k
    gv[...] = g_v
