"""Ops whose checks need more than the op registry's rows (tests/engine/op_registry.py): axes
and keepdims of reductions, shapes and indexing, broadcasting, and gradients at ties and limits.
Inputs are drawn by hypothesis over shapes (0-d and size-1 included), axes and values.
"""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm.testing import (
    arrays,
    broadcastable_pairs,
    shape_and_axis,
    shapes,
)
from tests.helpers import T, check_op


REDUCTIONS = [
    ("sum", lambda x, ax, kd: x.sum(ax, kd), lambda x, ax, kd: x.sum(ax, keepdims=kd), False),
    ("mean", lambda x, ax, kd: x.mean(ax, kd), lambda x, ax, kd: x.mean(ax, keepdims=kd), False),
    ("max", lambda x, ax, kd: x.max(ax, kd), lambda x, ax, kd: x.max(ax, keepdims=kd), True),
    ("min", lambda x, ax, kd: x.min(ax, kd), lambda x, ax, kd: x.min(ax, keepdims=kd), True),
    ("var", lambda x, ax, kd: x.var(ax, kd), lambda x, ax, kd: x.var(ax, keepdims=kd), False),
    ("std", lambda x, ax, kd: x.std(ax, kd), lambda x, ax, kd: x.std(ax, keepdims=kd), True),
    ("logsumexp", lambda x, ax, kd: x.logsumexp(ax, kd),
     lambda x, ax, kd: np.log(np.exp(x).sum(ax, keepdims=kd)), False),
]


@pytest.mark.parametrize("name,fn,ref,distinct", REDUCTIONS, ids=[r[0] for r in REDUCTIONS])
@given(sa=shape_and_axis(min_dims=0), keepdims=st.booleans(), data=st.data())
def test_reductions(device, name, fn, ref, distinct, sa, keepdims, data):
    shape, axis = sa
    x = data.draw(arrays(shape, distinct=distinct))
    if name == "std":  # the std of a single element has an infinite gradient
        reduced = range(len(shape)) if axis is None else (axis,) if isinstance(axis, int) else axis
        assume(np.prod([shape[a] for a in reduced]) > 1)
    check_op(lambda t: fn(t, axis, keepdims), lambda a: ref(a, axis, keepdims), [x], device)


def test_softmax_is_stable_for_huge_logits(device):
    x = mg.tensor(np.array([[1e4, 0.0, -1e4]], dtype=np.float32), device=device)
    assert np.isfinite(mg.softmax(x).numpy()).all()
    assert np.isfinite(mg.log_softmax(x).numpy()).all()
    assert np.isfinite(mg.logsumexp(x, 1).numpy()).all()


@st.composite
def reshape_case(draw):
    shape = draw(shapes(min_dims=0))
    size = int(np.prod(shape))
    divisors = [d for d in range(1, size + 1) if size % d == 0]
    first = draw(st.sampled_from(divisors))
    target = draw(st.sampled_from([(first, size // first), (size,), (-1,), (first, -1)]))
    return shape, target


@given(case=reshape_case(), data=st.data())
def test_reshape(device, case, data):
    shape, target = case
    x = data.draw(arrays(shape))
    check_op(lambda t: t.reshape(target), lambda a: a.reshape(target), [x], device)


@given(shape=shapes(min_dims=1), data=st.data())
def test_transpose_swapaxes(device, shape, data):
    x = data.draw(arrays(shape))
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    check_op(lambda t: t.transpose(*perm), lambda a: a.transpose(perm), [x], device)
    check_op(lambda t: t.T, lambda a: a.T, [x], device)
    a1, a2 = data.draw(st.integers(-len(shape), len(shape) - 1)), data.draw(
        st.integers(0, len(shape) - 1))
    check_op(lambda t: t.swapaxes(a1, a2), lambda a: a.swapaxes(a1, a2), [x], device)


@given(pair_shapes=broadcastable_pairs(), data=st.data())
def test_broadcast_to(device, pair_shapes, data):
    target = np.broadcast_shapes(*pair_shapes)
    x = data.draw(arrays(pair_shapes[0]))
    check_op(lambda t: t.broadcast_to(target), lambda a: np.broadcast_to(a, target), [x], device)


@given(shape=shapes(min_dims=0), data=st.data())
def test_squeeze_unsqueeze(device, shape, data):
    x = data.draw(arrays(shape))
    ax = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check_op(lambda t: t.unsqueeze(ax), lambda a: np.expand_dims(a, ax), [x], device)
    check_op(lambda t: t.squeeze(), np.squeeze, [x], device)
    ones = tuple(i for i, n in enumerate(shape) if n == 1)
    if ones:
        check_op(lambda t: t.squeeze(ones), lambda a: a.squeeze(ones), [x], device)


@st.composite
def gather_case(draw):
    shape = draw(shapes(min_dims=1, max_dims=3))
    n = shape[0]
    idx = np.array(draw(st.lists(st.integers(-n, n - 1), min_size=0, max_size=6)), dtype=np.int64)
    return shape, idx


@given(case=gather_case(), data=st.data(), as_tensor=st.booleans())
def test_integer_gather_with_repeats_and_negatives(device, case, data, as_tensor):
    shape, idx = case
    x = data.draw(arrays(shape))
    index = mg.tensor(idx, device=device) if as_tensor else idx
    check_op(lambda t: t[index], lambda a: a[idx], [x], device)


@given(shape=shapes(min_dims=2, max_dims=3, min_side=2), data=st.data())
def test_basic_slices_and_mixed_indexing(device, shape, data):
    x = data.draw(arrays(shape))
    check_op(lambda t: t[1:, ::-1], lambda a: a[1:, ::-1], [x], device)
    check_op(lambda t: t[..., 0], lambda a: a[..., 0], [x], device)
    check_op(lambda t: t[None, -1], lambda a: a[None, -1], [x], device)
    rows = np.array([0, -1, 0])
    check_op(lambda t: t[rows, 1:], lambda a: a[rows, 1:], [x], device)


@given(shape=shapes(min_dims=1, max_dims=3), data=st.data())
def test_boolean_mask(device, shape, data):
    x = data.draw(arrays(shape))
    mask = data.draw(arrays(shape)) > 0
    check_op(lambda t: t[mask], lambda a: a[mask], [x], device)
    check_op(lambda t: t.masked_fill(mask, -3.0), lambda a: np.where(mask, -3.0, a), [x], device)


@given(pair_shapes=broadcastable_pairs(), data=st.data())
def test_where_broadcasts(device, pair_shapes, data):
    a, b = data.draw(arrays(pair_shapes[0])), data.draw(arrays(pair_shapes[1]))
    cond = data.draw(arrays(np.broadcast_shapes(*pair_shapes))) > 0
    check_op(lambda x, y: mg.where(cond, x, y), lambda x, y: np.where(cond, x, y), [a, b], device)


@given(shape=shapes(min_dims=1, max_dims=3), n=st.integers(1, 3), data=st.data())
def test_concatenate_stack_split(device, shape, n, data):
    ax = data.draw(st.integers(-len(shape), len(shape) - 1))
    xs = [data.draw(arrays(shape)) for _ in range(n)]
    check_op(lambda *ts: mg.concatenate(ts, ax), lambda *a: np.concatenate(a, ax), xs, device)
    check_op(lambda *ts: mg.stack(ts, ax), lambda *a: np.stack(a, ax), xs, device)
    whole = np.concatenate(xs, ax)
    check_op(lambda t: mg.stack(t.split(n, ax)), lambda a: np.stack(np.split(a, n, ax)), [whole],
             device)


@st.composite
def matmul_case(draw):
    m, k, n = (draw(st.integers(1, 4)) for _ in range(3))
    batch = draw(broadcastable_pairs(min_dims=0, max_dims=2, max_side=3))
    kind = draw(st.sampled_from(["batched", "vec_left", "vec_right", "vec_vec"]))
    a_shape = (k,) if kind in ("vec_left", "vec_vec") else batch[0] + (m, k)
    b_shape = (k,) if kind in ("vec_right", "vec_vec") else batch[1] + (k, n)
    return a_shape, b_shape


@given(case=matmul_case(), data=st.data())
def test_matmul_batched_broadcasting(device, case, data):
    a, b = data.draw(arrays(case[0])), data.draw(arrays(case[1]))
    check_op(lambda x, y: x @ y, np.matmul, [a, b], device)


def _grads(fn, *arrays_, device="cpu"):
    ts = [T(np.asarray(a, dtype=np.float64), device, requires_grad=True) for a in arrays_]
    fn(*ts).sum().backward()
    return [t.grad.numpy() for t in ts]


def test_pow_gradients_at_zero_base_are_finite_as_in_torch(device):
    # d/db a**b = a**b log a is 0 * -inf at a = 0; torch defines it as 0 (for b >= 0), and
    # d/da = b a**(b-1) as 0 where b = 0
    a, b = [0.0, 0.0, 0.0, 2.0], [2.0, 0.0, 0.5, 1.5]
    ga, gb = _grads(lambda x, y: x ** y, a, b, device=device)
    np.testing.assert_allclose(ga, [0.0, 0.0, np.inf, 1.5 * np.sqrt(2)])
    np.testing.assert_allclose(gb, [0.0, 0.0, 0.0, 2 ** 1.5 * np.log(2)])
    (gx,) = _grads(lambda x: x ** 0, [0.0, 3.0], device=device)
    np.testing.assert_array_equal(gx, [0.0, 0.0])


def test_pow_gradients_at_zero_base_match_torch():
    torch = pytest.importorskip("torch")
    a = np.array([0.0, 0.0, 0.0, 0.0, 2.0, 0.5])
    b = np.array([2.0, 0.0, 1.0, 3.0, 1.5, 0.0])
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a, b))
    (ta ** tb).sum().backward()
    ga, gb = _grads(lambda x, y: x ** y, a, b)
    np.testing.assert_allclose(ga, ta.grad.numpy())
    np.testing.assert_allclose(gb, tb.grad.numpy())


def test_max_min_ties_share_the_gradient_equally(device):
    x = [[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]
    (g,) = _grads(lambda t: t.max(axis=1), x, device=device)
    np.testing.assert_allclose(g, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    (g,) = _grads(lambda t: t.min(axis=0, keepdims=True), x, device=device)
    np.testing.assert_allclose(g, [[1, 0, 0], [0, 1, 1]])
    (g,) = _grads(lambda t: t.max(), x, device=device)
    np.testing.assert_allclose(g, [[0, 0.5, 0.5], [0, 0, 0]])
    (g,) = _grads(lambda t: t.min(), x, device=device)
    np.testing.assert_allclose(g, [[1, 0, 0], [0, 0, 0]])


def test_maximum_minimum_ties_send_half_the_gradient_to_each_side(device):
    a, b = [1.0, 2.0, 3.0], [1.0, 5.0, -1.0]
    for fn, wa in ((mg.maximum, [0.5, 0, 1]), (mg.minimum, [0.5, 1, 0])):
        ga, gb = _grads(fn, a, b, device=device)
        np.testing.assert_allclose(ga, wa)
        np.testing.assert_allclose(gb, 1 - np.array(wa))
