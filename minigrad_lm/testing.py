"""Public hypothesis strategies for checking functions built on minigrad_lm.

    from hypothesis import given
    from .testing import arrays, shapes
    @given(arrays(shapes(max_dims=3)))
    def test_my_op(x): assert mg.gradcheck(my_op, [mg.tensor(x)])

hypothesis is a test dependency (`pip install -e ".[test]"`), imported only by this module.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1,
           max_side: int = 4) -> st.SearchStrategy[tuple]:
    """Array shapes, including 0-d and size-1 dimensions."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def broadcastable_pairs(min_dims: int = 0, max_dims: int = 3,
                        max_side: int = 4) -> st.SearchStrategy[tuple[tuple, tuple]]:
    """Two shapes that broadcast together (size-1 and missing leading dimensions mixed in)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=min_dims, max_dims=max_dims,
                                             max_side=max_side).map(lambda s: s.input_shapes)


def arrays(shape, dtype=np.float64, low: float = -2.0, high: float = 2.0,
           distinct: bool = False) -> st.SearchStrategy[np.ndarray]:
    """Well-conditioned float arrays: finite, bounded, and (optionally) without ties.

    `shape` is a tuple or a strategy of tuples. Use distinct=True for functions whose gradient is
    undefined at ties (max, min, maximum, abs near 0 ...).
    """
    if distinct:
        shape_st = shape if isinstance(shape, st.SearchStrategy) else st.just(shape)
        return shape_st.flatmap(lambda s: st.integers(0, 2**32 - 1).map(
            lambda seed: _distinct(s, seed, low, high, dtype)))
    elements = st.floats(low, high, allow_nan=False, allow_infinity=False, width=64)
    return hnp.arrays(dtype, shape, elements=elements)


def _distinct(shape: tuple, seed: int, low: float, high: float, dtype) -> np.ndarray:
    """Values spread evenly over [low, high] in a random order: no two closer than the spacing."""
    n = int(np.prod(shape, dtype=np.int64))
    rng = np.random.default_rng(seed)
    values = np.linspace(low, high, max(n, 1))[:n] + rng.uniform(-0.01, 0.01, n)
    return rng.permutation(values).reshape(shape).astype(dtype)


def separated_arrays(shape, offset: float = 0.0) -> st.SearchStrategy[np.ndarray]:
    """Values on the grid offset + k/2 (|k| <= 4): two arrays with offsets 0 and 0.25 never tie,
    which is what functions like maximum(a, b) need for a defined gradient."""
    return hnp.arrays(np.float64, shape, elements=st.integers(-4, 4).map(lambda k: offset + k / 2))


def positive_arrays(shape, low: float = 0.2, high: float = 3.0):
    """Arrays bounded away from 0, for log, sqrt, division and powers."""
    return arrays(shape, low=low, high=high)


def axes(ndim: int, allow_none: bool = True, allow_tuple: bool = True) -> st.SearchStrategy:
    """Valid axis arguments for a tensor of `ndim` dimensions: int (maybe negative), None, tuple."""
    if ndim == 0:
        return st.none()
    options = [st.integers(-ndim, ndim - 1)]
    if allow_none:
        options.append(st.none())
    if allow_tuple:
        options.append(st.lists(st.integers(0, ndim - 1), unique=True, min_size=1,
                                max_size=ndim).map(tuple))
    return st.one_of(*options)


@st.composite
def shape_and_axis(draw, min_dims: int = 1, max_dims: int = 3, max_side: int = 4,
                   multiple: bool = True):
    """(shape, axis) with an axis valid for the shape; multiple=False gives a single int."""
    shape = draw(shapes(min_dims=min_dims, max_dims=max_dims, max_side=max_side))
    return shape, draw(axes(len(shape), allow_none=multiple, allow_tuple=multiple))


@st.composite
def line_files(draw, words: tuple[str, ...], max_lines: int = 6
               ) -> tuple[list[str], bytes]:
    """(the lines a reader must see, the bytes of a file holding them): lines of ``words`` and
    blank ones, joined by LF, CRLF or CR, with or without a BOM and a final line ending, gzipped
    or not. A line-in/line-out tool prints one line per entry of the list."""
    import gzip

    blank = st.sampled_from(["", " ", "\t", "  \t "])
    text = st.lists(st.sampled_from(words), min_size=1, max_size=5).map(" ".join)
    lines = draw(st.lists(text | blank, min_size=1, max_size=max_lines))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    final = draw(st.booleans()) or lines[-1] == ""  # a last empty line needs its ending
    raw = (("\ufeff" if draw(st.booleans()) else "") + ending.join(lines)
           + (ending if final else "")).encode("utf-8")
    return lines, gzip.compress(raw) if draw(st.booleans()) else raw
