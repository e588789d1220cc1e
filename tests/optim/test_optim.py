"""Optimizers against closed-form references; schedules; clipping; state round trips."""
import math

import numpy as np
import pytest

import minigrad_lm as mg
from minigrad_lm import nn
from minigrad_lm.optim import (
    SGD,
    Adam,
    AdamW,
    LRScheduler,
    clip_grad_norm_,
    decay_groups,
    lr_at,
)

GRADS = [np.array([0.5, -1.0, 2.0]), np.array([-0.3, 0.2, 0.1]), np.array([1.0, 1.0, -1.0]),
         np.array([0.0, -2.0, 0.5])]
P0 = np.array([1.0, -2.0, 0.5])


def run(opt_cls, **kw):
    p = nn.Parameter(P0.copy())
    opt = opt_cls([p], **kw)
    for g in GRADS:
        opt.zero_grad()
        (p * mg.tensor(g)).sum().backward()  # d/dp = g
        opt.step()
    return p.numpy()


def adam_reference(lr, b1, b2, eps, wd, decoupled):
    p, m, v = P0.copy(), np.zeros(3), np.zeros(3)
    for t, g in enumerate(GRADS, start=1):
        if decoupled:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_matches_closed_form(wd):
    got = run(Adam, lr=0.1, betas=(0.8, 0.9), eps=1e-8, weight_decay=wd)
    np.testing.assert_allclose(got, adam_reference(0.1, 0.8, 0.9, 1e-8, wd, False), rtol=1e-12)


def test_adamw_matches_closed_form():
    got = run(AdamW, lr=0.1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.5)
    np.testing.assert_allclose(got, adam_reference(0.1, 0.9, 0.95, 1e-8, 0.5, True), rtol=1e-12)


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.1),
                                                  (0.9, True, 0.0)])
def test_sgd_matches_closed_form(momentum, nesterov, wd):
    got = run(SGD, lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=wd)
    p, buf = P0.copy(), None
    for g in GRADS:
        g = g + wd * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + g
            g = g + momentum * buf if nesterov else buf
        p = p - 0.1 * g
    np.testing.assert_allclose(got, p, rtol=1e-12)


def test_parameters_without_gradient_are_not_updated():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = AdamW([a, b], lr=0.1, weight_decay=0.5)
    (a * 2).sum().backward()
    opt.step()
    assert np.array_equal(b.numpy(), np.ones(2)) and not np.array_equal(a.numpy(), np.ones(2))


def test_state_dict_round_trip_continues_identically():
    def make():
        mg.manual_seed(0)
        model = nn.Linear(3, 2)
        return model, AdamW(model.parameters(), lr=0.01)
    x = mg.randn(4, 3)
    model, opt = make()
    for _ in range(3):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    saved_model, saved_opt = model.state_dict(), opt.state_dict()
    opt.zero_grad()
    model(x).sum().backward()
    opt.step()
    model2, opt2 = make()
    model2.load_state_dict(saved_model)
    opt2.load_state_dict(saved_opt)
    opt2.zero_grad()
    model2(x).sum().backward()
    opt2.step()
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, model2.state_dict()[k])


def test_replaced_parameter_arrays_are_refused():
    model = nn.Linear(2, 2)
    opt = SGD(model.parameters(), lr=0.1)
    model.weight.data = model.weight.data.copy()
    model(mg.ones(1, 2)).sum().backward()
    with pytest.raises(RuntimeError, match="create the optimizer after moving the model"):
        opt.step()


def test_clip_grad_norm_returns_total_norm_and_scales():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(1))
    (a * mg.tensor([3.0, 0.0]) + 0).sum().backward()
    (b * mg.tensor([4.0])).sum().backward()
    total = clip_grad_norm_([a, b], 1.0)
    assert math.isclose(float(total), 5.0, rel_tol=1e-6)
    np.testing.assert_allclose(np.concatenate([a.grad.numpy(), b.grad.numpy()]),
                               [0.6, 0.0, 0.8], rtol=1e-5)


def test_warmup_cosine_schedule():
    assert lr_at(0, 1.0, 0.1, warmup_steps=4, decay_steps=14) == 0.25
    assert lr_at(3, 1.0, 0.1, warmup_steps=4, decay_steps=14) == 1.0
    assert math.isclose(lr_at(9, 1.0, 0.1, warmup_steps=4, decay_steps=14), 0.55)
    assert math.isclose(lr_at(14, 1.0, 0.1, warmup_steps=4, decay_steps=14), 0.1)
    assert math.isclose(lr_at(99, 1.0, 0.1, warmup_steps=4, decay_steps=14), 0.1)
    assert lr_at(100, 1.0, schedule="constant") == 1.0


def test_scheduler_follows_the_optimizer_step_count():
    """The lr of a step depends on the step alone: an optimizer whose state (and step count) is
    loaded continues the schedule, and step() may be called before or after each update."""
    p = nn.Parameter(np.zeros(1))
    opt = SGD([p], lr=1.0)
    sched = LRScheduler(opt, warmup_steps=2, decay_steps=10)
    assert sched.get_last_lr() == [0.5]
    p.grad = mg.tensor(np.ones(1))
    opt.step()
    sched.step()
    assert sched.get_last_lr() == [1.0]
    sched.step()
    assert sched.get_last_lr() == [1.0]
    later = SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    later_sched = LRScheduler(later, warmup_steps=2, decay_steps=10)
    later.load_state_dict({"step": 6, "buffers": {}})
    later_sched.step()
    assert later_sched.get_last_lr() == [lr_at(6, 1.0, 0.0, 2, 10)]
    assert later.param_groups[0]["momentum"] == 0.0  # options stay without "param_groups"


def test_decay_groups_by_dimensions():
    """nanoGPT's rule: 2+ dimensions decay (matmul weights, embeddings), biases and norm gains
    do not."""
    from minigrad_lm.models import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=5, context_length=4, n_layer=1, n_head=1, d_model=4))
    decay, rest = decay_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim < 2 for p in rest["params"])
    assert any("emb" in n for n in decayed) and not any("norm" in n for n in decayed)
    assert len(decay["params"]) + len(rest["params"]) == len(model.parameters())


def test_grad_buffers_and_scale_grads():
    a, b = nn.Parameter(np.zeros((2, 2))), nn.Parameter(np.zeros(3))
    opt = SGD([{"params": [a]}, {"params": [b]}], lr=1.0)
    (a.sum() * 2.0 + b.sum() * 4.0).backward()
    opt.scale_grads_(0.5)
    np.testing.assert_array_equal(a.grad.numpy(), np.ones((2, 2)))
    np.testing.assert_array_equal(b.grad.numpy(), 2 * np.ones(3))
    bufs = opt.grad_buffers()
    assert [buf.shape for buf in bufs] == [(4,), (3,)]
    bufs[1][...] = 0  # the gradients are views of these buffers
    np.testing.assert_array_equal(b.grad.numpy(), np.zeros(3))


def test_step_uses_gradients_assigned_by_hand():
    """p.grad = ... (as in PyTorch) reaches the flat buffer the update reads."""
    p = mg.tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    q = mg.tensor(np.array([3.0], np.float32), requires_grad=True)
    opt = SGD([p, q], lr=0.5)
    p.grad = mg.tensor(np.array([2.0, -2.0], np.float32))
    (q * 4.0).sum().backward()
    opt.step()
    np.testing.assert_allclose(p.numpy(), [0.0, 3.0])
    np.testing.assert_allclose(q.numpy(), [1.0])
    p.grad = mg.tensor(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"shape \(3,\) was assigned to a parameter of shape"):
        opt.step()


def _late_joiner_run(make_opt, params, grads_of):
    """Steps where params[1] gets its first gradient only at the third step."""
    opt = make_opt(params)
    for step in range(5):
        opt.zero_grad()
        for i, p in enumerate(params):
            if i == 0 or step >= 2:
                p.grad = grads_of(p, step, i)
        opt.step()
    return opt


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
def test_a_parameter_whose_gradient_arrives_late_gets_a_full_first_update(name):
    # torch counts steps per parameter: the late one's first Adam update is lr * sign(g)
    torch = pytest.importorskip("torch")
    kw = {"lr": 0.1, "weight_decay": 0.01}
    kw.update({"betas": (0.9, 0.95)} if name != "SGD" else {"momentum": 0.9})
    g = np.random.default_rng(0).standard_normal((5, 2, 3))
    init = np.random.default_rng(1).standard_normal((2, 3))
    ours = [nn.Parameter(init[i].copy()) for i in range(2)]
    theirs = [torch.tensor(init[i].copy(), requires_grad=True) for i in range(2)]
    import minigrad_lm.optim as optim
    _late_joiner_run(lambda ps: getattr(optim, name)(ps, **kw), ours,
                     lambda p, s, i: mg.tensor(g[s, i]))
    _late_joiner_run(lambda ps: getattr(torch.optim, name)(ps, **kw), theirs,
                     lambda p, s, i: torch.tensor(g[s, i]))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_late_parameter_first_update_is_lr_times_sign():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(2))
    opt = Adam([a, b], lr=0.1, eps=0.0)
    for step in range(3):
        opt.zero_grad()
        a.grad = mg.tensor(np.array([1.0, -1.0]))
        if step == 2:
            b.grad = mg.tensor(np.array([3.0, -0.5]))
        opt.step()
    np.testing.assert_allclose(b.numpy(), [-0.1, 0.1])


def test_state_dict_keeps_per_parameter_steps_and_old_states_load():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(3))
    opt = AdamW([a, b], lr=0.1)
    for step in range(3):
        opt.zero_grad()
        a.grad = mg.tensor(np.ones(2))
        if step == 2:
            b.grad = mg.tensor(np.ones(3))
        opt.step()
    state = opt.state_dict()
    np.testing.assert_array_equal(state["buffers"]["g0.step"], [3, 1])
    fresh = AdamW([nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(3))], lr=0.1)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.groups[0].steps, [3, 1])
    # a state written before per-parameter steps: one global step, given to every parameter
    old = {**state, "buffers": {k: v for k, v in state["buffers"].items() if k != "g0.step"}}
    fresh.load_state_dict(old)
    np.testing.assert_array_equal(fresh.groups[0].steps, [3, 3])
    bad = {**state, "buffers": {**state["buffers"], "g0.step": np.array([1, 2, 3])}}
    with pytest.raises(ValueError, match=r"g0.step has shape \(3,\), expected \(2,\)"):
        fresh.load_state_dict(bad)


def test_a_replica_given_counts_and_buffers_takes_the_same_steps():
    """What the distributed code broadcasts (train/distributed.py's sync_optimizer)."""
    def model_and_opt():
        p, q = nn.Parameter(np.zeros((2, 2))), nn.Parameter(np.zeros(3))
        return [p, q], AdamW([{"params": [p]}, {"params": [q], "weight_decay": 0.0}], lr=0.1)

    def step(params, opt, scale):
        opt.zero_grad()
        (params[0].sum() * scale + (params[1] * params[1]).sum() + params[1].sum()).backward()
        opt.step()

    (a, opt_a), (b, opt_b) = model_and_opt(), model_and_opt()
    for scale in (1.0, -2.0):
        step(a, opt_a, scale)
    assert opt_a.layout() == opt_b.layout() == [[((2, 2), "float64")], [((3,), "float64")]]
    opt_b.load_counts(opt_a.counts())
    for mine, theirs in zip(opt_b.buffers(), opt_a.buffers(), strict=True):
        mine[...] = theirs
    step(a, opt_a, 3.0)
    step(b, opt_b, 3.0)
    assert opt_b.step_count == opt_a.step_count == 3
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
