"""The CPU kernels' compiled loops (backend/kernels/compiled.py) where the op registry's checks
(tests/engine/test_op_registry.py: each kernel against its reference, gradchecks through the
default path) cannot see a bug: the causal limits and offsets of the attention softmax, rows
of -inf, NaN and huge values, and the dtypes that fall back to NumPy's passes."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigrad_lm.backend.kernels import cpu


@pytest.fixture(autouse=True)
def default_kernels(monkeypatch):
    monkeypatch.delenv("MINIGRAD_CPU_KERNELS", raising=False)


def numpy_passes(monkeypatch, fn):
    """fn() with the kernels' NumPy passes instead of their compiled loops."""
    monkeypatch.setenv("MINIGRAD_CPU_KERNELS", "numpy")
    try:
        return fn()
    finally:
        monkeypatch.delenv("MINIGRAD_CPU_KERNELS")


def test_the_compiled_loops_are_the_default_for_float32_and_float64():
    assert cpu.mode() == "compiled"
    for dtype in (np.float32, np.float64):
        assert cpu.compiled_loops(np.zeros(3, dtype), np.zeros(2, dtype)) is not None
    assert cpu.compiled_loops(np.zeros(3, np.float16)) is None
    assert cpu.compiled_loops(np.zeros(3, np.float32), np.zeros(3, np.float64)) is None
    assert cpu.supports("masked_softmax_", np.zeros((2, 3), np.float32))
    assert not cpu.supports("masked_softmax_", np.zeros((3, 2), np.float32).T)


def reference_softmax(scores, visible):
    """Softmax over the visible entries of each row (0 elsewhere; a row with none is 0)."""
    s = np.where(visible, scores, -np.inf)
    top = s.max(axis=-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(top), top, 0))
    total = e.sum(axis=-1, keepdims=True)
    return e / np.where(total == 0, 1, total)


@settings(max_examples=40, deadline=None)
@given(tq=st.integers(1, 6), tk=st.integers(1, 9), offset=st.integers(0, 4),
       causal=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_masked_softmax_sees_each_query_s_keys(tq, tk, offset, causal, dtype, seed):
    """Query row r sees keys 0..r+offset when causal (all of them otherwise): the hidden keys
    get exactly 0, the visible ones the softmax over them alone."""
    scores = (np.random.default_rng(seed).standard_normal((2, 3, tq, tk)) * 4).astype(dtype)
    visible = np.ones((tq, tk), bool)
    if causal:
        visible = np.arange(tk)[None, :] <= np.arange(tq)[:, None] + offset
    want = reference_softmax(scores.astype(np.float64), visible)
    got = cpu.masked_softmax_(scores.copy(), causal, offset)
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-7 if dtype == np.float32 else 1e-15)
    assert (got[..., ~visible] == 0).all()


def test_softmax_of_rows_of_minus_infinity_is_zero_and_nan_propagates():
    scores = np.array([[[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 1.0],
                        [np.nan, 0.0, 1.0]]], np.float32)
    got = cpu.masked_softmax_(scores.copy(), False)
    np.testing.assert_array_equal(got[0, 0], [0, 0, 0])
    np.testing.assert_allclose(got[0, 1], [1 / (1 + np.e), 0, np.e / (1 + np.e)], rtol=1e-6)
    assert np.isnan(got[0, 2]).all()


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 5), cols=st.integers(1, 9), scale=st.floats(0.1, 3.0),
       seed=st.integers(0, 2**16))
def test_softmax_backward_in_place(rows, cols, scale, seed):
    rng = np.random.default_rng(seed)
    p = reference_softmax(rng.standard_normal((rows, cols)), np.ones(cols, bool))
    gp = rng.standard_normal((rows, cols))
    want = scale * p * (gp - (gp * p).sum(axis=-1, keepdims=True))
    got = cpu.softmax_backward_(p, gp.copy(), scale)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_layer_norm_keeps_a_nan_row_to_itself(monkeypatch):
    """No fast-math flag assumes finite values: a NaN spoils its own row, as in NumPy."""
    x = np.random.default_rng(0).standard_normal((4, 37)).astype(np.float32)
    x[2, 5] = np.nan
    w, b = np.full(37, 1.5, np.float32), np.full(37, 0.25, np.float32)
    y, _ = cpu.layer_norm_forward(x, w, b, 1e-5)
    assert np.isnan(y[2]).all() and np.isfinite(np.delete(y, 2, axis=0)).all()
    y_numpy, _ = numpy_passes(monkeypatch, lambda: cpu.layer_norm_forward(x, w, b, 1e-5))
    np.testing.assert_allclose(y, y_numpy, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_backward_recomputes_xhat_on_either_path(monkeypatch, dtype):
    """The compiled forward keeps the row means, not xhat: its backward, and the NumPy
    passes' backward given what it kept, both match the NumPy passes end to end."""
    rng = np.random.default_rng(1)
    x, gy = (rng.standard_normal((9, 37)).astype(dtype) * 3 + 1 for _ in range(2))
    w, b = rng.standard_normal(37).astype(dtype), rng.standard_normal(37).astype(dtype)
    _, saved = cpu.layer_norm_forward(x, w, b, 1e-5)
    assert saved[0] is None and saved[1].shape == (9, 1)
    compiled = cpu.layer_norm_backward(gy, x, w, saved)
    mixed = numpy_passes(monkeypatch, lambda: cpu.layer_norm_backward(gy, x, w, saved))
    want = numpy_passes(monkeypatch, lambda: cpu.layer_norm_backward(
        gy, x, w, cpu.layer_norm_forward(x, w, b, 1e-5)[1]))
    tol = 1e-12 if dtype == np.float64 else 1e-4
    for got in (compiled, mixed):
        for a, e in zip(got, want):
            np.testing.assert_allclose(a, e, rtol=tol, atol=tol)


def test_gelu_of_huge_and_tiny_inputs_matches_the_numpy_passes(monkeypatch):
    """The exponent is capped before exp (as in the NumPy passes): no inf/inf for large
    negative inputs, x itself for large positive ones."""
    x = np.array([-1e4, -100.0, -10.0, -1e-3, 0.0, 1e-3, 10.0, 100.0, 1e4], np.float32)
    gy = np.ones_like(x)
    y, d = cpu.gelu_tanh_forward(x)
    y_numpy, d_numpy = numpy_passes(monkeypatch, lambda: cpu.gelu_tanh_forward(x))
    np.testing.assert_allclose(y, y_numpy, rtol=1e-6, atol=1e-30)
    assert y[-1] == 1e4 and abs(y[0]) < 1e-20 and np.isfinite(d).all()
    np.testing.assert_allclose(cpu.gelu_tanh_backward(gy, x, d),
                               numpy_passes(monkeypatch,
                                            lambda: cpu.gelu_tanh_backward(gy, x, d_numpy)),
                               rtol=1e-6, atol=1e-30)


def test_float16_arrays_take_the_numpy_passes(monkeypatch):
    x = np.linspace(-3, 3, 11).astype(np.float16)
    y, _ = cpu.gelu_tanh_forward(x)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, numpy_passes(monkeypatch, lambda: cpu.gelu_tanh_forward(x))[0])


@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
def test_embedding_backward_adds_up_repeated_ids(monkeypatch, id_dtype):
    rng = np.random.default_rng(0)
    ids = np.array([3, 0, 3, 3, 5, 0], id_dtype)
    gy = rng.standard_normal((6, 4)).astype(np.float32)
    want = np.zeros((7, 4), np.float32)
    np.add.at(want, ids, gy)
    got = cpu.embedding_backward(gy, ids, (7, 4))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert not got[[1, 2, 4, 6]].any()
    np.testing.assert_allclose(
        numpy_passes(monkeypatch, lambda: cpu.embedding_backward(gy, ids, (7, 4))), want,
        rtol=1e-6)
