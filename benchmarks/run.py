"""The benchmark suite in one command: per-op overhead and kernels, GPT train steps (S, M),
a scaling table, on every backend present, with PyTorch side by side when installed.

    python -m benchmarks.run [--quick] [--out benchmarks/results/latest.json]

The train steps run each path in a fresh process, taking turns: the library path a user's own
script gets (nothing called first), the command-line tools' path, PyTorch eager, and the
library path without the allocator setting (benchmarks/train_step.py). Prints tables (ratios
are PyTorch time / minigrad_lm time: above 1 means minigrad_lm is faster) and writes all
numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import minigrad_lm as mg
from minigrad_lm.models import GPTConfig

from . import ops, train_step
from .harness import machine, numpy_gemm_flops


def table(title: str, rows: list[dict]) -> str:
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = [f"## {title}", "  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def scaling_rows(steps: int) -> list[dict]:
    """Step time as context length and model width double (minigrad_lm, CPU)."""
    rows = []
    for context, width in [(64, 128), (128, 128), (256, 128), (64, 256), (64, 512)]:
        cfg = GPTConfig(vocab_size=65, context_length=context, n_layer=4, n_head=4,
                        d_model=width)
        seconds = train_step.minigrad_step_seconds(cfg, 8, steps)
        rows.append({"context": context, "d_model": width, "ms": seconds * 1e3,
                     "tokens_per_s": 8 * context / seconds,
                     "gflops": cfg.flops_per_token() * 8 * context / seconds / 1e9})
    return rows


def peak_memory_rows() -> list[dict]:
    """Peak resident memory of 3 config-M steps, each implementation in a fresh process."""
    rows = []
    for impl in ("minigrad", "torch"):
        cmd = [sys.executable, "-m", "benchmarks.memory", impl]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "latest.json"))
    args = p.parse_args(argv)
    steps = 3 if args.quick else 10
    devices = ["cpu"] + (["cuda"] if mg.cuda_available() else [])
    info = machine()
    info["numpy_gemm_gflops"] = numpy_gemm_flops() / 1e9
    results = {"machine": info}
    print(json.dumps(info))
    for device in devices:
        sections = {
            f"per-op overhead, 4x4 arrays ({device})": ops.overhead_rows(device),
            f"throughput vs raw array module ({device})": ops.throughput_rows(device),
            f"fused kernels forward+backward, config-M sizes ({device})":
                ops.fused_rows(device),
            f"GPT train step ({device})": train_step.run(["S", "M"], steps, device),
        }
        if device == "cpu":
            sections["scaling (cpu, 4 layers, batch 8)"] = scaling_rows(steps)
            sections["peak memory, config M step (cpu)"] = peak_memory_rows()
        for title, rows in sections.items():
            print(table(title, rows))
            results[title] = rows
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out} (max RSS of this process: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
