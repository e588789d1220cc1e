"""GPU-only checks beyond the op registry's CUDA-against-CPU rows (tests/engine/op_registry.py):
the Adam kernel against its xp path, the KV cache's causal offsets, and a whole training step on
the GPU against the same step on the CPU. They take the `gpu` fixture: skipped on the CPU, and
without CuPy and a GPU."""
import numpy as np

import minigrad_lm as mg
from minigrad_lm.backend.kernels import cuda
from minigrad_lm.models import GPT, GPTConfig
from minigrad_lm.optim import AdamW, clip_grad_norm_


def test_adam_kernel_matches_xp_update(gpu, monkeypatch):
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal(1000).astype(np.float32)
    grads = [rng.standard_normal(1000).astype(np.float32) for _ in range(3)]
    finals = []
    for flag in ("1", "0"):
        monkeypatch.setenv("MINIGRAD_CUDA_KERNELS", flag)
        p = mg.nn.Parameter(mg.tensor(w0, device=gpu))
        opt = AdamW([p], lr=1e-2, weight_decay=0.1)
        for g in grads:
            opt.zero_grad()
            (p * mg.tensor(g, device=gpu)).sum().backward()
            before = cuda.calls["adam"]
            opt.step()
            assert (cuda.calls["adam"] > before) == (flag == "1")
        finals.append(p.numpy())
    np.testing.assert_allclose(finals[0], finals[1], rtol=1e-5, atol=1e-6)


def test_kv_cache_offsets_use_the_causal_kernel(gpu):
    mg.manual_seed(5)
    model = GPT(GPTConfig(vocab_size=9, context_length=16, n_layer=2, n_head=2, d_model=32))
    model.to(gpu)
    ids = np.random.default_rng(0).integers(0, 9, (2, 12))
    with mg.no_grad():
        full = model(ids).numpy()
        cache = mg.nn.KVCache(16)
        parts = [model(ids[:, :5], cache=cache).numpy()]
        before = cuda.calls["masked_softmax"]
        for i in range(5, 12):
            parts.append(model(ids[:, i:i + 1], cache=cache).numpy())
        assert cuda.calls["masked_softmax"] >= before + 7 * 2  # every step, every layer
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


def test_training_step_on_gpu_matches_cpu(gpu):
    cpu_loss, cpu_grads, cpu_state = _one_step("cpu")
    gpu_loss, gpu_grads, gpu_state = _one_step(gpu)
    assert abs(cpu_loss - gpu_loss) < 1e-5
    for name in cpu_grads:
        np.testing.assert_allclose(gpu_grads[name], cpu_grads[name], rtol=1e-3, atol=1e-5,
                                   err_msg=name)
    # Adam's first step is ~lr * sign(g): a gradient within float32 noise of zero may move its
    # weight differently on the two devices, so weights are compared to a small fraction of lr.
    for name in cpu_state:
        np.testing.assert_allclose(gpu_state[name], cpu_state[name], rtol=1e-4, atol=1e-4,
                                   err_msg=name)
