"""Frozen parameters and LoRA adapters: no gradient or optimizer state for what is frozen, a fresh
adapter changes nothing, merging keeps the logits, gradients are right."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm import nn
from minigrad_lm.models import GPT, GPTConfig, SequenceClassifier
from minigrad_lm.nn.lora import (
    LoRALinear,
    add_lora,
    lora_layers,
    merge_lora,
    remove_lora,
)
from minigrad_lm.optim import AdamW, decay_groups
from minigrad_lm.testing import arrays
from tests.helpers import T

CFG = GPTConfig(vocab_size=13, context_length=8, n_layer=2, n_head=2, d_model=16)
IDS = np.random.default_rng(0).integers(0, 13, (2, 9))


def _gpt(seed=0, device="cpu"):
    mg.manual_seed(seed)
    return GPT(CFG).to(device)


def test_frozen_parameters_get_no_gradient_no_state_and_do_not_move(device):
    model = _gpt(device=device)
    frozen = [model.layers[0].ff.fc.weight, model.ln_f.bias]
    for p in frozen:
        p.requires_grad_(False)
    before = [p.numpy().copy() for p in frozen]
    opt = AdamW(decay_groups(model, 0.1), lr=0.1)
    trainable = sum(p.size for p in model.parameters() if p.requires_grad)
    assert sum(g.data.size for g in opt.groups) == trainable == model.num_trainable_parameters()
    assert trainable == model.num_parameters() - sum(p.size for p in frozen)
    for _ in range(2):
        opt.zero_grad()
        model.loss(IDS[:, :-1], IDS[:, 1:]).backward()
        opt.step()
    for p, b in zip(frozen, before):
        assert p.grad is None
        np.testing.assert_array_equal(p.numpy(), b)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_group_of_frozen_parameters_and_a_frozen_model_are_refused():
    lin = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="all 2 parameters of group 0 are frozen"):
        AdamW(lin.parameters())
    with pytest.raises(ValueError, match="every parameter of the model is frozen"):
        decay_groups(lin, 0.1)


def test_zero_initialized_adapter_equals_the_base_model(device):
    base, model = _gpt(device=device), _gpt(device=device)
    names = add_lora(model, ["qkv", "out", "fc", "proj"], rank=4, alpha=8)
    assert len(names) == 4 * CFG.n_layer and "layers.0.attn.qkv" in names
    assert all(p.device == device for p in model.parameters())
    exact = device == "cpu"  # a GPU's GEMMs may round two equal products differently
    np.testing.assert_allclose(model(IDS[:, :-1]).numpy(), base(IDS[:, :-1]).numpy(), rtol=0,
                               atol=0 if exact else 1e-6)


def test_only_the_adapters_train_and_merge_keeps_the_logits(device):
    model = _gpt(device=device)
    add_lora(model, ["qkv", "fc"], rank=2, alpha=4)
    opt = AdamW(decay_groups(model, 0.1), lr=0.05)
    adapters = {id(p) for m in lora_layers(model).values() for p in (m.lora_A, m.lora_B)}
    assert {id(p) for g in opt.groups for p in g.params} == adapters
    frozen = {n: p.numpy().copy() for n, p in model.named_parameters() if id(p) not in adapters}
    for _ in range(3):
        opt.zero_grad()
        model.loss(IDS[:, :-1], IDS[:, 1:]).backward()
        opt.step()
    for n, p in model.named_parameters():
        if id(p) not in adapters:
            assert p.grad is None
            np.testing.assert_array_equal(p.numpy(), frozen[n])
    model.eval()
    unmerged = model(IDS[:, :-1]).numpy()
    base = _gpt(device=device).eval()
    assert not np.array_equal(unmerged, base(IDS[:, :-1]).numpy())  # the adapters learned
    merge_lora(model)
    np.testing.assert_allclose(model(IDS[:, :-1]).numpy(), unmerged, atol=1e-5)
    for m in lora_layers(model).values():
        m.unmerge()
    for n, p in model.named_parameters():
        if n in frozen:
            np.testing.assert_allclose(p.numpy(), frozen[n], atol=1e-6)  # merge/unmerge
    remove_lora(model, merge=True)
    assert not lora_layers(model) and set(model.state_dict()) == set(_gpt().state_dict())
    np.testing.assert_allclose(model(IDS[:, :-1]).numpy(), unmerged, atol=1e-5)


@given(n=st.integers(1, 3), i=st.integers(1, 4), o=st.integers(1, 4), r=st.integers(1, 3),
       bias=st.booleans(), data=st.data())
def test_lora_linear_gradcheck(device, n, i, o, r, bias, data):
    layer = LoRALinear(nn.Linear(i, o, bias), r, alpha=2.0)
    for p in (layer.weight, layer.bias, layer.lora_A, layer.lora_B):
        if p is not None:
            p.data = data.draw(arrays(p.shape))
    layer.to(device)
    x = T(data.draw(arrays((n, i))), device)
    want = x.numpy() @ (layer.weight.numpy() + 2.0 / r * layer.lora_B.numpy()
                        @ layer.lora_A.numpy()).T + (layer.bias.numpy() if bias else 0)
    np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-10, atol=1e-12)
    assert mg.gradcheck(lambda x, a, b: layer(x), [x, layer.lora_A, layer.lora_B])
    y = layer(T(x.numpy(), device, requires_grad=True))
    y.sum().backward()
    assert layer.weight.grad is None and (layer.bias is None or layer.bias.grad is None)


def test_classifier_body_adapters_leave_the_head_trainable():
    model = SequenceClassifier(_gpt(), num_classes=3)
    add_lora(model.body, ["qkv"], rank=2, alpha=2)
    model.classifier.requires_grad_(True)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"classifier.weight", "classifier.bias",
                     *(f"body.layers.{i}.attn.qkv.lora_{x}" for i in range(2) for x in "AB")}


def test_bad_targets_and_tied_weights_are_refused():
    with pytest.raises(ValueError, match=r"\['attn'\] name no Linear layer.*fc, head, out, proj"):
        add_lora(_gpt(), ["qkv", "attn"], rank=2, alpha=2)
    with pytest.raises(ValueError, match="head.weight is shared"):
        add_lora(_gpt(), ["head"], rank=2, alpha=2)
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        add_lora(_gpt(), ["qkv"], rank=0, alpha=2)
