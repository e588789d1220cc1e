"""Array functions NumPy or CuPy lack, or do slowly, written once for both.
"""
from __future__ import annotations

from types import ModuleType

import numpy as np


def out_of_range(ids, n: int) -> int | None:
    """An id of `ids` outside [0, n), or None. Checked where the ids live: host ids need no GPU
    synchronisation, and CuPy would not raise on an out-of-range gather."""
    if not ids.size:
        return None
    lo, hi = int(ids.min()), int(ids.max())
    return hi if hi >= n else lo if lo < 0 else None


def scatter_add(xp: ModuleType, target, index, values) -> None:
    """target[index] += values, correct when `index` repeats (add.at on either backend)."""
    xp.add.at(target, index, values)


def index_add_rows(xp: ModuleType, target, index, rows) -> None:
    """target[index[i]] += rows[i] for a 1-D integer index with repeats (embedding backward).

    On NumPy, sorting the ids and summing each run with add.reduceat is ~4x faster than
    np.add.at; CuPy's scatter_add is a single atomic-add kernel already.
    """
    if xp is not np:
        scatter_add(xp, target, index, rows)
        return
    if index.size == 0:
        return
    order = np.argsort(index, kind="stable")
    ids = index[order]
    starts = np.flatnonzero(np.concatenate(([True], ids[1:] != ids[:-1])))
    target[ids[starts]] += np.add.reduceat(rows[order], starts, axis=0)


# erf: NumPy has none, and gelu(approximate="none") needs it to float64 accuracy for gradcheck.
# Rational approximations with the published coefficients of Cephes' ndtr.c (S. L. Moshier).
_ERF_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
          7.00332514112805075473e3, 5.55923013010394962768e4)
_ERF_U = (1.0, 3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
          2.26290000613890934246e4, 4.92673942608635921086e4)
_ERFC_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
           4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
           9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)
_ERFC_Q = (1.0, 1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
           9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
           1.65666309194161350182e3, 5.57535340817727675546e2)
_ERFC_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0,
           6.16021097993053585195e0, 7.40974269950448939160e0, 2.97886665372100240670e0)
_ERFC_S = (1.0, 2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1,
           1.70814450747565897222e1, 9.60896809063285878198e0, 3.36907645100081516050e0)


def _poly(coeffs, x):
    """Horner evaluation, highest power first."""
    acc = np.full_like(x, coeffs[0])
    for c in coeffs[1:]:
        acc *= x
        acc += c
    return acc


def erf(xp: ModuleType, x):
    """Elementwise error function to ~1e-15 relative accuracy, on either backend."""
    if xp is not np:
        import cupyx.scipy.special
        return cupyx.scipy.special.erf(x)
    x64 = x.astype(np.float64, copy=False)
    a = np.abs(x64)
    small = np.minimum(a, 1.0)
    z = small * small
    inner = small * _poly(_ERF_T, z) / _poly(_ERF_U, z)
    big = np.maximum(a, 1.0)
    mid = _poly(_ERFC_P, big) / _poly(_ERFC_Q, big)
    tail = _poly(_ERFC_R, big) / _poly(_ERFC_S, big)
    erfc = np.exp(-big * big) * np.where(big < 8.0, mid, tail)
    out = np.where(a <= 1.0, inner, 1.0 - erfc)
    return np.copysign(out, x64).astype(x.dtype, copy=False)
