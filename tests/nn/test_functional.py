"""Fused Functions of nn.functional beyond the op registry's checks (tests/engine/op_registry.py):
reductions with ignored rows, stability, masks, bad input, dropout."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm.nn import functional as F
from minigrad_lm.testing import arrays
from tests.helpers import T


@given(n=st.integers(2, 5), c=st.integers(2, 5), smoothing=st.sampled_from([0.0, 0.1]),
       reduction=st.sampled_from(["mean", "sum", "none"]), data=st.data())
def test_cross_entropy_ignored_rows_get_no_gradient(device, n, c, smoothing, reduction, data):
    logits = data.draw(arrays((n, c), low=-3, high=3))
    targets = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
    ignored = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n - 1, unique=True))
    targets[ignored] = -100
    z = T(logits, device, requires_grad=True)
    F.cross_entropy(z, targets, label_smoothing=smoothing, reduction=reduction).sum().backward()
    assert not z.grad.numpy()[ignored].any()


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
    with pytest.raises(ValueError, match=r"need targets of shape \(2,\)"):
        F.cross_entropy(T(np.zeros((2, 3)), device), np.array([0, 1, 2]))
    logits = T(np.zeros((2, 3)), device)
    with pytest.raises(ValueError, match="target 3 is out of range for 3 classes"):
        F.cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"need targets of shape \(2,\)"):
        F.cross_entropy(logits, np.array([0, 1, 2]))


def test_fully_masked_rows_give_zeros_not_nan(device):
    q = T(np.ones((1, 1, 2, 2)), device, requires_grad=True)
    mask = np.array([False, False]).reshape(1, 1, 1, 2)
    y = F.scaled_dot_product_attention(q, q, q, mask=mask)
    y.sum().backward()
    assert np.array_equal(y.numpy(), np.zeros((1, 1, 2, 2)))
    assert np.isfinite(q.grad.numpy()).all()


def test_embedding_index_range_is_checked(device):
    w = T(np.zeros((4, 2)), device)
    with pytest.raises(ValueError, match="id 4 is out of range for 4 embeddings"):
        F.embedding(np.array([0, 4]), w)
    with pytest.raises(ValueError, match="id -1 is out of range"):
        F.embedding(np.array([-1]), w)


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
