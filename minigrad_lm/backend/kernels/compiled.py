"""Numba-compiled loops behind kernels/cpu.py: one pass over the data where NumPy needs several.

A NumPy LayerNorm reads and writes its rows six or seven times (mean, subtract, square, mean,
scale, weight, bias), each pass a separate ufunc call; a loop compiled by Numba does it in two
reads and one write, with the row in cache. The loops are plain (no `parallel=`): cpu.py runs
them on chunks of rows in its own threads (backend/threads.py), which they share because they
release the GIL (`nogil`). Exponentials stay NumPy's: its vectorised `exp` is faster than a
compiled loop's scalar one, so the softmax and GELU run a compiled pass, NumPy's exp, then a
compiled pass.

Every scalar comes in as a NumPy scalar of the arrays' dtype (cpu.py casts them), so float32
loops stay float32 (a Python float would promote them to float64 and stop vectorisation).
`reassoc` lets LLVM vectorise the row sums; no flag assumes finite values, so -inf (masked
scores) and NaN propagate as in NumPy, and division by zero gives inf as in NumPy
(`error_model="numpy"`). This module imports Numba: cpu.py imports it at the
first kernel call, never at `import minigrad_lm`.
"""
from __future__ import annotations

import os

import numpy as np

# Numba colours its error messages with colorama, whose exit handler then writes a terminal
# reset code to a terminal's stdout after the program's own last line; highlighting is off while
# Numba is imported (the only time it reads the variable), and the environment is left as it was.
_HIGHLIGHTING = "NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING"
_set_here = _HIGHLIGHTING not in os.environ
os.environ.setdefault(_HIGHLIGHTING, "1")
try:
    import numba
finally:
    if _set_here:
        del os.environ[_HIGHLIGHTING]

FASTMATH = {"reassoc", "contract", "nsz"}


def _compile(fn):
    return numba.njit(nogil=True, cache=True, fastmath=FASTMATH, error_model="numpy")(fn)


@_compile
def layer_norm_rows(x, w, b, eps, inv_c, one, y, mean, rstd):
    """y = (x - mean) rstd w + b, rstd = 1/sqrt(var + eps), for each row of x; the row's mean
    and rstd are kept for backward, which recomputes xhat from x rather than reading it."""
    zero = one - one
    for i in range(x.shape[0]):
        total = zero
        for j in range(x.shape[1]):
            total += x[i, j]
        m = total * inv_c
        squares = zero
        for j in range(x.shape[1]):
            d = x[i, j] - m
            squares += d * d
        r = one / np.sqrt(squares * inv_c + eps)
        mean[i] = m
        rstd[i] = r
        for j in range(x.shape[1]):
            y[i, j] = (x[i, j] - m) * r * w[j] + b[j]


@_compile
def layer_norm_backward_rows(gy, x, mean, rstd, w, inv_c, gx, gw, gb):
    """gx = rstd (g - mean(g) - xhat mean(g xhat)), g = gy w, xhat = (x - mean) rstd, for
    each row; the rows' parts of the column sums gw += gy xhat and gb += gy."""
    zero = inv_c - inv_c
    for i in range(gy.shape[0]):
        m = mean[i]
        r = rstd[i]
        mean_g = zero
        mean_gx = zero
        for j in range(gy.shape[1]):
            h = (x[i, j] - m) * r
            g = gy[i, j] * w[j]
            mean_g += g
            mean_gx += g * h
            gw[j] += gy[i, j] * h
            gb[j] += gy[i, j]
        mean_g *= inv_c
        mean_gx *= inv_c
        for j in range(gy.shape[1]):
            h = (x[i, j] - m) * r
            gx[i, j] = r * (gy[i, j] * w[j] - mean_g - h * mean_gx)


@_compile
def add_row_vector(y, b):
    """y[i] += b for each row i of y."""
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            y[i, j] += b[j]


@_compile
def add_rows_at(target, index, rows):
    """target[index[i]] += rows[i] for each i, in order (repeated ids add up)."""
    for i in range(index.shape[0]):
        t = index[i]
        for j in range(rows.shape[1]):
            target[t, j] += rows[i, j]


@_compile
def gelu_exponent(x, a, c, cap, d):
    """d = min(a (x + c x^3), cap): with a = -2 sqrt(2/pi), the -2u whose exp GELU needs."""
    for i in range(x.shape[0]):
        xi = x[i]
        d[i] = min(a * (xi + c * xi * xi * xi), cap)


@_compile
def gelu_divide(x, one, d, y):
    """d = 1 + exp(-2u) (d holds exp(-2u)), y = x / d."""
    for i in range(x.shape[0]):
        di = d[i] + one
        d[i] = di
        y[i] = x[i] / di


@_compile
def gelu_backward_loop(gy, x, d, one, k0, k1, g):
    """g = gy (s + x s (1 - s) (k0 + k1 x^2)), s = 1/d; k0 + k1 x^2 = 2 du/dx."""
    for i in range(x.shape[0]):
        s = one / d[i]
        xi = x[i]
        g[i] = gy[i] * (s + xi * s * (one - s) * (k0 + k1 * xi * xi))


@_compile
def adam_loop(p, g, m, v, b1, c1, b2, c2, step_size, eps, decay, l2):
    """One Adam step in place: m, v moving averages (c1 = 1 - b1, c2 = 1 - b2) of g + l2 p,
    p <- p decay - step_size m / (sqrt(v) + eps)."""
    for i in range(p.shape[0]):
        gi = g[i] + l2 * p[i]
        mi = m[i] * b1 + gi * c1
        vi = v[i] * b2 + gi * gi * c2
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - mi / (np.sqrt(vi) + eps) * step_size


@numba.njit(nogil=True, fastmath=FASTMATH, error_model="numpy", inline="always")
def _row_max(s, r, n, neg_inf):
    """The largest of s[r, :n] (-inf for n = 0), by four independent running maxima: a
    compiled max is not vectorised (that would assume no NaN), and one running maximum waits
    on the previous comparison at every element."""
    a0 = a1 = a2 = a3 = neg_inf
    j = 0
    while j + 4 <= n:
        a0 = max(a0, s[r, j])
        a1 = max(a1, s[r, j + 1])
        a2 = max(a2, s[r, j + 2])
        a3 = max(a3, s[r, j + 3])
        j += 4
    while j < n:
        a0 = max(a0, s[r, j])
        j += 1
    return max(max(a0, a1), max(a2, a3))


@_compile
def softmax_shift_rows(x, out, tq, causal, offset, zero, neg_inf):
    """out <- x - (the max over the keys row r sees) for each row r of (rows, tk) scores; the
    keys it does not see (j > r % tq + offset, when causal) <- -inf, which exp makes 0. A row
    with no finite maximum is shifted by 0, as the reference does. `out` may be `x`."""
    tk = x.shape[1]
    for r in range(x.shape[0]):
        n = min(tk, r % tq + offset + 1) if causal else tk
        top = _row_max(x, r, n, neg_inf)
        if not np.isfinite(top):
            top = zero
        for j in range(n):
            out[r, j] = x[r, j] - top
        for j in range(n, tk):
            out[r, j] = neg_inf


@_compile
def normalize_rows(s, one):
    """s <- s / (the row's sum) for each row of exponentials; a row that sums to 0 stays 0."""
    for r in range(s.shape[0]):
        total = one - one
        for j in range(s.shape[1]):
            total += s[r, j]
        scale = one / total if total != 0 else one
        for j in range(s.shape[1]):
            s[r, j] *= scale


@_compile
def softmax_backward_rows(p, gp, scale):
    """gp <- scale p (gp - sum(gp p)) for each row, in place."""
    for r in range(p.shape[0]):
        inner = scale - scale
        for j in range(p.shape[1]):
            inner += gp[r, j] * p[r, j]
        for j in range(p.shape[1]):
            gp[r, j] = scale * p[r, j] * (gp[r, j] - inner)
