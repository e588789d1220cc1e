"""Modules, layers and models: registration, state, gradients of every parameter, errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm import nn
from minigrad_lm.models import GPT, GPTConfig, SequenceClassifier
from minigrad_lm.optim import AdamW
from tests.helpers import to_float64, x64


@pytest.mark.parametrize("norm_first", [True, False])
@settings(max_examples=4)
@given(t=st.integers(1, 4), heads=st.sampled_from([1, 2]), causal=st.booleans())
def test_transformer_layer_gradcheck_every_parameter(device, norm_first, t, heads, causal):
    mg.manual_seed(t)
    layer = to_float64(nn.TransformerLayer(4, heads, d_ff=6, norm_first=norm_first), device)
    x = x64((2, t, 4), device)
    x.requires_grad = True
    assert mg.gradcheck(lambda *ps: layer(x, causal=causal), [x] + layer.parameters())


def test_multi_head_attention_with_padding_mask_gradcheck(device):
    mg.manual_seed(1)
    mha = to_float64(nn.MultiHeadAttention(4, 2), device)
    x = x64((2, 3, 4), device)
    x.requires_grad = True
    pad = np.array([[True, True, False], [True, True, True]])
    assert mg.gradcheck(lambda *ps: mha(x, key_padding_mask=pad), [x] + mha.parameters())


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "alibi"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_gpt_loss_gradcheck_every_parameter(device, positional, norm_first):
    mg.manual_seed(2)
    cfg = GPTConfig(vocab_size=5, context_length=4, n_layer=2, n_head=2, d_model=4,
                    positional=positional, norm_first=norm_first, tie_weights=True)
    model = to_float64(GPT(cfg), device)
    ids = np.random.default_rng(0).integers(0, 5, (2, 4))
    targets = np.roll(ids, -1, axis=1)
    assert mg.gradcheck(lambda *ps: model.loss(ids, targets), model.parameters())


@pytest.mark.parametrize("causal, pooling", [(True, "mean"), (True, "max"), (True, "last"),
                                             (False, "mean"), (False, "max"), (False, "cls"),
                                             (False, "last")])
def test_classifier_gradcheck_and_shapes(device, causal, pooling):
    mg.manual_seed(3)
    body = GPT(GPTConfig(vocab_size=5, context_length=4, n_layer=1, n_head=1, d_model=4,
                         causal=causal))
    clf = to_float64(SequenceClassifier(body, 3, pooling), device)
    ids = np.array([[1, 2, 0, 0], [3, 4, 1, 2]])
    lengths = np.array([2, 4])
    assert clf(ids, lengths).shape == (2, 3)
    assert mg.gradcheck(lambda *ps: clf(ids, lengths), clf.parameters())


@settings(max_examples=6, deadline=None)
@given(lengths=st.lists(st.integers(1, 5), min_size=1, max_size=3), causal=st.booleans(),
       seed=st.integers(0, 100))
def test_max_pooling_gradcheck_over_any_lengths(device, lengths, causal, seed):
    """Padding is never the max, whatever the lengths; a real token wins each feature."""
    mg.manual_seed(seed)
    body = GPT(GPTConfig(vocab_size=6, context_length=5, n_layer=1, n_head=1, d_model=4,
                         causal=causal))
    clf = to_float64(SequenceClassifier(body, 2, "max"), device)
    ids = np.random.default_rng(seed).integers(0, 6, (len(lengths), 5))
    assert mg.gradcheck(lambda *ps: clf(ids, np.array(lengths)), clf.parameters())


@pytest.mark.parametrize("pooling", ["mean", "max"])
@pytest.mark.parametrize("causal", [True, False])
def test_a_padded_batch_gives_each_sentence_the_logits_it_gets_alone(device, causal, pooling):
    mg.manual_seed(4)
    clf = SequenceClassifier(GPT(GPTConfig(vocab_size=7, context_length=6, n_layer=2, n_head=2,
                                           d_model=8, causal=causal)), 2,
                             pooling).to(device).eval()
    sentences = [[1, 2, 3], [4, 5, 6, 1, 2], [3]]
    alone = [clf(np.array([s]), np.array([len(s)])).numpy()[0] for s in sentences]
    padded = np.array([s + [6] * (6 - len(s)) for s in sentences])  # pads are real ids
    batch = clf(padded, np.array([len(s) for s in sentences])).numpy()
    np.testing.assert_allclose(batch, np.stack(alone), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "max", "cls", "last"])
def test_pooling_picks_the_right_hidden_states(device, pooling):
    """Values, not gradients: an off-by-one position still has a fine gradient."""
    mg.manual_seed(5)
    clf = SequenceClassifier(GPT(GPTConfig(vocab_size=9, context_length=5, n_layer=1, n_head=1,
                                           d_model=6, causal=False)), 3, pooling).to(device).eval()
    ids, lengths = np.array([[2, 3, 4, 0, 0], [5, 6, 7, 8, 1]]), np.array([3, 5])
    keep = np.arange(5)[None] < lengths[:, None]
    h = clf.body.hidden_states(ids, key_padding_mask=keep).numpy()
    pooled = {"mean": np.stack([h[0, :3].mean(0), h[1].mean(0)]),
              "max": np.stack([h[0, :3].max(0), h[1].max(0)]),
              "cls": h[:, 0],
              "last": np.stack([h[0, 2], h[1, 4]])}[pooling]
    w, b = clf.classifier.weight.numpy(), clf.classifier.bias.numpy()
    np.testing.assert_allclose(clf(ids, lengths).numpy(), pooled @ w.T + b, rtol=1e-5,
                               atol=1e-6)


def test_classifier_refuses_cls_pooling_on_a_causal_body():
    body = GPT(GPTConfig(vocab_size=5, context_length=4, n_layer=1, n_head=1, d_model=4))
    with pytest.raises(ValueError, match="pooling 'cls' needs a bidirectional body"):
        SequenceClassifier(body, 2, "cls")


def test_overfit_tiny_gpt_memorises_a_sequence():
    mg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, context_length=16, n_layer=2, n_head=2, d_model=32))
    opt = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    seq = np.random.default_rng(0).integers(0, 11, (1, 17))
    for _ in range(200):
        loss = model.loss(seq[:, :-1], seq[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_module_registration_state_dict_and_repr():
    mg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, context_length=4, n_layer=1, n_head=1, d_model=4))
    names = [n for n, _ in model.named_parameters()]
    assert names[0] == "tok_emb.weight" and "head.weight" not in names  # tied: listed once
    assert names == [n for n, _ in model.named_parameters()]  # stable order
    assert model.num_parameters() == sum(p.size for p in model.parameters())
    state = model.state_dict()
    other = GPT(GPTConfig(vocab_size=7, context_length=4, n_layer=1, n_head=1, d_model=4))
    other.load_state_dict(state)
    for (n, p), (_, q) in zip(model.named_parameters(), other.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    assert "TransformerLayer" in repr(model) and "(qkv): Linear(in_features=4" in repr(model)
    model.eval()
    assert not any(m.training for m in model.modules())


def test_load_state_dict_names_missing_unexpected_and_mismatched():
    model = nn.Linear(3, 2)
    with pytest.raises(KeyError, match=r"missing keys \['bias'\], unexpected keys \['b'\]"):
        model.load_state_dict({"weight": np.zeros((2, 3), np.float32), "b": np.zeros(2)})
    with pytest.raises(ValueError, match=r"weight: checkpoint \(3, 2\) float32 vs model \(2, 3\)"):
        model.load_state_dict({"weight": np.zeros((3, 2), np.float32),
                               "bias": np.zeros(2, np.float32)})
    missing, unexpected = model.load_state_dict({"weight": np.ones((2, 3), np.float32)},
                                                strict=False)
    assert missing == ["bias"] and unexpected == []
    assert model.weight.numpy().sum() == 6


def test_parameters_behave_after_flattening_by_an_optimizer():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    before = model.state_dict()
    AdamW(model.parameters())
    after = model.state_dict()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    new = {k: v + 1 for k, v in before.items()}
    model.load_state_dict(new)
    np.testing.assert_array_equal(model.state_dict()["0.weight"], new["0.weight"])


def test_sinusoidal_table_formula():
    table = nn.transformer.sinusoidal_table(5, 6)
    pos, i = 3, 2
    assert np.isclose(table[pos, 2 * i], np.sin(pos / 10000 ** (2 * i / 6)))
    assert np.isclose(table[pos, 2 * i + 1], np.cos(pos / 10000 ** (2 * i / 6)))


def test_model_input_errors():
    with pytest.raises(ValueError, match="d_model=10 is not divisible by n_head=3"):
        GPTConfig(d_model=10, n_head=3)
    with pytest.raises(ValueError, match="unknown keys"):
        GPTConfig.from_dict({"vocab_size": 5, "colour": "red"})
    model = GPT(GPTConfig(vocab_size=5, context_length=4, n_layer=1, n_head=1, d_model=4))
    with pytest.raises(ValueError, match="sequence of 5 tokens is longer than context_length=4"):
        model(np.zeros((1, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="token id 9 is outside the vocabulary of 5"):
        model(np.array([[1, 9]]))


def test_kv_cache_matches_full_forward(device):
    mg.manual_seed(5)
    model = GPT(GPTConfig(vocab_size=9, context_length=8, n_layer=2, n_head=2, d_model=8)).to(
        device)
    ids = np.random.default_rng(0).integers(0, 9, (2, 7))
    with mg.no_grad():
        full = model(ids).numpy()
        cache = nn.KVCache(8)
        parts = [model(ids[:, :3], cache=cache).numpy()]
        for i in range(3, 7):
            parts.append(model(ids[:, i:i + 1], cache=cache).numpy())
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-4, atol=1e-5)
