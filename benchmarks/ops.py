"""Per-op benchmarks: Python overhead on tiny arrays, throughput against raw NumPy, and fused
forward+backward kernels against PyTorch at the sizes of config M.

    python -m benchmarks.ops [--device cpu]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

import minigrad_lm as mg
from minigrad_lm.nn import functional as F
from minigrad_lm.optim import Adam

from .harness import machine, median_seconds


def overhead_rows(device: str) -> list[dict]:
    """Microseconds per op on 4x4 arrays: raw xp, minigrad forward, minigrad forward+backward."""
    xp = mg.backend.xp_for(device)
    a_np = xp.asarray(np.random.default_rng(0).standard_normal((4, 4), dtype=np.float32))
    a = mg.tensor(a_np, device=device, requires_grad=True)
    b = mg.tensor(a_np, device=device, requires_grad=True)
    cases = {
        "add": (lambda: a_np + a_np, lambda: a + b),
        "mul": (lambda: a_np * a_np, lambda: a * b),
        "matmul": (lambda: a_np @ a_np, lambda: a @ b),
        "exp": (lambda: xp.exp(a_np), lambda: a.exp()),
        "sum": (lambda: a_np.sum(), lambda: a.sum()),
        "reshape": (lambda: a_np.reshape(16), lambda: a.reshape(16)),
        "getitem": (lambda: a_np[1:3], lambda: a[1:3]),
    }
    rows = []
    for name, (raw, ours) in cases.items():
        t_raw = median_seconds(raw, repeats=2000, warmup=50)
        with mg.no_grad():
            t_fwd = median_seconds(ours, repeats=2000, warmup=50)
        t_graph = median_seconds(ours, repeats=2000, warmup=50)

        def fwd_bwd():
            ours().sum().backward()
        t_fb = median_seconds(fwd_bwd, repeats=500, warmup=20)
        rows.append({"op": name, "raw_us": t_raw * 1e6, "no_grad_us": t_fwd * 1e6,
                     "graph_us": t_graph * 1e6, "overhead_us": (t_graph - t_raw) * 1e6,
                     "fwd_bwd_us": t_fb * 1e6})
    return rows


def throughput_rows(device: str) -> list[dict]:
    """Large-array ops: minigrad_lm (no_grad) against the raw array module, same arrays."""
    xp = mg.backend.xp_for(device)
    rng = np.random.default_rng(0)
    m = xp.asarray(rng.standard_normal((1024, 1024), dtype=np.float32))
    v = xp.asarray(rng.standard_normal(4_000_000, dtype=np.float32))
    tm, tv = mg.tensor(m, device=device), mg.tensor(v, device=device)
    sync = mg.backend.cupy().cuda.Device().synchronize if device != "cpu" else None
    rows = []
    for name, raw, ours in [("matmul 1024^2", lambda: m @ m, lambda: tm @ tm),
                            ("add 4M", lambda: v + v, lambda: tv + tv),
                            ("exp 4M", lambda: xp.exp(v), lambda: tv.exp())]:
        t_raw = median_seconds(raw, repeats=20, sync=sync)
        with mg.no_grad():
            t_ours = median_seconds(ours, repeats=20, sync=sync)
        rows.append({"op": name, "raw_ms": t_raw * 1e3, "minigrad_ms": t_ours * 1e3,
                     "ratio": t_raw / t_ours})
    return rows


def fused_rows(device: str) -> list[dict]:
    """Forward+backward of each hot kernel at config-M sizes, against torch when installed."""
    rng = np.random.default_rng(0)
    B, T, C, H, V = 16, 128, 256, 8, 65
    arrays = {
        "x": rng.standard_normal((B * T, C), dtype=np.float32),
        "w": rng.standard_normal((4 * C, C), dtype=np.float32) * 0.02,
        "h": rng.standard_normal((B * T, 4 * C), dtype=np.float32),
        "logits": rng.standard_normal((B * T, V), dtype=np.float32),
        "qkv": rng.standard_normal((B, T, 3 * C), dtype=np.float32),
        "table": rng.standard_normal((V, C), dtype=np.float32),
    }
    targets = rng.integers(0, V, B * T)
    ids = rng.integers(0, V, (B, T))
    ln_w, ln_b = np.ones(C, np.float32), np.zeros(C, np.float32)

    t = {k: mg.tensor(v, device=device, requires_grad=True)
         for k, v in {**arrays, "ln_w": ln_w, "ln_b": ln_b}.items()}
    sync = mg.backend.cupy().cuda.Device().synchronize if device != "cpu" else None
    ours = {
        "matmul (linear)": lambda: F.linear(t["x"], t["w"]),
        "layer_norm": lambda: F.layer_norm(t["x"], (C,), t["ln_w"], t["ln_b"]),
        "softmax": lambda: F.softmax(t["h"], -1),
        "cross_entropy": lambda: F.cross_entropy(t["logits"], targets),
        "attention (causal)": lambda: F.multi_head_attention(t["qkv"], H, causal=True),
        "gelu (tanh)": lambda: F.gelu(t["h"], "tanh"),
        "embedding": lambda: F.embedding(ids, t["table"]),
    }
    rows = []
    for name, make in ours.items():
        y0 = make()
        upstream = mg.ones_like(y0) if y0.size > 1 else None

        def run(make=make, upstream=upstream):
            make().backward(upstream)
        rows.append({"op": name, "minigrad_ms": median_seconds(run, repeats=10,
                                                               sync=sync) * 1e3})
    params = [mg.nn.Parameter(rng.standard_normal(C * C * 12 * 6 // 8, dtype=np.float32))
              for _ in range(8)]
    if device != "cpu":
        for p in params:
            p.data = mg.backend.to_device(p.data, device)
    opt = Adam(params)
    for p in params:
        p.grad = mg.Tensor(p._grad_view)

    rows.append({"op": "adam update (4.7M params)",
                 "minigrad_ms": median_seconds(opt.step, repeats=10, sync=sync) * 1e3})
    try:
        rows = _torch_fused(rows, arrays, targets, ids, ln_w, ln_b, H, device)
    except ImportError:
        pass
    return rows


def _torch_fused(rows, arrays, targets, ids, ln_w, ln_b, H, device):
    import torch
    import torch.nn.functional as TF
    dev = "cuda" if device != "cpu" else "cpu"

    t = {k: torch.tensor(v, device=dev, requires_grad=True)
         for k, v in {**arrays, "ln_w": ln_w, "ln_b": ln_b}.items()}
    C = arrays["x"].shape[1]
    B, T = arrays["qkv"].shape[:2]

    def attention():
        q, k, v = t["qkv"].split(C, dim=2)
        q, k, v = (z.view(B, T, H, C // H).transpose(1, 2) for z in (q, k, v))
        return TF.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)

    targets_t, ids_t = torch.tensor(targets, device=dev), torch.tensor(ids, device=dev)
    theirs = {
        "matmul (linear)": lambda: TF.linear(t["x"], t["w"]),
        "layer_norm": lambda: TF.layer_norm(t["x"], (C,), t["ln_w"], t["ln_b"]),
        "softmax": lambda: TF.softmax(t["h"], -1),
        "cross_entropy": lambda: TF.cross_entropy(t["logits"], targets_t),
        "attention (causal)": attention,
        "gelu (tanh)": lambda: TF.gelu(t["h"], approximate="tanh"),
        "embedding": lambda: TF.embedding(ids_t, t["table"]),
    }
    sync = torch.cuda.synchronize if dev == "cuda" else None
    params = [torch.nn.Parameter(torch.randn(C * C * 12 * 6 // 8, device=dev))
              for _ in range(8)]
    opt = torch.optim.Adam(params, foreach=True)
    for p in params:
        p.grad = torch.randn_like(p)
    theirs["adam update (4.7M params)"] = None
    for row in rows:
        make = theirs.get(row["op"])
        if row["op"].startswith("adam"):
            ms = median_seconds(opt.step, repeats=10, sync=sync) * 1e3
        else:
            upstream = torch.ones_like(make())

            def run(make=make, upstream=upstream):
                make().backward(upstream)
            ms = median_seconds(run, repeats=10, sync=sync) * 1e3
        row.update(torch_ms=ms, ratio=ms / row["minigrad_ms"])
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    print(json.dumps(machine()))
    for section in (overhead_rows, throughput_rows, fused_rows):
        for row in section(args.device):
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                              for k, v in row.items()}))


if __name__ == "__main__":
    main()
