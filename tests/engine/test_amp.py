"""Mixed precision: autocast's float16 paths against float32, reductions kept in float32, a tiny
GPT that learns in float16 as in float32, and the loss scaler's skips and scale on injected and
real overflows."""
import numpy as np
import pytest

import minigrad_lm as mg
from minigrad_lm.models import GPT, GPTConfig
from minigrad_lm.nn import functional as F
from minigrad_lm.optim import SGD, AdamW


def _rel_err(got, want) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


def _linear_values_and_grads(autocast: bool):
    rng = np.random.default_rng(0)
    x = mg.tensor(rng.standard_normal((6, 5, 40)).astype(np.float32), requires_grad=True)
    w = mg.tensor(rng.standard_normal((24, 40)).astype(np.float32) / 6, requires_grad=True)
    b = mg.tensor(rng.standard_normal(24).astype(np.float32), requires_grad=True)
    with mg.amp.autocast(enabled=autocast):
        y = F.linear(x, w, b)
    y.backward(mg.tensor(rng.standard_normal(y.shape).astype(np.float32)))
    return y, [x.grad, w.grad, b.grad]


def test_linear_under_autocast_is_float16_within_half_precision_of_float32():
    y16, g16 = _linear_values_and_grads(True)
    y32, g32 = _linear_values_and_grads(False)
    assert y16.dtype == np.float16
    # gradients come back in the parameters' (master) dtype
    assert [g.dtype for g in g16] == [np.float32] * 3
    assert _rel_err(y16.numpy(), y32.numpy()) < 2e-3
    errors = [_rel_err(got.numpy(), want.numpy()) for got, want in zip(g16, g32)]
    assert max(errors) < 2e-3
    assert min(errors[:2]) > 0  # x and w went through float16 GEMMs (b: a sum of gy)


def test_reductions_run_in_float32_under_autocast():
    rng = np.random.default_rng(0)
    h = mg.tensor(rng.standard_normal((4, 7, 12)).astype(np.float16), requires_grad=True)
    w, b = mg.ones(12, requires_grad=True), mg.zeros(12, requires_grad=True)
    targets = rng.integers(0, 12, (4, 7))
    with mg.amp.autocast():
        outs = [F.layer_norm(h, 12, w, b), mg.softmax(h, -1), mg.log_softmax(h, -1),
                F.cross_entropy(h, targets)]
    assert [o.dtype for o in outs] == [np.float32] * 4
    want = F.cross_entropy(h.astype(np.float32), targets)
    np.testing.assert_allclose(outs[3].numpy(), want.numpy(), rtol=1e-6)
    outs[3].backward()
    assert h.grad.dtype == np.float16
    # outside autocast nothing is cast
    assert mg.softmax(h, -1).dtype == np.float16


def test_bfloat16_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="neither NumPy nor CuPy has bfloat16 arithmetic"):
        mg.amp.autocast(dtype="bfloat16")
    with pytest.raises(ValueError, match="float16"):
        mg.amp.autocast(dtype=np.float64)


def _train_tiny_gpt(precision: str, steps: int = 60):
    mg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, n_layer=2, n_head=2, d_model=32, context_length=16))
    opt = AdamW(model.parameters(), lr=3e-3)
    half = precision == "fp16"
    scaler = mg.amp.GradScaler(enabled=half)
    rng = np.random.default_rng(0)
    data = np.tile(np.arange(16), 40)  # a repeating sequence to learn
    losses = []
    for _ in range(steps):
        starts = rng.integers(0, len(data) - 17, 8)
        x = np.stack([data[s:s + 16] for s in starts])
        y = np.stack([data[s + 1:s + 17] for s in starts])
        with mg.amp.autocast(enabled=half):
            assert model(x[:1]).dtype == (np.float16 if half else np.float32)
            loss = model.loss(x, y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(p.dtype == np.float32 for p in model.parameters())  # master weights
    assert all(a.dtype == np.float32 for a in opt.buffers())  # and optimizer state
    return np.array(losses), scaler


def test_tiny_gpt_learns_in_float16_as_in_float32():
    fp32, _ = _train_tiny_gpt("fp32")
    fp16, scaler = _train_tiny_gpt("fp16")
    assert fp32[-1] < 0.1 * fp32[0]  # it learned
    assert scaler.skipped == 0
    np.testing.assert_allclose(fp16, fp32, rtol=0.02, atol=0.01)


def _overflowing_steps(overflow_at: set, growth_interval: int):
    """SGD on one parameter, an inf injected into its gradient at the given steps: the
    parameter after each step, the scale before each step, and the scaler."""
    p = mg.tensor(np.ones(3, np.float32), requires_grad=True)
    opt = SGD([p], lr=0.1)
    scaler = mg.amp.GradScaler(init_scale=1024.0, growth_interval=growth_interval)
    values, scales = [], []
    for step in range(10):
        scales.append(scaler.get_scale())
        opt.zero_grad()
        scaler.scale((p * p).sum()).backward()
        if step in overflow_at:
            p.grad.data[1] = np.inf if step % 2 else np.nan
        scaler.step(opt)
        scaler.update()
        values.append(p.numpy().copy())
    return values, scales, scaler


def test_loss_scaling_skips_exactly_the_overflowing_steps():
    overflow_at = {2, 5, 6}
    values, scales, scaler = _overflowing_steps(overflow_at, growth_interval=2)
    assert scaler.skipped == 3
    previous = np.ones(3, np.float32)
    for step, value in enumerate(values):
        if step in overflow_at:
            np.testing.assert_array_equal(value, previous)  # skipped: nothing changed
        else:
            # a clean step is the unscaled SGD step: p - 0.1 * 2p
            np.testing.assert_allclose(value, previous * 0.8, rtol=1e-6)
        previous = value
    # halved after each skip, doubled after every 2 clean steps in a row
    assert scales == [1024, 1024, 2048, 1024, 1024, 2048, 1024, 512, 512, 1024]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_real_float16_overflow_is_skipped_and_the_scale_backs_off():
    """A scale of 2^40 overflows float16 gradients: the scaler skips until it is small enough,
    then training goes on with finite float32 master weights."""
    mg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, n_layer=1, n_head=2, d_model=16, context_length=8))
    opt = AdamW(model.parameters(), lr=1e-3)
    scaler = mg.amp.GradScaler(init_scale=2.0 ** 40)
    x = np.arange(16).reshape(2, 8) % 16
    before = [p.numpy().copy() for p in model.parameters()]
    stepped = []
    for _ in range(30):
        with mg.amp.autocast():
            loss = model.loss(x, (x + 1) % 16)
        opt.zero_grad()
        scaler.scale(loss).backward()
        stepped.append(scaler.step(opt))
        scaler.update()
        if not stepped[-1]:
            assert all(np.array_equal(b, p.numpy()) for b, p in zip(before, model.parameters()))
    assert not stepped[0] and stepped[-1]
    assert scaler.skipped == stepped.index(True) == stepped.count(False)
    assert scaler.get_scale() == 2.0 ** (40 - scaler.skipped)
    assert all(np.isfinite(p.numpy()).all() for p in model.parameters())


def test_scaler_state_round_trips_and_disabled_scaler_passes_through():
    _, _, scaler = _overflowing_steps({1}, growth_interval=3)
    other = mg.amp.GradScaler()
    other.load_state_dict(scaler.state_dict())
    assert other.state_dict() == scaler.state_dict()
    off = mg.amp.GradScaler(enabled=False)
    loss = mg.tensor(2.0)
    assert off.scale(loss) is loss and off.get_scale() == 1.0
