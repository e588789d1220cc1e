"""recompute.checkpoint: gradients identical to the plain graph (bit for bit on the CPU, to float
rounding on a GPU; dropout included), nothing of the forward kept but the inputs, and GPT's
recompute settings."""
import gc
import weakref

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm import nn
from minigrad_lm.engine.recompute import Checkpoint, checkpoint
from minigrad_lm.models import GPT, GPTConfig
from minigrad_lm.nn import functional as F
from minigrad_lm.testing import arrays
from tests.helpers import T


def _toy(lin, p_drop):
    def block(x, scale):
        h = F.dropout(lin(x).gelu("tanh"), p_drop)
        return F.layer_norm(h * scale + x, (x.shape[-1],))
    return block


def _grads(use_checkpoint, x0, device, p_drop=0.3):
    mg.manual_seed(0)
    lin = nn.Linear(x0.shape[-1], x0.shape[-1]).to(device)
    x = T(x0, device, requires_grad=True)
    block = _toy(lin, p_drop)
    y = x
    for _ in range(3):
        y = checkpoint(block, y, 0.5) if use_checkpoint else block(y, 0.5)
    loss = (y * y).sum()
    loss.backward()
    after = mg.rng.host().random()  # the stream continues where the plain graph leaves it
    return loss.item(), [x.grad.numpy(), lin.weight.grad.numpy(), lin.bias.grad.numpy()], after


def test_toy_graph_with_dropout_gives_bit_identical_gradients():
    x0 = np.random.default_rng(0).standard_normal((4, 5, 8)).astype(np.float32)
    plain, recomputed = _grads(False, x0, "cpu"), _grads(True, x0, "cpu")
    assert plain[0] == recomputed[0] and plain[2] == recomputed[2]
    for a, b in zip(plain[1], recomputed[1]):
        np.testing.assert_array_equal(a, b)


def test_same_gradients_on_any_device(device):
    x0 = np.random.default_rng(0).standard_normal((4, 5, 8))
    plain, recomputed = _grads(False, x0, device), _grads(True, x0, device)
    for a, b in zip(plain[1], recomputed[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@given(n=st.integers(1, 4), c=st.integers(2, 5), data=st.data())
def test_gradcheck_through_a_checkpoint(device, n, c, data):
    x, w = data.draw(arrays((n, c))), data.draw(arrays((c, c)))
    f = lambda a, b: checkpoint(lambda u, v: (u @ v).tanh() * u, a, b).sum(0)  # noqa: E731
    assert mg.gradcheck(f, [T(x, device), T(w, device)])


def test_only_the_inputs_are_kept():
    x = mg.tensor(np.ones((50, 50)), requires_grad=True)
    seen = []

    def fn(a):
        h = a.exp()
        seen.append(weakref.ref(h))
        return h.sum(axis=0)
    y = checkpoint(fn, x)
    gc.collect()
    assert isinstance(y._ctx, Checkpoint) and seen[0]() is None  # the intermediate is gone
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.e * np.ones((50, 50)))


def test_no_graph_and_no_saved_state_without_grad():
    x = mg.tensor(np.ones(3), requires_grad=True)
    with mg.no_grad():
        y = checkpoint(lambda a: a * 2, x)
    assert y._ctx is None and not y.requires_grad


def test_parameters_get_gradients_when_the_input_needs_none():
    # a frozen layer before the checkpoint (LoRA): only the listed parameters need gradients
    x = mg.tensor(np.random.default_rng(0).standard_normal((4, 3)))
    grads = []
    for recompute in (False, True):
        mg.manual_seed(0)
        lin = nn.Linear(3, 3)
        block = lambda h: lin(h).tanh()  # noqa: E731
        y = checkpoint(block, x, params=lin.parameters()) if recompute else block(x)
        y.sum().backward()
        grads.append(lin.weight.grad.numpy())
        if recompute:  # a Module's own parameters are found without params=
            lin.weight.grad = None
            checkpoint(lin, x).sum().backward()
            assert lin.weight.grad is not None
    np.testing.assert_array_equal(*grads)


def test_warns_when_nothing_requires_grad_and_refuses_non_tensor_results():
    lin = nn.Linear(3, 3).requires_grad_(False)
    with pytest.warns(UserWarning, match="no Tensor argument or listed parameter requires grad"):
        checkpoint(lambda h: lin(h), mg.tensor(np.ones((2, 3))))
    with pytest.raises(TypeError, match="must return one Tensor, got tuple"):
        checkpoint(lambda a: (a, a), mg.tensor(np.ones(2), requires_grad=True))


def _gpt_grads(recompute, device, dropout=0.2, positional="learned"):
    mg.manual_seed(0)
    cfg = GPTConfig(vocab_size=11, context_length=16, n_layer=2, n_head=2, d_model=16,
                    dropout=dropout, recompute=recompute, positional=positional)
    model = GPT(cfg).to(device)
    ids = np.random.default_rng(0).integers(0, 11, (3, 17))
    loss = model.loss(ids[:, :-1], ids[:, 1:])
    loss.backward()
    return loss.item(), {n: p.grad.numpy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("positional", ["learned", "alibi"])
@pytest.mark.parametrize("recompute", ["blocks", "attention"])
def test_gpt_recompute_gives_bit_identical_gradients_with_dropout(device, recompute,
                                                                  positional):
    base_loss, base = _gpt_grads("none", device, positional=positional)
    loss, grads = _gpt_grads(recompute, device, positional=positional)
    # On a GPU, the embedding's backward adds rows with atomics, in no fixed order; a mask that
    # was not replayed would still change the loss and gradients by far more than that.
    tol = 0 if device == "cpu" else 1e-6
    assert loss == pytest.approx(base_loss, rel=tol, abs=tol)
    assert base.keys() == grads.keys()
    for name in base:
        np.testing.assert_allclose(grads[name], base[name], rtol=tol, atol=tol, err_msg=name)


def test_gpt_config_refuses_unknown_recompute():
    with pytest.raises(ValueError, match="recompute must be one of"):
        GPTConfig(recompute="layers")
