"""GPT training-step benchmark: minigrad_lm vs PyTorch eager, same weights, data and optimizer.

    python -m benchmarks.train_step [--configs S M] [--steps 10] [--rounds 2] [--device cpu]
        [--paths library cli torch library_opt_out]
        [--out benchmarks/results/train_step_paths_cpu.json]

Each path runs in a fresh process, the paths taking turns for `rounds` rounds: "library" is a
user's own script (import minigrad_lm, build, train: nothing called first), "cli" calls
backend.tune_for_training() first as the command-line tools do, "torch" is PyTorch eager,
"library_opt_out" is the library path with MINIGRAD_MALLOC_TUNING=0 (backend/tuning.py) and
"library_numpy_kernels" the library path with MINIGRAD_CPU_KERNELS=numpy (the CPU kernels'
NumPy passes instead of their Numba-compiled loops: the engine without Numba).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

import minigrad_lm as mg
from minigrad_lm.models import GPT, GPTConfig
from minigrad_lm.optim import Adam

from .harness import machine, median_seconds, numpy_gemm_flops, train_step

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


PATHS = ("library", "cli", "torch", "library_opt_out", "library_numpy_kernels")
# The library path with one switch in the environment: the allocator's tuning off, or the CPU
# kernels' NumPy passes instead of their compiled loops (the engine before Numba).
PATH_ENVIRONMENTS = {"library_opt_out": {"MINIGRAD_MALLOC_TUNING": "0"},
                     "library_numpy_kernels": {"MINIGRAD_CPU_KERNELS": "numpy"}}


def _child(path: str, name: str, steps: int, device: str) -> dict:
    """In a fresh process: median step seconds of one path, page faults per step, peak RSS."""
    if path == "cli":
        mg.backend.tune_for_training()
    cfg, batch = CONFIGS[name]
    model, step = minigrad_setup(cfg, batch, device)
    if path == "torch":
        step = torch_setup(model, cfg, batch, device)
    for _ in range(2):
        step()
    times, faults = [], []
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"seconds": statistics.median(times), "faults": statistics.median(faults),
            "peak_rss_mib": mg.backend.peak_memory_bytes("cpu") / 2**20}


def _in_fresh_process(path: str, name: str, steps: int, device: str) -> dict | None:
    """_child's result, or None where the path cannot run (PyTorch not installed)."""
    job = json.dumps([path, name, steps, device])
    env = {**os.environ, **PATH_ENVIRONMENTS.get(path, {})}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.train_step", "--child", job],
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        if path == "torch" and "No module named 'torch'" in proc.stderr:
            return None
        raise RuntimeError(f"benchmarks.train_step child {job} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(configs, steps: int, device: str = "cpu", rounds: int = 2,
        paths: tuple[str, ...] = PATHS) -> list[dict]:
    """S and M train steps of each of `paths` (PATHS), each in a fresh process, taking turns."""
    peak = numpy_gemm_flops() if device == "cpu" else None
    rows = []
    for name in configs:
        cfg, batch = CONFIGS[name]
        tokens = batch * cfg.context_length
        flops = cfg.flops_per_token() * tokens
        runs: dict[str, list[dict]] = {path: [] for path in paths}
        for _ in range(rounds):
            for path in paths:
                result = _in_fresh_process(path, name, steps, device)
                if result is not None:
                    runs[path].append(result)
        row = {"config": name, "device": device, "batch": batch}
        for path, results in runs.items():
            if not results:
                continue
            seconds = statistics.median(r["seconds"] for r in results)
            row.update({f"{path}_ms": seconds * 1e3, f"{path}_tok_s": tokens / seconds,
                        f"{path}_faults_per_step": statistics.median(r["faults"] for r in results),
                        f"{path}_peak_rss_mib": max(r["peak_rss_mib"] for r in results)})
            if peak and path != "torch":
                row[f"{path}_mfu"] = flops / seconds / peak
        if runs.get("torch"):
            for path in [p for p in paths if p != "torch"]:
                row[f"{path}_vs_torch"] = row["torch_ms"] / row[f"{path}_ms"]
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["S", "M"], choices=sorted(CONFIGS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2, help="turns of the paths")
    p.add_argument("--device", default="cpu")
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    p.add_argument("--out", help="also write the rows here as JSON")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*json.loads(args.child))))
        return
    info = machine()
    print(json.dumps(info))
    rows = run(args.configs, args.steps, args.device, args.rounds, tuple(args.paths))
    for row in rows:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
