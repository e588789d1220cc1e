"""Neural-network functions with torch.nn.functional's signatures.

The hot paths (linear, layer_norm, cross_entropy, attention, embedding, dropout) are fused
Functions with hand-written backward: the math in a few `xp` lines, and the CPU or CUDA kernel of
the same name (backend/kernels/) where one applies; softmax, log_softmax and gelu are the fused
ops of the core. The op registry (tests/engine/op_registry.py) compares each with the composite
of core operations that it replaces (tests/reference.py), gradchecks it, and checks its kernels.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..backend import kernels, threads
from ..engine import amp, ops, rng
from ..engine.ops import gelu, log_softmax, softmax  # noqa: F401  (re-exported: the fused core ops
from ..engine.tensor import Function, Tensor
from . import tiled_attention as tiled
from .alibi import alibi_bias

# ---------------------------------------------------------------------------------------------
# linear


def _gemm(xp, a, b):
    """a @ b. NumPy has no float16 BLAS: a half operand makes it a float32 GEMM of the operands
    (their products are exact in float32), rounded to float16 once, which is what a GPU's
    float16 GEMM with float32 accumulation computes, at BLAS speed."""
    if xp is np and np.float16 in (a.dtype, b.dtype):
        return np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(np.float16)
    return a @ b


def _autocast(dtype, *tensors):
    """The tensors cast to dtype (None: as they are); None stays None."""
    return [t if t is None or dtype is None or t.dtype == dtype else ops.astype(t, dtype)
            for t in tensors]


class LinearFunction(Function):
    """y = x W^T + b over the last axis, computed as one 2-D GEMM on (N, in) rows."""

    def forward(self, x, w, b):
        x2 = x.reshape(-1, x.shape[-1])
        y = _gemm(self.xp, x2, w.T)
        if b is not None:
            fused = kernels.module_with("add_bias_", y, b)
            if fused:
                fused.add_bias_(y, b)
            else:
                y += b
        self.x2 = x2 if self.needs_grad[1] else None
        self.w = w if self.needs_grad[0] else None
        self.x_shape = x.shape
        return y.reshape(x.shape[:-1] + (w.shape[0],))

    def backward(self, gy):
        xp, gy2 = self.xp, gy.reshape(-1, gy.shape[-1])
        gx = _gemm(xp, gy2, self.w).reshape(self.x_shape) if self.needs_grad[0] else None
        gw = _gemm(xp, gy2.T, self.x2) if self.needs_grad[1] else None
        # column sums as a GEMV: BLAS beats sum(axis=0) on tall arrays
        gb = _gemm(xp, xp.ones(gy2.shape[0], dtype=gy2.dtype), gy2) if self.needs_grad[2] \
            else None
        return gx, gw, gb


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x @ weight.T + bias, weight of shape (out_features, in_features) as in PyTorch; in float16
    under amp.autocast."""
    if x.shape[-1:] != weight.shape[1:2]:
        raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape "
                         f"{weight.shape} (expected last dimension {weight.shape[1]})")
    return LinearFunction.apply(*_autocast(amp.low_precision(x), x, weight, bias))


# ---------------------------------------------------------------------------------------------
# layer norm


class LayerNormFunction(Function):
    """y = xhat w + b, xhat = (x - mean) / sqrt(var + eps), over the trailing normalized axes;
    dx = rstd (g - mean(g) - xhat mean(g xhat)) with g = gy w;  dw = sum(gy xhat), db = sum(gy).
    Kernels, given a weight: layer_norm_forward/backward on (N, C) rows."""

    def forward(self, x, w, b, n_axes, eps):
        xp = self.xp
        x2 = x.reshape(-1, math.prod(x.shape[x.ndim - n_axes:]))
        self.shape, self.x2, self.w, self.b_shape = x.shape, x2, w, getattr(b, "shape", None)
        self.kernels = kernels.module_with("layer_norm_forward", x2, w) if w is not None else None
        if self.kernels:
            y, self.saved = self.kernels.layer_norm_forward(
                x2, w.reshape(-1), None if b is None else b.reshape(-1), eps)
            return y.reshape(x.shape)
        centered = x2 - x2.mean(axis=1, keepdims=True)
        rstd = 1 / xp.sqrt((centered * centered).mean(axis=1, keepdims=True) + eps)
        xhat = centered * rstd
        self.saved = xhat, rstd
        y = xhat if w is None else xhat * w.reshape(-1)
        return (y if b is None else y + b.reshape(-1)).reshape(x.shape)

    def backward(self, gy):
        w = self.w
        gy2 = gy.reshape(self.x2.shape)
        if self.kernels:
            gx, gw, gb = self.kernels.layer_norm_backward(gy2, self.x2, w.reshape(-1), self.saved)
            gb = None if self.b_shape is None else gb.reshape(self.b_shape)
            return gx.reshape(self.shape), gw.reshape(w.shape), gb, None, None
        xhat, rstd = self.saved
        g = gy2 if w is None else gy2 * w.reshape(-1)
        gx = rstd * (g - g.mean(axis=1, keepdims=True)
                     - xhat * (g * xhat).mean(axis=1, keepdims=True))
        gw = None if w is None else (gy2 * xhat).sum(axis=0).reshape(w.shape)
        gb = None if self.b_shape is None else gy2.sum(axis=0).reshape(self.b_shape)
        return gx.reshape(self.shape), gw, gb, None, None


def layer_norm(x: Tensor, normalized_shape, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize over the trailing `normalized_shape` axes, then scale and shift."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape):] != shape or len(shape) > x.ndim:
        raise ValueError(f"layer_norm: normalized_shape {shape} does not match the trailing "
                         f"dimensions of input shape {x.shape}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != shape:
            raise ValueError(f"layer_norm: {name} of shape {p.shape} does not match "
                             f"normalized_shape {shape}")
    if amp.full_precision(x):
        x = ops.astype(x, np.float32)
    return LayerNormFunction.apply(x, weight, bias, len(shape), eps)


# ---------------------------------------------------------------------------------------------
# cross entropy


class CrossEntropy(Function):
    """Mean (or sum) over rows of -(1-s) log p[target] - s/C sum_c log p[c], p = softmax(logits);
    rows whose target is ignore_index count for nothing.  d logits = p - (1-s) onehot - s/C."""

    def forward(self, logits, targets, ignore_index, smoothing, reduction):
        xp = self.xp
        self.kernels = kernels.module_with("cross_entropy_forward", logits) if reduction != "none" \
            else None
        if self.kernels:
            return self._fused_forward(logits, targets, ignore_index, smoothing, reduction)
        n, c = logits.shape
        shifted = logits - logits.max(axis=1, keepdims=True)
        e = xp.exp(shifted)
        sums = e.sum(axis=1, keepdims=True)
        keep = targets != ignore_index
        safe_t = xp.where(keep, targets, 0)
        rows = xp.arange(n)
        log_z = xp.log(sums)[:, 0]
        loss = log_z - shifted[rows, safe_t]
        if smoothing:
            logp_sum_term = shifted.sum(axis=1) - c * log_z  # sum_c log p[c]
            loss = (1 - smoothing) * loss - (smoothing / c) * logp_sum_term
        loss = loss * keep
        count = keep.sum()
        e /= sums  # e is now the softmax
        self.p, self.t, self.keep, self.smoothing, self.reduction = e, safe_t, keep, smoothing, reduction
        self.count = count
        if reduction == "none":
            return loss
        total = loss.sum()
        if reduction == "sum":
            return total
        return total / xp.maximum(count, 1).astype(logits.dtype)

    def _fused_forward(self, logits, targets, ignore_index, smoothing, reduction):
        loss, self.lse = self.kernels.cross_entropy_forward(logits, targets, ignore_index,
                                                            smoothing)
        self.logits, self.t, self.ignore_index, self.smoothing = logits, targets, ignore_index, \
            smoothing
        self.reduction = reduction
        total = loss.sum()
        if reduction == "sum":
            self.count = None
            return total
        self.count = (targets != ignore_index).sum().astype(logits.dtype)
        return total / self.xp.maximum(self.count, 1)

    def backward(self, gy):
        if self.kernels:
            scale = gy if self.count is None else gy / self.xp.maximum(self.count, 1)
            return self.kernels.cross_entropy_backward(self.logits, self.t, self.lse, scale,
                                               self.ignore_index, self.smoothing), \
                None, None, None, None
        xp, p = self.xp, self.p
        n, c = p.shape
        g = p.copy() if self.retained else p  # reuse the saved softmax unless needed again
        g[xp.arange(n), self.t] -= 1 - self.smoothing
        if self.smoothing:
            g -= self.smoothing / c
        if self.reduction == "none":
            scale = (gy * self.keep)[:, None]
        else:
            scale = self.keep[:, None] * gy
            if self.reduction == "mean":
                scale = scale / xp.maximum(self.count, 1).astype(p.dtype)
        g *= scale.astype(p.dtype, copy=False)
        return g, None, None, None, None


IGNORE_INDEX = -100  # a target that is not scored (PyTorch's convention)


def cross_entropy(logits: Tensor, targets, ignore_index: int = IGNORE_INDEX,
                  label_smoothing: float = 0.0, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy with integer class targets, stable for logits of any magnitude.

    logits: (N, C) with targets (N,), or (..., C) with targets (...) (classes on the last axis).
    """
    t = targets.data if isinstance(targets, Tensor) else targets
    if not hasattr(t, "dtype"):
        t = np.asarray(t)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got "
                         f"{reduction!r}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class indices, got {t.dtype}")
    if logits.shape[:-1] != t.shape:
        raise ValueError(f"cross_entropy: logits of shape {logits.shape} need targets of shape "
                         f"{logits.shape[:-1]}, got {t.shape}")
    c = logits.shape[-1]
    bad = backend.out_of_range(t[t != ignore_index], c)
    if bad is not None:
        raise ValueError(f"cross_entropy: target {bad} is out of range for {c} classes")
    t = backend.to_device(t, logits.device)
    if amp.full_precision(logits):
        logits = ops.astype(logits, np.float32)
    flat = ops.reshape(logits, -1, c) if logits.ndim != 2 else logits
    out = CrossEntropy.apply(flat, t.reshape(-1), ignore_index, float(label_smoothing), reduction)
    return ops.reshape(out, t.shape) if reduction == "none" else out


class BinaryCrossEntropyWithLogits(Function):
    """Mean of max(z, 0) - z y + log(1 + exp(-|z|)) over the elements (-log sigmoid(z) for
    y = 1, -log sigmoid(-z) for y = 0, stable for any z);  dz = (sigmoid(z) - y) / N."""

    def forward(self, z, y):
        xp = self.xp
        self.z, self.y = z, y
        loss = xp.maximum(z, 0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))
        return loss.sum() / max(z.size, 1)

    def backward(self, gy):
        xp = self.xp
        p = 1 / (1 + xp.exp(-self.z))
        return (p - self.y) * (gy / max(self.z.size, 1)), None


def binary_cross_entropy_with_logits(logits: Tensor, targets) -> Tensor:
    """Mean logistic loss of ``logits`` against 0/1 ``targets`` of the same shape."""
    t = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
    if t.shape != logits.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: targets of shape {t.shape} for "
                         f"logits of shape {logits.shape}")
    t = backend.to_device(t.astype(logits.dtype), logits.device)
    return BinaryCrossEntropyWithLogits.apply(logits, t)


# ---------------------------------------------------------------------------------------------
# embedding and dropout


class EmbeddingFunction(Function):
    """y = W[idx];  dW = scatter-add of gy rows at idx (repeated ids add up)."""

    def forward(self, w, idx):
        self.idx, self.w_shape = idx, w.shape
        return w[idx]

    def backward(self, gy):
        xp, gy2, idx = self.xp, gy.reshape(-1, self.w_shape[1]), self.idx.reshape(-1)
        fused = kernels.module_with("embedding_backward", gy2)
        if fused:
            return fused.embedding_backward(gy2, idx, self.w_shape), None
        gw = xp.zeros(self.w_shape, dtype=gy.dtype)
        backend.index_add_rows(xp, gw, idx, gy2)
        return gw, None


def embedding(idx, weight: Tensor) -> Tensor:
    """Rows of `weight` (num_embeddings, dim) at integer ids `idx` (any shape), range-checked
    where they live (backend.out_of_range) before they move to weight's device."""
    ids = idx.data if isinstance(idx, Tensor) else idx
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
    n = weight.shape[0]
    bad = backend.out_of_range(ids, n)
    if bad is not None:
        raise ValueError(f"embedding: id {bad} is out of range for {n} embeddings")
    return EmbeddingFunction.apply(weight, backend.to_device(ids, weight.device))


def _dropout_scale(like, p: float):
    """mask / (1 - p) of like's shape and dtype, mask ~ Bernoulli(1 - p) drawn on like's device."""
    keep = rng.for_device(backend.device_of(like)).random(like.shape, dtype=np.float32) >= p
    return keep * like.dtype.type(1.0 / (1.0 - p))


class DropoutFunction(Function):
    """y = x * mask / (1 - p), mask ~ Bernoulli(1 - p)."""

    def forward(self, x, p):
        self.scale = _dropout_scale(x, p)
        return x * self.scale

    def backward(self, gy):
        return gy * self.scale, None


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    return DropoutFunction.apply(x, p)


# ---------------------------------------------------------------------------------------------
# attention


def _attention_forward(xp, q, k, v, causal, mask, dropout_p, offset=0, alibi=False):
    """softmax(q k^T / sqrt(d) + masks) v on arrays (B, H, Tq, D) x (B, H, Tk, D).

    Returns (out, probs, dropped): probs before dropout, dropped = the dropout scale or None.
    Rows whose keys are all masked give zeros instead of NaN. `offset` is the position of the
    first query among the keys (used by the KV cache and the causal blocks). `alibi` adds each
    head's distance bias (nn/alibi.py) to the scores.
    """
    scale = q.dtype.type(1.0 / math.sqrt(q.shape[-1]))
    s = xp.matmul(q * scale, k.swapaxes(-1, -2))  # scaling q is cheaper than scaling s
    tq, tk = q.shape[-2], k.shape[-2]
    if alibi:
        s += alibi_bias(xp, q.shape[-3], slice(0, tq), slice(0, tk), offset, s.dtype)
    fused = kernels.module_with("masked_softmax_", s) if mask is None else None
    if fused:
        return _weighted_sum(xp, fused.masked_softmax_(s, causal, offset), v, dropout_p)
    if causal:
        future = xp.arange(tk)[None, :] > (xp.arange(tq)[:, None] + offset)
        s += xp.where(future, s.dtype.type(-np.inf), s.dtype.type(0))  # faster than copyto
    if mask is not None:
        s = xp.where(mask, s, s.dtype.type(-np.inf))
    m = s.max(axis=-1, keepdims=True)
    m[~xp.isfinite(m)] = 0
    s -= m
    xp.exp(s, out=s)
    total = (s @ xp.ones(tk, dtype=s.dtype))[..., None]  # row sums as a GEMV
    total[total == 0] = 1
    s /= total
    return _weighted_sum(xp, s, v, dropout_p)


def _weighted_sum(xp, p, v, dropout_p):
    """(p with dropout) @ v; returns (out, p, dropout scale or None)."""
    if not dropout_p:
        return xp.matmul(p, v), p, None
    dropped = _dropout_scale(p, dropout_p)
    return xp.matmul(p * dropped, v), p, dropped


def _transposed_matmul(xp, a, b):
    """a^T @ b over the last two axes. NumPy hands transposes to BLAS for free; CuPy copies a
    transposed operand, so there the large (T, T) `a` is kept as is: (b^T @ a)^T."""
    if xp is np:
        return xp.matmul(a.swapaxes(-1, -2), b)
    return xp.matmul(xp.ascontiguousarray(b.swapaxes(-1, -2)), a).swapaxes(-1, -2)


def _fused_softmax_backward(p):
    """The kernels that do the softmax backward (which then needs no attention output), or None."""
    return kernels.module_with("softmax_backward_", p)


def _attention_backward(xp, go, q, k, v, out, p, dropped):
    """Gradients of _attention_forward w.r.t. q, k, v (masked entries of p are 0); `out`, the
    forward's output, is needed unless _fused_softmax_backward."""
    scale = p.dtype.type(1.0 / math.sqrt(q.shape[-1]))
    pd = p if dropped is None else p * dropped
    gv = _transposed_matmul(xp, pd, go)
    gp = xp.matmul(go, v.swapaxes(-1, -2))
    if dropped is not None:
        gp *= dropped
    fused = _fused_softmax_backward(p)
    if fused:
        fused.softmax_backward_(p, gp, float(scale))
        return xp.matmul(gp, k), _transposed_matmul(xp, gp, q), gv
    # softmax backward in place, gs = p * (gp - sum_j gp p), where sum_j gp p = sum_d go out
    # (a (T, D) product instead of a (T, T) one); the scale goes on the (T, D) results
    gp -= (go * out).sum(axis=-1, keepdims=True)
    gp *= p
    gq, gk = xp.matmul(gp, k), _transposed_matmul(xp, gp, q)
    gq *= scale
    gk *= scale
    return gq, gk, gv


# Causal attention on the CPU goes by blocks of about this many queries, each block attending
# only to the keys up to its end: this skips most of the masked upper triangle, and the blocks'
# (rows, keys) scores stay in cache (benchmarks/results/cpu_tuning.json).
QUERY_BLOCK_ROWS = 64


def _batch_chunks(xp, q, k) -> list[slice]:
    """Slices of the batch that CPU threads can run concurrently (one slice elsewhere)."""
    if xp is np and q.ndim > 2 and q.shape[:-2] == k.shape[:-2]:
        return threads.batch_chunks(q.shape[0], q[0].size * k.shape[-2] // q.shape[-1])
    return [slice(None)]


class _AttentionCore(Function):
    """Shared forward/backward of attention on (B, H, T, D) views, by chunks of the batch.

    On the CPU without dropout, chunks of the batch run concurrently (backend/threads.py). Each
    chunk makes its own contiguous q, k, v, writes its output and gradients straight into the
    caller's (possibly strided) views and keeps its own probabilities, so the head-splitting
    copies also run in parallel and nothing is concatenated. Within a chunk, causal attention goes by blocks
    of queries over the keys up to each block's end (QUERY_BLOCK_ROWS).
    """

    def _forward(self, q, k, v, causal, mask, dropout_p, out, alibi=False):
        xp = self.xp
        chunks = _batch_chunks(xp, q, k) if not dropout_p else [slice(None)]
        tq, tk = q.shape[-2], k.shape[-2]
        blocks = [(slice(None), slice(None), 0)]  # (queries, keys, offset of the queries)
        n_blocks = tq // QUERY_BLOCK_ROWS
        if xp is np and causal and mask is None and tq == tk and n_blocks > 1:
            ends = [tq * (i + 1) // n_blocks for i in range(n_blocks)]
            blocks = [(slice(lo, hi), slice(0, hi), lo) for lo, hi in zip([0] + ends, ends)]

        def run(sl):
            part_mask = mask if mask is None or mask.ndim < q.ndim or mask.shape[0] == 1 \
                else mask[sl]
            qkv = [xp.ascontiguousarray(a[sl]) for a in (q, k, v)]
            saved = []
            for rows, keys, offset in blocks:
                o, p, dropped = _attention_forward(
                    xp, qkv[0][..., rows, :], qkv[1][..., keys, :], qkv[2][..., keys, :], causal,
                    part_mask, dropout_p, offset, alibi)
                out[sl][..., rows, :] = o
                saved.append((None if _fused_softmax_backward(p) else o, p, dropped))
            return qkv, saved
        self.chunks, self.blocks, self.saved = chunks, blocks, threads.map_chunks(run, chunks)
        return out

    def _backward(self, go, gq, gk, gv):
        """Writes the gradients for the output gradient `go` into the views gq, gk, gv."""
        xp = self.xp

        def run(args):
            sl, ((q, k, v), saved) = args
            go_part = xp.ascontiguousarray(go[sl])
            gk_part = gv_part = None
            for (rows, keys, _), (o, p, dropped) in reversed(list(zip(self.blocks, saved))):
                g_q, g_k, g_v = _attention_backward(xp, go_part[..., rows, :], q[..., rows, :],
                                                    k[..., keys, :], v[..., keys, :], o, p,
                                                    dropped)
                gq[sl][..., rows, :] = g_q
                if gk_part is None:  # the last block's keys are all keys
                    gk_part, gv_part = g_k, g_v
                else:
                    gk_part[..., keys, :] += g_k
                    gv_part[..., keys, :] += g_v
            gk[sl], gv[sl] = gk_part, gv_part
        threads.map_chunks(run, list(zip(self.chunks, self.saved)))
        return gq, gk, gv


class Attention(_AttentionCore):
    """Scaled dot-product attention on (B, H, T, D) arrays: scores, mask, softmax, weighted sum."""

    def forward(self, q, k, v, causal, mask, dropout_p):
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2])
        self.grad_shapes = [batch + a.shape[-2:] for a in (q, k, v)]  # before un-broadcasting
        out = self.xp.empty(batch + q.shape[-2:-1] + v.shape[-1:], dtype=q.dtype)
        return self._forward(q, k, v, causal, mask, dropout_p, out)

    def backward(self, go):
        grads = [self.xp.empty(shape, dtype=go.dtype) for shape in self.grad_shapes]
        return self._backward(go, *grads) + (None, None, None)


class QKVAttention(_AttentionCore):
    """Multi-head attention core from packed projections: (B, T, 3C) -> (B, T, C).

    Splitting heads, attention and merging heads happen inside one Function, so the graph holds
    no transposed copies and the gradient is written straight into the packed (B, T, 3C) layout.
    `alibi` adds each head's distance bias (nn/alibi.py) to the scores.
    """

    def forward(self, qkv, n_heads, causal, mask, dropout_p, alibi=False):
        b, t, c3 = qkv.shape
        d = c3 // 3 // n_heads
        heads = qkv.reshape(b, t, 3, n_heads, d).transpose(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        out = self.xp.empty((b, t, n_heads, d), dtype=qkv.dtype)  # merged heads
        self.out_shape = out.shape
        self._forward(*heads, causal, mask, dropout_p, out.transpose(0, 2, 1, 3), alibi)
        return out.reshape(b, t, n_heads * d)

    def backward(self, gy):
        b, t, h, d = self.out_shape
        gqkv = self.xp.empty((b, t, 3, h, d), dtype=gy.dtype)
        self._backward(gy.reshape(b, t, h, d).transpose(0, 2, 1, 3),
                       *gqkv.transpose(2, 0, 3, 1, 4))
        return gqkv.reshape(b, t, 3 * h * d), None, None, None, None, None


class _TiledCore:
    """The tiled core (nn/tiled_attention.py) in place of _AttentionCore's: the same
    _forward/_backward on (B, H, T, D) views by chunks of the batch, saving per chunk its
    contiguous q, k, v and the log-sum-exp (O(T)) instead of the (T, T) probabilities."""

    def _forward(self, q, k, v, causal, mask, dropout_p, out, alibi=False):
        xp = self.xp
        seed = rng.draw_seed(backend.device_of(q)) if dropout_p else 0
        self.chunks = _batch_chunks(xp, q, k)
        per_item = math.prod(q.shape[1:-2])

        def run(sl):
            part_mask = mask if mask is None or mask.ndim < q.ndim or mask.shape[0] == 1 \
                else mask[sl]
            qkv = [xp.ascontiguousarray(a[sl]) for a in (q, k, v)]
            batch = np.broadcast_shapes(qkv[0].shape[:-2], qkv[1].shape[:-2])
            tiling = tiled.Tiling(xp, batch, q.shape[-2], k.shape[-2], causal, part_mask,
                                  dropout_p, seed, (sl.start or 0) * per_item, alibi=alibi)
            return qkv, tiled.forward(xp, *qkv, tiling, out[sl]), tiling
        self.saved, self.out = threads.map_chunks(run, self.chunks), out
        return out

    def _backward(self, go, gq, gk, gv):
        def run(args):
            sl, (qkv, lse, tiling) = args
            tiled.backward(self.xp, self.xp.ascontiguousarray(go[sl]), *qkv, self.out[sl], lse,
                           tiling, gq[sl], gk[sl], gv[sl])
        threads.map_chunks(run, list(zip(self.chunks, self.saved)))
        return gq, gk, gv


class TiledAttention(_TiledCore, Attention):
    """Attention (same arguments and results) computed by tiles, never holding (Tq, Tk)."""


class TiledQKVAttention(_TiledCore, QKVAttention):
    """QKVAttention (same arguments and results) computed by tiles, never holding (T, T)."""


# Attention over at least this many keys goes by tiles unless the caller says otherwise: the
# blocked path stores the (T, T) probabilities, the tiled one O(T), for about the same time above
# this length on the CPU (benchmarks/memory.py --sections attention). Half precision always goes
# by tiles, whose statistics and accumulators are float32.
TILED_MIN_KEYS = 1024


def _use_tiled(tiled_: bool | None, n_keys: int, dtype) -> bool:
    if tiled_ is not None:
        return tiled_
    return n_keys >= TILED_MIN_KEYS or dtype == np.float16


def attention_kept_per_query(n_keys: int) -> int:
    """Values a float32 attention core keeps per query and head for backward by default: its
    row of probabilities (blocked), or its log-sum-exp (tiled, from TILED_MIN_KEYS keys)."""
    return 1 if _use_tiled(None, n_keys, np.float32) else n_keys


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False,
                                 mask=None, dropout_p: float = 0.0,
                                 tiled: bool | None = None) -> Tensor:
    """softmax(q k^T / sqrt(d)) v for q (..., Tq, D), k and v (..., Tk, D).

    mask: boolean, broadcastable to (..., Tq, Tk), True where a query may attend to a key
    (PyTorch's convention). causal=True also hides keys after each query's position.
    tiled: compute by tiles without the (Tq, Tk) matrix; None decides by length and dtype
    (TILED_MIN_KEYS).
    """
    if q.shape[-1] != k.shape[-1] or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"scaled_dot_product_attention: shapes q {q.shape}, k {k.shape}, "
                         f"v {v.shape} do not fit (q and k share D; k and v share Tk)")
    m = None if mask is None else ops._mask_array(mask, q, "scaled_dot_product_attention")
    if m is not None and not ops._broadcastable(m.shape, q.shape[:-1] + (k.shape[-2],)):
        raise ValueError(f"scaled_dot_product_attention: mask of shape {m.shape} does not "
                         f"broadcast to scores of shape {q.shape[:-1] + (k.shape[-2],)}")
    q, k, v = _autocast(amp.low_precision(q), q, k, v)
    core = TiledAttention if _use_tiled(tiled, k.shape[-2], q.dtype) else Attention
    return core.apply(q, k, v, causal, m, dropout_p)


def multi_head_attention(qkv: Tensor, n_heads: int, causal: bool = False,
                         key_padding_mask=None, dropout_p: float = 0.0,
                         tiled: bool | None = None, alibi: bool = False) -> Tensor:
    """Attention over packed projections qkv (B, T, 3C) with n_heads heads -> (B, T, C).

    key_padding_mask: boolean (B, T), True for real tokens and False for padding.
    tiled: as in scaled_dot_product_attention.
    alibi: subtract slope_h |i - j| from head h's scores (nn/alibi.py), the positions' only
    signal in a body without position vectors.
    """
    b, t, c3 = qkv.shape
    if c3 % 3 or (c3 // 3) % n_heads:
        raise ValueError(f"multi_head_attention: last dimension {c3} is not 3 x a multiple of "
                         f"n_heads={n_heads}")
    m = None if key_padding_mask is None else ops._mask_array(key_padding_mask, qkv,
                                                              "multi_head_attention")
    if m is not None:
        if m.shape != (b, t):
            raise ValueError(f"key_padding_mask of shape {m.shape} does not match (batch, time) "
                             f"= {(b, t)}")
        m = m[:, None, None, :]  # (B, 1, 1, T): broadcast over heads and queries
    qkv, = _autocast(amp.low_precision(qkv), qkv)
    core = TiledQKVAttention if _use_tiled(tiled, t, qkv.dtype) else QKVAttention
    return core.apply(qkv, n_heads, causal, m, dropout_p, alibi)
