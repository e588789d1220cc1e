"""Fused Functions of nn.functional: values and gradients against their composite references,
and gradcheck on hypothesis-drawn sizes."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm.nn import functional as F
from minigrad_lm.testing import arrays
from tests import reference as ref
from tests.helpers import T


def assert_same_values_and_grads(fused, composite, inputs, device, rtol=1e-9, atol=1e-10):
    """Values and input gradients of two float64 functions agree for a random upstream grad."""
    outs, grads = [], []
    for fn in (fused, composite):
        ts = [T(a, device, requires_grad=True) for a in inputs]
        y = fn(*ts)
        up = np.random.default_rng(1).standard_normal(y.shape)
        y.backward(mg.tensor(up, device=device))
        outs.append(y.numpy())
        grads.append([t.grad.numpy() if t.grad is not None else np.zeros(t.shape) for t in ts])
    np.testing.assert_allclose(outs[0], outs[1], rtol=rtol, atol=atol)
    for g0, g1 in zip(*grads):
        np.testing.assert_allclose(g0, g1, rtol=rtol, atol=atol)


dims = st.integers(1, 4)


@given(n=dims, c=dims, o=dims, bias=st.booleans(), lead=st.integers(0, 2), data=st.data())
def test_linear(device, n, c, o, bias, lead, data):
    x = data.draw(arrays((2,) * lead + (n, c)))
    w, b = data.draw(arrays((o, c))), data.draw(arrays((o,)))
    args = [x, w, b] if bias else [x, w]
    assert_same_values_and_grads(F.linear, ref.linear, args, device)
    assert mg.gradcheck(F.linear, [T(a, device) for a in args])


@given(n=dims, c=st.integers(2, 6), lead=st.integers(0, 2), data=st.data())
def test_layer_norm(device, n, c, lead, data):
    x = data.draw(arrays((2,) * lead + (n, c), distinct=True))
    w, b = data.draw(arrays((c,))), data.draw(arrays((c,)))
    fused = lambda x, w, b: F.layer_norm(x, (c,), w, b)  # noqa: E731
    assert_same_values_and_grads(fused, ref.layer_norm, [x, w, b], device)
    assert mg.gradcheck(fused, [T(a, device) for a in (x, w, b)])


@given(n=st.integers(1, 5), c=st.integers(2, 5), smoothing=st.sampled_from([0.0, 0.1]),
       data=st.data())
def test_cross_entropy_with_ignore_index_and_smoothing(device, n, c, smoothing, data):
    logits = data.draw(arrays((n, c), low=-3, high=3))
    targets = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    targets[data.draw(st.integers(0, n - 1))] = -100 if n > 1 else targets[0]
    fused = lambda z: F.cross_entropy(z, targets, label_smoothing=smoothing)  # noqa: E731
    composite = lambda z: ref.cross_entropy(z, targets, label_smoothing=smoothing)  # noqa: E731
    assert_same_values_and_grads(fused, composite, [logits], device)
    assert mg.gradcheck(fused, [T(logits, device)])


@given(n=st.integers(2, 5), c=st.integers(2, 5), smoothing=st.sampled_from([0.0, 0.1]),
       reduction=st.sampled_from(["sum", "none"]), data=st.data())
def test_cross_entropy_sum_and_none_with_ignored_rows(device, n, c, smoothing, reduction, data):
    logits = data.draw(arrays((n, c), low=-3, high=3))
    targets = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    ignored = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n - 1, unique=True))
    targets[ignored] = -100
    fused = lambda z: F.cross_entropy(z, targets, label_smoothing=smoothing,  # noqa: E731
                                      reduction=reduction)
    composite = lambda z: ref.cross_entropy(z, targets, label_smoothing=smoothing,  # noqa: E731
                                            reduction=reduction)
    assert_same_values_and_grads(fused, composite, [logits], device)
    assert mg.gradcheck(fused, [T(logits, device)])
    z = T(logits, device, requires_grad=True)
    fused(z).sum().backward()
    assert not z.grad.numpy()[ignored].any()  # ignored rows get no gradient at all


def test_cross_entropy_reductions_and_3d_input(device):
    rng = np.random.default_rng(0)
    logits, t = rng.standard_normal((2, 3, 5)), rng.integers(0, 5, (2, 3))
    per = F.cross_entropy(T(logits, device), t, reduction="none")
    assert per.shape == (2, 3)
    total = F.cross_entropy(T(logits, device), t, reduction="sum").item()
    mean = F.cross_entropy(T(logits, device), t).item()
    np.testing.assert_allclose([per.numpy().sum(), per.numpy().mean()], [total, mean])
    assert mg.gradcheck(lambda z: F.cross_entropy(z, t, reduction="none"), [T(logits, device)])


def test_cross_entropy_stable_for_huge_logits(device):
    logits = T(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]], dtype=np.float32), device,
               requires_grad=True)
    loss = F.cross_entropy(logits, np.array([0, 2]))
    loss.backward()
    assert np.isfinite(loss.item()) and abs(loss.item() - 2500.0) < 1e-2
    assert np.isfinite(logits.grad.numpy()).all()


def test_cross_entropy_bad_targets(device):
    logits = T(np.zeros((2, 3)), device)
    with pytest.raises(ValueError, match="target 3 is out of range for 3 classes"):
        F.cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"need targets of shape \(2,\)"):
        F.cross_entropy(logits, np.array([0, 1, 2]))


@st.composite
def attention_case(draw):
    b, h, tq, d = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 4)), \
        draw(st.integers(1, 3))
    causal = draw(st.booleans())
    tk = tq if causal else draw(st.integers(1, 4))
    q = draw(arrays((b, h, tq, d)))
    k, v = draw(arrays((b, h, tk, d))), draw(arrays((b, h, tk, d)))
    mask = None
    if draw(st.booleans()):
        mask = np.array(draw(st.lists(st.booleans(), min_size=b * tk, max_size=b * tk)))
        mask = mask.reshape(b, 1, 1, tk)
        mask[..., 0] = True  # every query keeps at least one key
    return q, k, v, causal, mask


@given(case=attention_case())
def test_scaled_dot_product_attention(device, case):
    q, k, v, causal, mask = case
    fused = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal, mask)  # noqa: E731
    composite = lambda q, k, v: ref.attention(q, k, v, causal, mask)  # noqa: E731
    assert_same_values_and_grads(fused, composite, [q, k, v], device)
    assert mg.gradcheck(fused, [T(a, device) for a in (q, k, v)])


@given(case=attention_case())
def test_attention_with_dropout_gradcheck(device, case):
    """Reseeding before each call fixes the dropout mask, so gradcheck sees one function."""
    q, k, v, causal, mask = case

    def fn(q, k, v):
        mg.manual_seed(0)
        return F.scaled_dot_product_attention(q, k, v, causal, mask, dropout_p=0.4)
    assert mg.gradcheck(fn, [T(a, device) for a in (q, k, v)])


@given(b=st.integers(1, 2), t=st.integers(1, 4), h=st.integers(1, 2), d=st.integers(1, 3),
       causal=st.booleans(), padded=st.booleans(), data=st.data())
def test_multi_head_attention_core(device, b, t, h, d, causal, padded, data):
    qkv = data.draw(arrays((b, t, 3 * h * d)))
    pad = None
    if padded:
        lengths = np.array(data.draw(st.lists(st.integers(1, t), min_size=b, max_size=b)))
        pad = np.arange(t)[None, :] < lengths[:, None]
    fused = lambda z: F.multi_head_attention(z, h, causal, pad)  # noqa: E731
    composite = lambda z: ref.multi_head_attention(z, h, causal, pad)  # noqa: E731
    assert_same_values_and_grads(fused, composite, [qkv], device)
    assert mg.gradcheck(fused, [T(qkv, device)])


def test_fully_masked_rows_give_zeros_not_nan(device):
    q = T(np.ones((1, 1, 2, 2)), device, requires_grad=True)
    mask = np.array([False, False]).reshape(1, 1, 1, 2)
    y = F.scaled_dot_product_attention(q, q, q, mask=mask)
    y.sum().backward()
    assert np.array_equal(y.numpy(), np.zeros((1, 1, 2, 2)))
    assert np.isfinite(q.grad.numpy()).all()


@given(n=st.integers(1, 6), v=st.integers(1, 4), c=st.integers(1, 3), data=st.data())
def test_embedding_with_repeated_indices(device, n, v, c, data):
    w = data.draw(arrays((v, c)))
    ids = np.array(data.draw(st.lists(st.integers(0, v - 1), min_size=n, max_size=n)))
    ids = np.concatenate([ids, ids[:1]]).reshape(-1, 1)  # at least one repeat
    fused = lambda w: F.embedding(ids, w)  # noqa: E731
    assert_same_values_and_grads(fused, lambda w: ref.embedding(ids, w), [w], device)
    assert mg.gradcheck(fused, [T(w, device)])


def test_embedding_index_range_is_checked(device):
    w = T(np.zeros((4, 2)), device)
    with pytest.raises(ValueError, match="id 4 is out of range for 4 embeddings"):
        F.embedding(np.array([0, 4]), w)
    with pytest.raises(ValueError, match="id -1 is out of range"):
        F.embedding(np.array([-1]), w)


@given(shape=st.sampled_from([(3,), (2, 5), (2, 3, 4)]), gelu_kind=st.sampled_from(["none",
                                                                                   "tanh"]),
       data=st.data())
def test_gelu_matches_composite(device, shape, gelu_kind, data):
    x = data.draw(arrays(shape, low=-4, high=4))
    if gelu_kind == "tanh":
        def composite(t):
            return 0.5 * t * (1 + (np.sqrt(2 / np.pi) * (t + 0.044715 * t ** 3)).tanh())
    else:
        def composite(t):
            return t * mg.tensor(0.5 * (1 + np.vectorize(__import__("math").erf)(
                t.numpy() / np.sqrt(2))), device=device)
    fused = lambda t: F.gelu(t, gelu_kind)  # noqa: E731
    if gelu_kind == "tanh":
        assert_same_values_and_grads(fused, composite, [x], device)
    else:
        np.testing.assert_allclose(fused(T(x, device)).numpy(), composite(T(x, device)).numpy(),
                                   rtol=1e-12, atol=1e-14)
    assert mg.gradcheck(fused, [T(x, device)])


def test_dropout_scales_kept_values_and_is_identity_in_eval(device):
    mg.manual_seed(0)
    x = T(np.ones((200, 50)), device, requires_grad=True)
    y = F.dropout(x, 0.3)
    kept = y.numpy() != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(y.numpy()[kept], 1 / 0.7)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), kept / 0.7)
    assert F.dropout(x, 0.3, training=False) is x
