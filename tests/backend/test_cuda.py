"""GPU-only checks: each fused CuPy kernel against the portable xp path it replaces, and a whole
training step on the GPU against the same step on the CPU. Skipped without CuPy and a GPU."""
import numpy as np
import pytest

import minigrad_lm as mg
from minigrad_lm.backend.kernels import cuda
from minigrad_lm.models import GPT, GPTConfig
from minigrad_lm.nn import functional as F
from minigrad_lm.optim import AdamW, clip_grad_norm_

pytestmark = pytest.mark.skipif(not mg.cuda_available(), reason="CUDA device not available "
                                "(CuPy or a GPU is missing)")


def both_paths(monkeypatch, fn, *arrays, upstream_seed=1):
    """(outputs, input grads) of fn on the GPU with fused kernels on and off."""
    results = []
    for flag in ("1", "0"):
        monkeypatch.setenv("MINIGRAD_CUDA_KERNELS", flag)
        ts = [mg.tensor(a, device="cuda", requires_grad=a.dtype.kind == "f") for a in arrays]
        y = fn(*ts)
        up = np.random.default_rng(upstream_seed).standard_normal(y.shape).astype(y.dtype)
        y.backward(mg.tensor(up, device="cuda"))
        results.append((y.numpy(), [t.grad.numpy() for t in ts if t.requires_grad]))
    return results


def assert_paths_agree(results, rtol, atol):
    (y1, g1), (y0, g0) = results
    np.testing.assert_allclose(y1, y0, rtol=rtol, atol=atol)
    for a, b in zip(g1, g0):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype,tol", [(np.float32, 1e-4), (np.float64, 1e-10)])
def test_layer_norm_kernel(monkeypatch, dtype, tol):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 300)).astype(dtype) * 3 + 1
    w, b = rng.standard_normal(300).astype(dtype), rng.standard_normal(300).astype(dtype)
    before = cuda.calls["layer_norm_bwd"]
    res = both_paths(monkeypatch, lambda x, w, b: F.layer_norm(x, (300,), w, b), x, w, b)
    assert cuda.calls["layer_norm_bwd"] == before + 1
    assert_paths_agree(res, tol, tol)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_kernel(monkeypatch, smoothing):
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((64, 1000)) * 5).astype(np.float32)
    logits[0, 3] = 1e4  # stability
    targets = rng.integers(0, 1000, 64)
    targets[5] = -100
    before = cuda.calls["ce_bwd"]
    res = both_paths(monkeypatch, lambda z: F.cross_entropy(z, targets, label_smoothing=smoothing),
                     logits)
    assert cuda.calls["ce_bwd"] == before + 1
    assert_paths_agree(res, 1e-4, 1e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_attention_softmax_kernels(monkeypatch, causal):
    rng = np.random.default_rng(2)
    qkv = rng.standard_normal((2, 33, 3 * 64)).astype(np.float32)
    before = cuda.calls["softmax_bwd"]
    res = both_paths(monkeypatch, lambda z: F.multi_head_attention(z, 4, causal), qkv)
    assert cuda.calls["softmax_bwd"] == before + 1
    assert_paths_agree(res, 1e-4, 1e-5)


def test_gelu_kernel(monkeypatch):
    x = np.linspace(-12, 12, 5001).astype(np.float32).reshape(3, 1667)
    before = cuda.calls["gelu_bwd"]
    res = both_paths(monkeypatch, lambda t: F.gelu(t, "tanh"), x)
    assert cuda.calls["gelu_bwd"] == before + 1
    assert_paths_agree(res, 1e-5, 1e-6)


def test_adam_kernel_matches_xp_update(monkeypatch):
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal(1000).astype(np.float32)
    grads = [rng.standard_normal(1000).astype(np.float32) for _ in range(3)]
    finals = []
    for flag in ("1", "0"):
        monkeypatch.setenv("MINIGRAD_CUDA_KERNELS", flag)
        p = mg.nn.Parameter(mg.tensor(w0, device="cuda"))
        opt = AdamW([p], lr=1e-2, weight_decay=0.1)
        for g in grads:
            opt.zero_grad()
            (p * mg.tensor(g, device="cuda")).sum().backward()
            opt.step()
        finals.append(p.numpy())
    np.testing.assert_allclose(finals[0], finals[1], rtol=1e-5, atol=1e-6)


def test_kv_cache_offsets_use_the_causal_kernel():
    mg.manual_seed(5)
    model = GPT(GPTConfig(vocab_size=9, context_length=16, n_layer=2, n_head=2, d_model=32))
    model.to("cuda")
    ids = np.random.default_rng(0).integers(0, 9, (2, 12))
    with mg.no_grad():
        full = model(ids).numpy()
        cache = mg.nn.KVCache(16)
        parts = [model(ids[:, :5], cache=cache).numpy()]
        for i in range(5, 12):
            parts.append(model(ids[:, i:i + 1], cache=cache).numpy())
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-4, atol=1e-5)


def _one_step(device):
    mg.manual_seed(7)
    cfg = GPTConfig(vocab_size=50, context_length=32, n_layer=2, n_head=4, d_model=64)
    model = GPT(cfg).to(device)
    opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    ids = np.random.default_rng(0).integers(0, 50, (4, 33))
    loss = model.loss(ids[:, :-1], ids[:, 1:])
    loss.backward()
    grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item(), grads, model.state_dict()


def test_training_step_on_gpu_matches_cpu():
    cpu_loss, cpu_grads, cpu_state = _one_step("cpu")
    gpu_loss, gpu_grads, gpu_state = _one_step("cuda")
    assert abs(cpu_loss - gpu_loss) < 1e-5
    for name in cpu_grads:
        np.testing.assert_allclose(gpu_grads[name], cpu_grads[name], rtol=1e-3, atol=1e-5,
                                   err_msg=name)
    # Adam's first step is ~lr * sign(g): a gradient within float32 noise of zero may move its
    # weight differently on the two devices, so weights are compared to a small fraction of lr.
    for name in cpu_state:
        np.testing.assert_allclose(gpu_state[name], cpu_state[name], rtol=1e-4, atol=1e-4,
                                   err_msg=name)
