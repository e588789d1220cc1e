"""Fused CuPy kernels: the one place that builds CUDA code, lazily, memoized per dtype.

Each kernel replaces a chain of array operations of the portable `xp` path in engine.ops,
nn.functional or optim (which stays the reference), with the names and signatures of the CPU
kernels in cpu.py; the op registry's CUDA tests (tests/op_registry.py) check them on a GPU.
MINIGRAD_CUDA_KERNELS=0 turns the fast paths off. `calls` counts launches per kernel so tests
can check a fast path really ran.
"""
from __future__ import annotations

import functools
import os
from collections import Counter

import numpy as np

from .constants import GELU_C, SQRT_2_OVER_PI

calls: Counter = Counter()

_BLOCK = 256

# Block-wide reductions over one row per block; blockDim is a multiple of 32.
_PRELUDE = r"""
typedef __TYPE__ T;
typedef __ACC__ acc_t;
#define NEG_INF (-((acc_t)1e300 * (acc_t)1e300))

__device__ acc_t block_reduce(acc_t v, bool is_max) {
    __shared__ acc_t shm[32];
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        acc_t other = __shfl_down_sync(0xffffffff, v, o);
        v = is_max ? (other > v ? other : v) : v + other;
    }
    if (lane == 0) shm[wid] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    acc_t init = is_max ? NEG_INF : (acc_t)0;
    v = (threadIdx.x < nw) ? shm[threadIdx.x] : init;
    if (wid == 0) {
        for (int o = 16; o > 0; o >>= 1) {
            acc_t other = __shfl_down_sync(0xffffffff, v, o);
            v = is_max ? (other > v ? other : v) : v + other;
        }
        if (threadIdx.x == 0) shm[0] = v;
    }
    __syncthreads();
    v = shm[0];
    __syncthreads();
    return v;
}
"""

_LAYER_NORM = r"""
extern "C" __global__ void layer_norm_fwd(const T* x, const T* w, const T* b, T* y, T* mean_out,
                                          T* rstd_out, int C, double eps) {
    long long row = blockIdx.x;
    const T* xr = x + row * C;
    T* yr = y + row * C;
    acc_t s = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += (acc_t)xr[i];
    acc_t mean = block_reduce(s, false) / C;
    acc_t v = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) { acc_t d = (acc_t)xr[i] - mean; v += d * d; }
    acc_t rstd = (acc_t)1 / sqrt(block_reduce(v, false) / C + (acc_t)eps);
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        acc_t h = ((acc_t)xr[i] - mean) * rstd;
        yr[i] = (T)(h * (acc_t)w[i] + (acc_t)b[i]);
    }
    if (threadIdx.x == 0) { mean_out[row] = (T)mean; rstd_out[row] = (T)rstd; }
}

extern "C" __global__ void layer_norm_bwd(const T* gy, const T* x, const T* w, const T* mean,
                                          const T* rstd, T* gx, int C) {
    long long row = blockIdx.x;
    const T* g = gy + row * C;
    const T* xr = x + row * C;
    acc_t mu = mean[row], r = rstd[row];
    acc_t a = 0, bsum = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        acc_t gw = (acc_t)g[i] * (acc_t)w[i];
        a += gw;
        bsum += gw * ((acc_t)xr[i] - mu) * r;
    }
    a = block_reduce(a, false) / C;
    bsum = block_reduce(bsum, false) / C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        acc_t h = ((acc_t)xr[i] - mu) * r;
        gx[row * C + i] = (T)(r * ((acc_t)g[i] * (acc_t)w[i] - a - h * bsum));
    }
}
"""

_CROSS_ENTROPY = r"""
extern "C" __global__ void ce_fwd(const T* logits, const long long* targets, T* loss, T* lse_out,
                                  int C, long long ignore_index, double smoothing) {
    long long row = blockIdx.x;
    const T* l = logits + row * C;
    acc_t m = NEG_INF;
    for (int i = threadIdx.x; i < C; i += blockDim.x) m = max(m, (acc_t)l[i]);
    m = block_reduce(m, true);
    acc_t s = 0, total = 0;
    for (int i = threadIdx.x; i < C; i += blockDim.x) { s += exp((acc_t)l[i] - m); total += l[i]; }
    s = block_reduce(s, false);
    total = block_reduce(total, false);
    if (threadIdx.x == 0) {
        acc_t lse = m + log(s);
        long long t = targets[row];
        acc_t out = 0;
        if (t != ignore_index) {
            out = (1 - (acc_t)smoothing) * (lse - (acc_t)l[t]);
            if (smoothing != 0) out -= (acc_t)smoothing / C * (total - C * lse);
        }
        loss[row] = (T)out;
        lse_out[row] = (T)lse;
    }
}

extern "C" __global__ void ce_bwd(const T* logits, const long long* targets, const T* lse,
                                  const T* scale, T* g, long long n, int C,
                                  long long ignore_index, double smoothing) {
    for (long long k = blockIdx.x * (long long)blockDim.x + threadIdx.x; k < n * C;
         k += (long long)gridDim.x * blockDim.x) {
        long long row = k / C;
        int col = k % C;
        long long t = targets[row];
        if (t == ignore_index) { g[k] = 0; continue; }
        acc_t p = exp((acc_t)logits[k] - (acc_t)lse[row]);
        acc_t v = p - (acc_t)smoothing / C - (col == t ? 1 - (acc_t)smoothing : 0);
        g[k] = (T)(v * (acc_t)scale[0]);
    }
}
"""

_SOFTMAX = r"""
// In place: scores (rows, Tk) -> probabilities; causal hides key j > query (row % Tq) + offset.
extern "C" __global__ void masked_softmax(T* s, int Tq, int Tk, int causal, int offset) {
    long long row = blockIdx.x;
    T* r = s + row * Tk;
    int limit = causal ? (int)(row % Tq) + offset : Tk - 1;
    acc_t m = NEG_INF;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) if (j <= limit) m = max(m, (acc_t)r[j]);
    m = block_reduce(m, true);
    acc_t total = 0;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x)
        if (j <= limit) total += exp((acc_t)r[j] - m);
    total = block_reduce(total, false);
    for (int j = threadIdx.x; j < Tk; j += blockDim.x)
        r[j] = j <= limit ? (T)(exp((acc_t)r[j] - m) / total) : (T)0;
}

// In place: gp (rows, Tk) -> scale * p * (gp - sum(gp * p)), the gradient of the scores.
extern "C" __global__ void softmax_bwd(const T* p, T* gp, int Tk, double scale) {
    long long row = blockIdx.x;
    const T* pr = p + row * Tk;
    T* gr = gp + row * Tk;
    acc_t inner = 0;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) inner += (acc_t)gr[j] * (acc_t)pr[j];
    inner = block_reduce(inner, false);
    for (int j = threadIdx.x; j < Tk; j += blockDim.x)
        gr[j] = (T)((acc_t)scale * (acc_t)pr[j] * ((acc_t)gr[j] - inner));
}
"""


def enabled() -> bool:
    return os.environ.get("MINIGRAD_CUDA_KERNELS", "1") != "0"


def _cp():
    import cupy
    return cupy


@functools.lru_cache(maxsize=None)
def _module(source: str, dtype: str):
    """Compile `source` for one dtype (float32 accumulates in float, float64 in double)."""
    cp = _cp()
    ctype = {"float32": "float", "float64": "double"}[dtype]
    prelude = _PRELUDE.replace("__TYPE__", ctype).replace("__ACC__", ctype)
    return cp.RawModule(code=prelude + source)


def _kernel(source: str, name: str, dtype):
    return _module(source, np.dtype(dtype).name).get_function(name)


def supports(name: str, *arrays) -> bool:
    """The fused kernels (every `name`) handle non-empty contiguous float32/float64 arrays."""
    return enabled() and all(a.dtype in (np.float32, np.float64) and a.flags.c_contiguous
                             and a.size for a in arrays)


# ---- LayerNorm ------------------------------------------------------------------------------

def layer_norm_forward(x2, w, b, eps):
    """(N, C) rows -> y and the saved (mean (N,), rstd (N,)); b may be None."""
    cp = _cp()
    b = cp.zeros_like(w) if b is None else b
    n, c = x2.shape
    y = cp.empty_like(x2)
    mean, rstd = cp.empty(n, x2.dtype), cp.empty(n, x2.dtype)
    _kernel(_LAYER_NORM, "layer_norm_fwd", x2.dtype)(
        (n,), (_BLOCK,), (x2, w, b, y, mean, rstd, np.int32(c), np.float64(eps)))
    calls["layer_norm_fwd"] += 1
    return y, (mean, rstd)


def layer_norm_backward(gy2, x2, w, saved):
    """Gradients (gx, gw, gb) of layer_norm_forward."""
    cp = _cp()
    mean, rstd = saved
    gy2 = cp.ascontiguousarray(gy2)  # the upstream gradient may be a broadcast view
    n, c = x2.shape
    gx = cp.empty_like(x2)
    _kernel(_LAYER_NORM, "layer_norm_bwd", x2.dtype)(
        (n,), (_BLOCK,), (gy2, x2, w, mean, rstd, gx, np.int32(c)))
    xhat = (x2 - mean[:, None]) * rstd[:, None]
    calls["layer_norm_bwd"] += 1
    ones = cp.ones(n, dtype=x2.dtype)  # column sums as cuBLAS GEMVs: CuPy's axis-0 sum is slow
    return gx, ones @ (gy2 * xhat), ones @ gy2


# ---- softmax + cross-entropy ----------------------------------------------------------------

def cross_entropy_forward(logits, targets, ignore_index, smoothing):
    """Per-row losses and log-sum-exps of (N, C) logits."""
    cp = _cp()
    n, c = logits.shape
    loss, lse = cp.empty(n, logits.dtype), cp.empty(n, logits.dtype)
    _kernel(_CROSS_ENTROPY, "ce_fwd", logits.dtype)(
        (n,), (_BLOCK,), (logits, targets.astype(cp.int64, copy=False), loss, lse, np.int32(c),
                          np.int64(ignore_index), np.float64(smoothing)))
    calls["ce_fwd"] += 1
    return loss, lse


def cross_entropy_backward(logits, targets, lse, scale, ignore_index, smoothing):
    """d loss / d logits with a device scalar `scale` (no host synchronisation)."""
    cp = _cp()
    n, c = logits.shape
    g = cp.empty_like(logits)
    blocks = min((n * c + _BLOCK - 1) // _BLOCK, 65535)
    _kernel(_CROSS_ENTROPY, "ce_bwd", logits.dtype)(
        (blocks,), (_BLOCK,), (logits, targets.astype(cp.int64, copy=False), lse,
                               scale.astype(logits.dtype).reshape(1), g, np.int64(n),
                               np.int32(c), np.int64(ignore_index), np.float64(smoothing)))
    calls["ce_bwd"] += 1
    return g


# ---- softmax over rows, attention softmax ---------------------------------------------------

def softmax_forward(x2):
    """Softmax of each row of (N, C)."""
    return masked_softmax_(x2.copy(), causal=False)


def softmax_backward(gy2, y):
    """gx = y (gy - sum(gy y)) row by row."""
    return softmax_backward_(y, gy2.copy(), 1.0)


def masked_softmax_(scores, causal: bool, offset: int = 0):
    """Softmax over the last axis of contiguous (..., Tq, Tk) scores, in place, causal or not."""
    tq, tk = scores.shape[-2:]
    rows = scores.size // tk
    _kernel(_SOFTMAX, "masked_softmax", scores.dtype)(
        (rows,), (min(_BLOCK, max(32, (tk + 31) // 32 * 32)),),
        (scores, np.int32(tq), np.int32(tk), np.int32(causal), np.int32(offset)))
    calls["masked_softmax"] += 1
    return scores


def softmax_backward_(p, gp, scale: float):
    """gp <- scale * p * (gp - sum(gp * p)) row by row, in place."""
    tk = p.shape[-1]
    _kernel(_SOFTMAX, "softmax_bwd", p.dtype)(
        (p.size // tk,), (min(_BLOCK, max(32, (tk + 31) // 32 * 32)),),
        (p, gp, np.int32(tk), np.float64(scale)))
    calls["softmax_bwd"] += 1
    return gp


# ---- elementwise: GELU, AdamW ---------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _gelu_kernels():
    cp = _cp()
    fwd = cp.ElementwiseKernel(
        "T x", "T y, T d",
        f"T u = (T){-2 * SQRT_2_OVER_PI!r} * (x + (T){GELU_C!r} * x * x * x);"
        "d = exp(min(u, (T)80)) + (T)1; y = x / d;",
        "minigrad_gelu_tanh_fwd")
    bwd = cp.ElementwiseKernel(
        "T gy, T x, T d", "T gx",
        "T s = (T)1 / d;"
        f"gx = gy * (s + x * s * ((T)1 - s) * (T){2 * SQRT_2_OVER_PI!r}"
        f" * ((T)1 + (T){3 * GELU_C!r} * x * x));",
        "minigrad_gelu_tanh_bwd")
    return fwd, bwd


def gelu_tanh_forward(x):
    """y = x / (1 + exp(-2u)) and the saved denominator d."""
    calls["gelu_fwd"] += 1
    return _gelu_kernels()[0](x)


def gelu_tanh_backward(gy, x, d):
    calls["gelu_bwd"] += 1
    return _gelu_kernels()[1](gy, x, d)


@functools.lru_cache(maxsize=None)
def _adam_kernel():
    cp = _cp()
    return cp.ElementwiseKernel(
        "T g, T lr, T b1, T b2, T eps, T wd, T bc1, T bc2, int32 decoupled",
        "T p, T m, T v",
        "T grad = g;"
        "if (decoupled) { p = p * ((T)1 - lr * wd); } else { grad = g + wd * p; }"
        "m = b1 * m + ((T)1 - b1) * grad;"
        "v = b2 * v + ((T)1 - b2) * grad * grad;"
        "p = p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps);",
        "minigrad_adam_update")


def adam_update_(p, g, m, v, lr, b1, b2, eps, wd, step, decoupled: bool, scratch=None):
    """One Adam/AdamW step over whole flat buffers in a single pass (p, m, v in place); the
    fused kernel needs no temporary, so `scratch` (cpu.py's signature) goes unused."""
    t = p.dtype.type
    _adam_kernel()(g, t(lr), t(b1), t(b2), t(eps), t(wd), t(1 - b1 ** step), t(1 - b2 ** step),
                   np.int32(decoupled), p, m, v)
    calls["adam"] += 1
