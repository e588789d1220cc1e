"""NumPy kernels: the CPU's fast paths of the hot ops, beside their xp references in the ops.

Each kernel computes what its Function's few `xp` lines compute, in place with few temporaries,
as chunks of rows or cache-sized blocks on all cores (backend/threads.py). The names and
signatures are those of kernels/cuda.py, so a Function calls either through kernels.module_with.
MINIGRAD_CPU_KERNELS=0 turns these fast paths off (the references then run).
"""
from __future__ import annotations

import math
import os

import numpy as np

from .. import threads
from .constants import GELU_C, SQRT_2_OVER_PI



def enabled() -> bool:
    return os.environ.get("MINIGRAD_CPU_KERNELS", "1") != "0"


def supports(*arrays) -> bool:
    """The kernels handle NumPy float arrays."""
    return enabled() and all(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in arrays)


# ---- GELU (tanh) ----------------------------------------------------------------------------

def gelu_tanh_forward(x):
    """y = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3), and the saved denominator d."""
    flat = x.reshape(-1)  # 1-D: blocks are slices, in-place ops work for 0-d too
    d, y = np.empty_like(flat), np.empty_like(flat)

    def run(sl):
        xs, ds = flat[sl], d[sl]
        np.multiply(xs, xs, out=ds)
        ds *= -2 * SQRT_2_OVER_PI * GELU_C
        ds -= 2 * SQRT_2_OVER_PI
        ds *= xs  # -2u
        np.minimum(ds, 80.0, out=ds)  # exp(80) is finite in float32; y is ~0 there anyway
        np.exp(ds, out=ds)
        ds += 1
        np.divide(xs, ds, out=y[sl])
    threads.map_blocks(run, flat.size)
    return y.reshape(x.shape), d


def gelu_tanh_backward(gy, x, d):
    """gx = gy (s + x s (1 - s) 2 du/dx), s = 1/d = sigmoid(2u), du/dx = sqrt(2/pi)(1 + 3c x^2)."""
    flat, gy = x.reshape(-1), gy.reshape(-1)
    g = np.empty_like(flat)

    def run(sl):
        xs, gs = flat[sl], g[sl]
        s = np.reciprocal(d[sl])
        t = 1 - s
        t *= s
        np.multiply(xs, xs, out=gs)
        gs *= 2 * SQRT_2_OVER_PI * 3 * GELU_C
        gs += 2 * SQRT_2_OVER_PI
        gs *= xs
        gs *= t
        gs += s
        gs *= gy[sl]
    threads.map_blocks(run, flat.size)
    return g.reshape(x.shape)


# ---- LayerNorm ------------------------------------------------------------------------------

def layer_norm_forward(x2, w, b, eps):
    """(N, C) rows -> y and the saved (xhat, rstd (N, 1)); row means are GEMVs; b may be None."""
    n, c = x2.shape
    means = np.full(c, 1.0 / c, dtype=x2.dtype)  # GEMV weights: x @ means is the row mean
    xhat, y = np.empty_like(x2), np.empty_like(x2)
    rstd = np.empty((n, 1), dtype=x2.dtype)

    def run(rows):
        xh, out, r = xhat[rows], y[rows], rstd[rows]
        np.subtract(x2[rows], (x2[rows] @ means)[:, None], out=xh)
        np.multiply(xh, xh, out=out)
        np.matmul(out, means, out=r[:, 0])  # variance
        r += eps
        np.sqrt(r, out=r)
        np.reciprocal(r, out=r)
        xh *= r
        np.multiply(xh, w, out=out)
        if b is not None:
            out += b
    threads.map_chunks(run, threads.batch_chunks(n, c))
    return y, (xhat, rstd)


def layer_norm_backward(gy2, x2, w, saved):
    """Gradients (gx, gw, gb) of layer_norm_forward: gx = rstd (g - mean(g) - xhat mean(g xhat)),
    g = gy w, by chunks of rows, each giving its part of the column sums gw and gb."""
    xhat, rstd = saved
    n, c = x2.shape
    means = np.full(c, 1.0 / c, dtype=x2.dtype)
    gx = np.empty_like(gy2)

    def run(rows):
        gys, xh = gy2[rows], xhat[rows]
        col = np.ones(gys.shape[0], dtype=gys.dtype)
        t = gys * xh
        gw, gb = col @ t, col @ gys
        g = np.multiply(gys, w, out=gx[rows])
        np.multiply(g, xh, out=t)
        mean_gx = (t @ means)[:, None]
        g -= (g @ means)[:, None]
        np.multiply(xh, mean_gx, out=t)  # t is free again; xhat stays intact
        g -= t
        g *= rstd[rows]
        return gw, gb
    parts = threads.map_chunks(run, threads.batch_chunks(n, c))
    gw, gb = (sum(p[1:], p[0]) for p in zip(*parts))
    return gx, gw, gb


# ---- softmax over rows ----------------------------------------------------------------------

def softmax_forward(x2):
    """Softmax of each row of (N, C), by chunks of rows in place, the row sums as GEMVs."""
    y = np.empty_like(x2)

    def run(rows):
        ys = y[rows]
        np.subtract(x2[rows], x2[rows].max(axis=1, keepdims=True), out=ys)
        np.exp(ys, out=ys)
        ys /= (ys @ np.ones(ys.shape[1], ys.dtype))[:, None]
    threads.map_chunks(run, threads.batch_chunks(*x2.shape))
    return y


def softmax_backward(gy2, y):
    """gx = y (gy - sum(gy y)) row by row."""
    gx = np.empty_like(y)

    def run(rows):
        g = np.multiply(gy2[rows], y[rows], out=gx[rows])
        inner = g @ np.ones(g.shape[1], g.dtype)
        np.subtract(gy2[rows], inner[:, None], out=g)
        g *= y[rows]
    threads.map_chunks(run, threads.batch_chunks(*y.shape))
    return gx


# ---- AdamW ----------------------------------------------------------------------------------

def adam_update_(p, g, m, v, lr, b1, b2, eps, wd, step, decoupled: bool, scratch=None):
    """One Adam/AdamW step over flat buffers (p, m, v in place) by cache-sized blocks.

    p -= lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps) is computed as lr' m / (sqrt(v) + eps');
    `scratch`, a buffer like p, is the one temporary (allocated when not given).
    """
    tmp_all = np.empty_like(p) if scratch is None else scratch
    root_c2 = math.sqrt(1 - b2 ** step)
    step_size, eps = lr * root_c2 / (1 - b1 ** step), eps * root_c2

    def run(block):
        ps, gs, ms, vs, tmp = (a[block] for a in (p, g, m, v, tmp_all))
        if wd and decoupled:
            ps *= 1 - lr * wd
        elif wd:
            gs = gs + wd * ps  # the L2 penalty
        ms *= b1
        np.multiply(gs, 1 - b1, out=tmp)
        ms += tmp
        vs *= b2
        np.multiply(gs, gs, out=tmp)
        tmp *= 1 - b2
        vs += tmp
        np.sqrt(vs, out=tmp)
        tmp += eps
        np.divide(ms, tmp, out=tmp)
        tmp *= step_size
        ps -= tmp
    threads.map_blocks(run, p.size)
