"""GPT training-step benchmark: minigrad_lm vs PyTorch eager, same weights, data and optimizer.

    python -m benchmarks.train_step [--configs S M] [--steps 10] [--device cpu]
"""
from __future__ import annotations

import argparse
import json

import numpy as np

import minigrad_lm as mg
from minigrad_lm.models import GPT, GPTConfig
from minigrad_lm.optim import Adam

from .harness import machine, median_train_step, numpy_gemm_flops

CONFIGS = {
    "S": (GPTConfig(vocab_size=65, context_length=64, n_layer=4, n_head=4, d_model=128), 12),
    "M": (GPTConfig(vocab_size=65, context_length=128, n_layer=6, n_head=8, d_model=256), 16),
}


def _batch(cfg: GPTConfig, batch: int):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (batch, cfg.context_length + 1))
    return ids[:, :-1], ids[:, 1:]


def minigrad_step_seconds(cfg: GPTConfig, batch: int, steps: int, device: str = "cpu"):
    """(median seconds per train step, final loss) of minigrad_lm with Adam."""
    mg.manual_seed(0)
    model = GPT(cfg).to(device)
    opt = Adam(model.parameters(), lr=1e-4)
    x, y = _batch(cfg, batch)
    if device != "cpu":
        xp = mg.backend.xp_for(device)
        x, y = xp.asarray(x), xp.asarray(y)
    sync = mg.backend.cupy().cuda.Device().synchronize if device != "cpu" else None
    seconds, loss = median_train_step(lambda: model.loss(x, y), opt, steps, sync)
    return seconds, float(loss.item()), model


def torch_step_seconds(model, cfg: GPTConfig, batch: int, steps: int, device: str = "cpu"):
    import torch

    from .torch_gpt import from_minigrad
    tm = from_minigrad(model, device=device)
    opt = torch.optim.Adam(tm.parameters(), lr=1e-4)
    x, y = (torch.tensor(a, device=device) for a in _batch(cfg, batch))
    sync = torch.cuda.synchronize if device != "cpu" else None
    seconds, loss = median_train_step(lambda: tm.loss(x, y), opt, steps, sync)
    return seconds, float(loss.item())


def run(configs, steps: int, device: str = "cpu") -> list[dict]:
    peak = numpy_gemm_flops() if device == "cpu" else None
    rows = []
    for name in configs:
        cfg, batch = CONFIGS[name]
        tokens = batch * cfg.context_length
        flops = cfg.flops_per_token() * tokens
        ours, loss, model = minigrad_step_seconds(cfg, batch, steps, device)
        row = {"config": name, "device": device, "batch": batch, "minigrad_ms": ours * 1e3,
               "minigrad_tok_s": tokens / ours, "minigrad_gflops": flops / ours / 1e9}
        if peak:
            row["minigrad_mfu"] = flops / ours / peak
        try:
            theirs, _ = torch_step_seconds(model, cfg, batch, steps, device)
            row.update(torch_ms=theirs * 1e3, torch_tok_s=tokens / theirs,
                       ratio=theirs / ours)
        except ImportError:
            pass
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["S", "M"], choices=sorted(CONFIGS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    print(json.dumps(machine()))
    for row in run(args.configs, args.steps, args.device):
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))


if __name__ == "__main__":
    main()
