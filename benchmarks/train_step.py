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

from .harness import (
    interleaved_medians,
    machine,
    median_seconds,
    numpy_gemm_flops,
    train_step,
)

CONFIGS = {
    "S": (GPTConfig(vocab_size=65, context_length=64, n_layer=4, n_head=4, d_model=128), 12),
    "M": (GPTConfig(vocab_size=65, context_length=128, n_layer=6, n_head=8, d_model=256), 16),
}


def _batch(cfg: GPTConfig, batch: int):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.vocab_size, (batch, cfg.context_length + 1))
    return ids[:, :-1], ids[:, 1:]


def minigrad_setup(cfg: GPTConfig, batch: int, device: str = "cpu"):
    """(model, train-step function) of minigrad_lm with Adam on a fixed batch."""
    mg.manual_seed(0)
    model = GPT(cfg).to(device)
    opt = Adam(model.parameters(), lr=1e-4)
    x, y = _batch(cfg, batch)
    if device != "cpu":
        xp = mg.backend.xp_for(device)
        x, y = xp.asarray(x), xp.asarray(y)
    sync = mg.backend.cupy().cuda.Device().synchronize if device != "cpu" else None
    return model, train_step(lambda: model.loss(x, y), opt, sync)


def torch_setup(model, cfg: GPTConfig, batch: int, device: str = "cpu"):
    """The train-step function of the same model (same weights) in PyTorch eager."""
    import torch

    from .torch_gpt import from_minigrad
    tm = from_minigrad(model, device=device)
    opt = torch.optim.Adam(tm.parameters(), lr=1e-4)
    x, y = (torch.tensor(a, device=device) for a in _batch(cfg, batch))
    sync = torch.cuda.synchronize if device != "cpu" else None
    return train_step(lambda: tm.loss(x, y), opt, sync)


def minigrad_step_seconds(cfg: GPTConfig, batch: int, steps: int, device: str = "cpu") -> float:
    """Median seconds per train step of minigrad_lm alone."""
    _, step = minigrad_setup(cfg, batch, device)
    return median_seconds(step, repeats=steps)


def torch_step_seconds(model, cfg: GPTConfig, batch: int, steps: int, device: str = "cpu"):
    """Median seconds per train step of PyTorch alone."""
    return median_seconds(torch_setup(model, cfg, batch, device), repeats=steps)


def run(configs, steps: int, device: str = "cpu") -> list[dict]:
    """S and M train steps of minigrad_lm and PyTorch (when installed), taking turns."""
    peak = numpy_gemm_flops() if device == "cpu" else None
    rows = []
    for name in configs:
        cfg, batch = CONFIGS[name]
        tokens = batch * cfg.context_length
        flops = cfg.flops_per_token() * tokens
        model, step = minigrad_setup(cfg, batch, device)
        steps_of = {"minigrad": step}
        try:
            steps_of["torch"] = torch_setup(model, cfg, batch, device)
        except ImportError:
            pass
        block = max(1, round(0.5 / median_seconds(step, repeats=1)))  # turns of ~0.5 s each
        median = interleaved_medians(steps_of, max(steps, 3 * block), block)
        ours = median["minigrad"]
        row = {"config": name, "device": device, "batch": batch, "minigrad_ms": ours * 1e3,
               "minigrad_tok_s": tokens / ours, "minigrad_gflops": flops / ours / 1e9}
        if peak:
            row["minigrad_mfu"] = flops / ours / peak
        if "torch" in median:
            theirs = median["torch"]
            row.update(torch_ms=theirs * 1e3, torch_tok_s=tokens / theirs, ratio=theirs / ours)
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
