"""ALiBi, attention with linear biases (Press et al. 2022): instead of position vectors added to
the tokens, each head h subtracts slope_h x |i - j| from the score of query i for key j.

Every head prefers near keys from the first step, with its own reach: the slopes fall
geometrically, 2^(-8/H), 2^(-16/H), ..., 2^(-8), so the first head looks a few tokens around
and the last across hundreds. A body trained on a few thousand examples gets locality for
free instead of learning it through position vectors (SQuAD's answers stand beside the
question's words). Causal attention sees only j <= i, where the bias is Press et al.'s
-slope_h (i - j); a bidirectional body uses the same distance on both sides.
"""
from __future__ import annotations

import numpy as np


def alibi_slopes(n_heads: int) -> np.ndarray:
    """The heads' slopes, 2^(-8 h / n_heads) for h = 1..n_heads (float64)."""
    return 2.0 ** (-8.0 * np.arange(1, n_heads + 1) / n_heads)


def alibi_bias(xp, n_heads: int, queries: slice, keys: slice, offset: int, dtype):
    """The (n_heads, queries, keys) biases -slope_h |(offset + i) - j| for query rows
    ``queries`` (positions counted from ``offset``, the first query's place among the keys)
    and key columns ``keys``."""
    i = np.arange(queries.start, queries.stop)[:, None] + offset
    j = np.arange(keys.start, keys.stop)[None, :]
    bias = -alibi_slopes(n_heads)[:, None, None] * np.abs(i - j)
    return xp.asarray(bias.astype(dtype))
