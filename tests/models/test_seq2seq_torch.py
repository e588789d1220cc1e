"""The decoder layer and the whole encoder-decoder against PyTorch (float32, same weights,
padding masks); skipped cleanly where torch is not installed."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minigrad_lm as mg  # noqa: E402
from benchmarks.torch_seq2seq import (  # noqa: E402
    copy_weights,
    decoder_layer_pairs,
    from_minigrad,
    model_pairs,
)
from minigrad_lm.models import Seq2SeqConfig, Seq2SeqTransformer  # noqa: E402
from minigrad_lm.nn.seq2seq_layers import TransformerDecoderLayer  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-5)


def tt(a, grad=False):
    return torch.tensor(np.asarray(a), requires_grad=grad)


def close(ours, theirs):
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), **TOL)


def close_grads(pairs):
    """Every torch parameter's gradient = the concatenation of our parameters' gradients."""
    assert pairs
    for theirs, ours in pairs:
        got = np.concatenate([p.grad.numpy() for p in ours])
        np.testing.assert_allclose(got, theirs.grad.numpy(), **TOL)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch_with_padding_masks(norm_first):
    mg.manual_seed(0)
    ours = TransformerDecoderLayer(16, 4, d_ff=32, norm_first=norm_first)
    ref = torch.nn.TransformerDecoderLayer(16, 4, dim_feedforward=32, dropout=0.0,
                                           batch_first=True, norm_first=norm_first)
    pairs = decoder_layer_pairs(ours, ref)
    copy_weights(pairs)
    assert sum(len(o) for _, o in pairs) == len(ours.parameters())
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 16)).astype(np.float32)
    memory = rng.standard_normal((3, 7, 16)).astype(np.float32)
    real = np.arange(7)[None, :] < np.array([7, 3, 1])[:, None]
    xa, ma = mg.tensor(x, requires_grad=True), mg.tensor(memory, requires_grad=True)
    xb, mb = tt(x, grad=True), tt(memory, grad=True)
    ya = ours(xa, ma, real)
    yb = ref(xb, mb, tgt_mask=torch.triu(torch.ones(5, 5, dtype=torch.bool), 1),
             memory_key_padding_mask=tt(~real))
    close(ya, yb)
    g = rng.standard_normal(ya.shape).astype(np.float32)
    ya.backward(g)
    yb.backward(tt(g))
    close(xa.grad, xb.grad)
    close(ma.grad, mb.grad)
    close_grads(pairs)


@pytest.mark.parametrize("norm_first,positional", [(False, "sinusoidal"), (True, "learned")])
def test_seq2seq_matches_torch_transformer_loss_and_gradients(norm_first, positional):
    mg.manual_seed(1)
    cfg = Seq2SeqConfig(vocab_size=13, context_length=9, n_layer=2, n_head=2, d_model=16,
                        d_ff=24, dropout=0.0, norm_first=norm_first, positional=positional)
    ours = Seq2SeqTransformer(cfg)
    ref = from_minigrad(ours)
    ref.train()  # torch's reference (non-fused) path
    src = np.array([[5, 6, 7, 8, 2], [9, 4, 2, 0, 0], [3, 2, 0, 0, 0]])
    tgt_in = np.array([[1, 10, 11, 12], [1, 5, 0, 0], [1, 6, 7, 0]])
    tgt_out = np.array([[10, 11, 12, 2], [5, 2, 0, 0], [6, 7, 2, 0]])
    la = ours.loss(src, tgt_in, tgt_out, label_smoothing=0.1)
    lb = ref.loss(tt(src), tt(tgt_in), tt(tgt_out), label_smoothing=0.1)
    np.testing.assert_allclose(la.item(), lb.item(), rtol=1e-5)
    la.backward()
    lb.backward()
    pairs = model_pairs(ours, ref)
    assert sum(len(o) for _, o in pairs) == len(ours.parameters())
    close_grads(pairs)
