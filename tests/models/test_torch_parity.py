"""Parity with PyTorch (float32, same weights): layers, the whole model, optimizers.
Skipped cleanly where torch is not installed."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import minigrad_lm as mg  # noqa: E402
from minigrad_lm import nn  # noqa: E402
from minigrad_lm.models import GPT, GPTConfig  # noqa: E402
from minigrad_lm.nn import functional as F  # noqa: E402
from minigrad_lm.optim import Adam, AdamW  # noqa: E402

TOL = dict(rtol=1e-4, atol=1e-5)


def tt(a, grad=False):
    return torch.tensor(np.asarray(a), requires_grad=grad)


def close(ours, theirs, **tol):
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), **(tol or TOL))


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_matches_torch(causal):
    mg.manual_seed(0)
    ours = nn.MultiHeadAttention(16, 4)
    ref = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(tt(ours.qkv.weight.numpy()))
        ref.in_proj_bias.copy_(tt(ours.qkv.bias.numpy()))
        ref.out_proj.weight.copy_(tt(ours.out.weight.numpy()))
        ref.out_proj.bias.copy_(tt(ours.out.bias.numpy()))
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    pad = np.array([[True] * 5, [True, True, True, False, False]])
    xa, xb = mg.tensor(x, requires_grad=True), tt(x, grad=True)
    ya = ours(xa, causal=causal, key_padding_mask=pad)
    mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1) if causal else None
    yb, _ = ref(xb, xb, xb, key_padding_mask=tt(~pad), attn_mask=mask, need_weights=False)
    close(ya, yb)
    g = np.random.default_rng(1).standard_normal(ya.shape).astype(np.float32)
    ya.backward(g)
    yb.backward(tt(g))
    close(xa.grad, xb.grad)
    close(ours.qkv.weight.grad, ref.in_proj_weight.grad)
    close(ours.out.weight.grad, ref.out_proj.weight.grad)


@pytest.mark.parametrize("tiled", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_alibi_attention_matches_torch_with_the_biases_as_a_float_mask(causal, tiled):
    """ALiBi written as PyTorch users write it: the biases -slope_h |i - j| (slopes
    2^-2, 2^-4, 2^-6, 2^-8 for 4 heads) in scaled_dot_product_attention's float attn_mask."""
    b, t, h, d = 2, 7, 4, 8
    qkv = np.random.default_rng(0).standard_normal((b, t, 3 * h * d)).astype(np.float32)
    pad = np.array([[True] * t, [True] * 4 + [False] * 3])
    xa, xb = mg.tensor(qkv, requires_grad=True), tt(qkv, grad=True)
    ya = F.multi_head_attention(xa, h, causal, pad, tiled=tiled, alibi=True)
    slopes = torch.tensor([2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8])
    pos = torch.arange(t)
    bias = -slopes[:, None, None] * (pos[:, None] - pos[None, :]).abs()  # (H, T, T)
    hidden = torch.tensor(~pad)[:, None, None, :] | (
        torch.triu(torch.ones(t, t, dtype=torch.bool), 1) if causal else False)
    mask = bias[None].masked_fill(hidden, float("-inf"))  # (B, H, T, T)
    q, k, v = xb.reshape(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
    yb = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    yb = yb.transpose(1, 2).reshape(b, t, h * d)
    close(ya, yb)
    g = np.random.default_rng(1).standard_normal(ya.shape).astype(np.float32)
    ya.backward(g)
    yb.backward(tt(g))
    close(xa.grad, xb.grad)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_encoder_layer_matches_torch_encoder_layer(norm_first, padded):
    mg.manual_seed(1)
    ours = nn.TransformerLayer(16, 4, d_ff=32, norm_first=norm_first, activation="gelu")
    ref = torch.nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0,
                                           activation="gelu", batch_first=True,
                                           norm_first=norm_first)
    pairs = [(ours.attn.qkv.weight, ref.self_attn.in_proj_weight),
             (ours.attn.qkv.bias, ref.self_attn.in_proj_bias),
             (ours.attn.out.weight, ref.self_attn.out_proj.weight),
             (ours.attn.out.bias, ref.self_attn.out_proj.bias),
             (ours.ff.fc.weight, ref.linear1.weight), (ours.ff.fc.bias, ref.linear1.bias),
             (ours.ff.proj.weight, ref.linear2.weight), (ours.ff.proj.bias, ref.linear2.bias),
             (ours.norm1.weight, ref.norm1.weight), (ours.norm1.bias, ref.norm1.bias),
             (ours.norm2.weight, ref.norm2.weight), (ours.norm2.bias, ref.norm2.bias)]
    with torch.no_grad():
        for a, b in pairs:
            b.copy_(tt(a.numpy()))
    ref.train()  # keep torch on its reference (non-fused) path
    x = np.random.default_rng(0).standard_normal((2, 6, 16)).astype(np.float32)
    keep = np.array([[True] * 6, [True] * 4 + [False] * 2]) if padded else None
    xa, xb = mg.tensor(x, requires_grad=True), tt(x, grad=True)
    ya = ours(xa, key_padding_mask=keep)
    yb = ref(xb, src_key_padding_mask=None if keep is None else tt(~keep))
    close(ya, yb)
    # torch's padded rows are scored too (attending to the real keys): compare all rows.
    ya.sum().backward()
    yb.sum().backward()
    close(xa.grad, xb.grad)
    for a, b in pairs:
        close(a.grad, b.grad)


def test_pre_norm_block_and_full_gpt_loss_and_every_gradient_match_torch():
    from benchmarks.torch_gpt import from_minigrad
    mg.manual_seed(2)
    model = GPT(GPTConfig(vocab_size=13, context_length=16, n_layer=2, n_head=4, d_model=32))
    ref = from_minigrad(model)
    ids = np.random.default_rng(0).integers(0, 13, (3, 16))
    targets = np.roll(ids, -1, axis=1)
    ours = model.loss(ids, targets)
    theirs = ref.loss(torch.tensor(ids), torch.tensor(targets))
    np.testing.assert_allclose(ours.item(), theirs.item(), rtol=1e-5)
    ours.backward()
    theirs.backward()
    ref_params = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        close(p.grad, ref_params[name].grad)


def test_cross_entropy_matches_torch_with_smoothing_and_ignore_index():
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((6, 5)) * 3).astype(np.float32)
    t = rng.integers(0, 5, 6)
    t[2] = -100
    a, b = mg.tensor(logits, requires_grad=True), tt(logits, grad=True)
    la = F.cross_entropy(a, t, label_smoothing=0.1)
    lb = torch.nn.functional.cross_entropy(b, torch.tensor(t), label_smoothing=0.1)
    np.testing.assert_allclose(la.item(), lb.item(), rtol=1e-5)
    la.backward()
    lb.backward()
    close(a.grad, b.grad)


@pytest.mark.parametrize("ours_cls,torch_cls,kw", [
    (Adam, torch.optim.Adam, dict(lr=1e-2, betas=(0.9, 0.99), weight_decay=0.01)),
    (AdamW, torch.optim.AdamW, dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1))])
def test_optimizer_steps_match_torch(ours_cls, torch_cls, kw):
    rng = np.random.default_rng(4)
    w0 = rng.standard_normal((4, 3)).astype(np.float32)
    a, b = nn.Parameter(w0.copy()), torch.nn.Parameter(tt(w0.copy()))
    oa, ob = ours_cls([a], **kw), torch_cls([b], **kw)
    for _ in range(5):
        g = rng.standard_normal((4, 3)).astype(np.float32)
        oa.zero_grad()
        ob.zero_grad()
        (a * mg.tensor(g)).sum().backward()
        (b * tt(g)).sum().backward()
        oa.step()
        ob.step()
    close(a, b, rtol=1e-5, atol=1e-6)
