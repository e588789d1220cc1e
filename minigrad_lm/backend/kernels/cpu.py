"""CPU kernels: the fast paths of the hot ops, beside their xp references in the ops.

Each kernel computes what its Function's few `xp` lines compute, in place with few temporaries,
as chunks of rows or cache-sized blocks on all cores (backend/threads.py). The passes over each
chunk are loops compiled by Numba (kernels/compiled.py, imported at the first kernel call; the
attention softmax has kernels only there), with NumPy ufuncs making the same passes where Numba
is missing, the dtype is not float32/float64, or MINIGRAD_CPU_KERNELS=numpy; 0 turns these fast
paths off (the references then run). The names and signatures are those of kernels/cuda.py, so
a Function calls either through kernels.module_with.
"""
from __future__ import annotations

import math
import os
from types import ModuleType

import numpy as np

from .. import threads
from ..arrays import index_add_rows
from .constants import GELU_C, SQRT_2_OVER_PI

COMPILED_DTYPES = (np.float32, np.float64)
# Kernels that exist only as compiled loops (their NumPy passes would be the reference's).
COMPILED_ONLY = ("masked_softmax_", "softmax_backward_")

_compiled: ModuleType | None | bool = False  # False: not imported yet; None: no Numba


def mode() -> str:
    """'compiled', 'numpy' or 'off' (MINIGRAD_CPU_KERNELS: 1, the default; numpy; 0)."""
    value = os.environ.get("MINIGRAD_CPU_KERNELS", "1")
    return "off" if value == "0" else "numpy" if value == "numpy" else "compiled"


def compiled_loops(*arrays) -> ModuleType | None:
    """kernels/compiled.py when the compiled loops run on these arrays (float32 or float64, all
    of one dtype, Numba installed, not switched off), else None."""
    global _compiled
    if mode() != "compiled" or arrays[0].dtype not in COMPILED_DTYPES \
            or any(a.dtype != arrays[0].dtype for a in arrays):
        return None
    if _compiled is False:
        try:
            from . import compiled
        except ImportError:
            compiled = None
        _compiled = compiled
    return _compiled


def supports(name: str, *arrays) -> bool:
    """The kernel `name` handles these NumPy float arrays (the compiled-only ones: contiguous,
    of one dtype, float32 or float64)."""
    if mode() == "off" or not all(isinstance(a, np.ndarray) and a.dtype.kind == "f"
                                  for a in arrays):
        return False
    return name not in COMPILED_ONLY or (compiled_loops(*arrays) is not None
                                         and all(a.flags.c_contiguous for a in arrays))


# ---- bias ------------------------------------------------------------------------------------

def add_bias_(y2, b):
    """y2 += b on each row of (N, C), in place, by chunks of rows on all cores."""
    loops = compiled_loops(y2, b)

    def run(rows):
        if loops:
            loops.add_row_vector(y2[rows], b)
        else:
            y2[rows] += b
    threads.map_chunks(run, threads.batch_chunks(*y2.shape))
    return y2


# ---- embedding ---------------------------------------------------------------------------------

def embedding_backward(gy2, index, shape):
    """The (V, C) gradient of an embedding table: row index[i] gets gy2[i] added, repeated ids
    adding up (one compiled pass in order; NumPy's sorted reduceat without Numba)."""
    gw = np.zeros(shape, dtype=gy2.dtype)
    loops = compiled_loops(gw, gy2)
    if loops:
        loops.add_rows_at(gw, index, gy2)
    else:
        index_add_rows(np, gw, index, gy2)
    return gw


# ---- GELU (tanh) ----------------------------------------------------------------------------

def gelu_tanh_forward(x):
    """y = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3), and the saved denominator d."""
    flat = x.reshape(-1)  # 1-D: blocks are slices, in-place ops work for 0-d too
    d, y = np.empty_like(flat), np.empty_like(flat)
    loops, dt = compiled_loops(flat), x.dtype.type

    def run(sl):
        xs, ds = flat[sl], d[sl]
        if loops:
            loops.gelu_exponent(xs, dt(-2 * SQRT_2_OVER_PI), dt(GELU_C), dt(80.0), ds)
            np.exp(ds, out=ds)
            loops.gelu_divide(xs, dt(1), ds, y[sl])
            return
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
    loops, dt = compiled_loops(flat, gy, d), x.dtype.type

    def run(sl):
        xs, gs = flat[sl], g[sl]
        if loops:
            loops.gelu_backward_loop(gy[sl], xs, d[sl], dt(1), dt(2 * SQRT_2_OVER_PI),
                                     dt(2 * SQRT_2_OVER_PI * 3 * GELU_C), gs)
            return
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
    """(N, C) rows -> y and what backward needs: (None, mean, rstd) from the compiled loops,
    which recompute xhat from x, or (xhat, None, rstd) from the NumPy passes (row means as
    GEMVs); rstd and mean are (N, 1). b may be None."""
    n, c = x2.shape
    y = np.empty_like(x2)
    rstd = np.empty((n, 1), dtype=x2.dtype)
    loops, dt = compiled_loops(x2, w, *(() if b is None else (b,))), x2.dtype.type
    if loops:
        mean = np.empty((n, 1), dtype=x2.dtype)
        bias = np.zeros_like(w) if b is None else b
        threads.map_chunks(lambda rows: loops.layer_norm_rows(
            x2[rows], w, bias, dt(eps), dt(1 / c), dt(1), y[rows], mean[rows, 0],
            rstd[rows, 0]), threads.batch_chunks(n, c))
        return y, (None, mean, rstd)
    means = np.full(c, 1.0 / c, dtype=x2.dtype)  # GEMV weights: x @ means is the row mean
    xhat = np.empty_like(x2)

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
    return y, (xhat, None, rstd)


def layer_norm_backward(gy2, x2, w, saved):
    """Gradients (gx, gw, gb) of layer_norm_forward: gx = rstd (g - mean(g) - xhat mean(g xhat)),
    g = gy w, by chunks of rows, each giving its part of the column sums gw and gb."""
    xhat, mean, rstd = saved
    n, c = x2.shape
    gx = np.empty_like(gy2)
    loops = compiled_loops(gy2, x2, w, rstd)
    if loops and xhat is None:
        def run(rows):
            gw, gb = np.zeros_like(w), np.zeros_like(w)
            loops.layer_norm_backward_rows(gy2[rows], x2[rows], mean[rows, 0], rstd[rows, 0],
                                           w, x2.dtype.type(1 / c), gx[rows], gw, gb)
            return gw, gb
    else:
        if xhat is None:
            xhat = (x2 - mean) * rstd
        means = np.full(c, 1.0 / c, dtype=x2.dtype)

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

def _softmax_rows_(x2, out, tq: int, causal: bool, offset: int, loops: ModuleType) -> None:
    """Softmax of each row of (rows, Tk) scores into `out` (x2 itself for in place), query
    row r (of Tq) seeing only the keys up to r + offset when causal: compiled passes around
    NumPy's exp."""
    dt = x2.dtype.type
    loops.softmax_shift_rows(x2, out, tq, causal, offset, dt(0), dt(-np.inf))
    np.exp(out, out=out)
    loops.normalize_rows(out, dt(1))


def masked_softmax_(scores, causal: bool, offset: int = 0):
    """Softmax over the last axis of contiguous (..., Tq, Tk) scores, in place, causal or not.
    It runs on the calling thread: attention already runs its batch chunks on threads."""
    tq, tk = scores.shape[-2:]
    rows = scores.reshape(-1, tk)
    _softmax_rows_(rows, rows, tq, causal, offset, compiled_loops(scores))
    return scores


def softmax_backward_(p, gp, scale: float):
    """gp <- scale * p * (gp - sum(gp * p)) row by row, in place (contiguous arrays)."""
    tk = p.shape[-1]
    compiled_loops(p, gp).softmax_backward_rows(p.reshape(-1, tk), gp.reshape(-1, tk),
                                                p.dtype.type(scale))
    return gp


def softmax_forward(x2):
    """Softmax of each row of (N, C), by chunks of rows in place, the row sums as GEMVs."""
    y = np.empty_like(x2)
    loops = compiled_loops(x2)

    def run(rows):
        ys = y[rows]
        if loops:
            _softmax_rows_(x2[rows], ys, 1, False, 0, loops)
            return
        np.subtract(x2[rows], x2[rows].max(axis=1, keepdims=True), out=ys)
        np.exp(ys, out=ys)
        ys /= (ys @ np.ones(ys.shape[1], ys.dtype))[:, None]
    threads.map_chunks(run, threads.batch_chunks(*x2.shape))
    return y


def softmax_backward(gy2, y):
    """gx = y (gy - sum(gy y)) row by row."""
    gx = np.empty_like(y)
    loops = compiled_loops(gy2, y)

    def run(rows):
        if loops:
            np.copyto(gx[rows], gy2[rows])
            loops.softmax_backward_rows(y[rows], gx[rows], y.dtype.type(1))
            return
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
    `scratch`, a buffer like p, is the NumPy passes' one temporary (allocated when not given;
    the compiled loop needs none).
    """
    root_c2 = math.sqrt(1 - b2 ** step)
    step_size, eps = lr * root_c2 / (1 - b1 ** step), eps * root_c2
    loops, dt = compiled_loops(p, g, m, v), p.dtype.type
    if loops:
        decay, l2 = (1 - lr * wd, 0.0) if decoupled else (1.0, wd)
        scalars = [dt(a) for a in (b1, 1 - b1, b2, 1 - b2, step_size, eps, decay, l2)]
        threads.map_chunks(lambda sl: loops.adam_loop(p[sl], g[sl], m[sl], v[sl], *scalars),
                           threads.batch_chunks(p.size, 1))
        return
    tmp_all = np.empty_like(p) if scratch is None else scratch

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
