"""Data-parallel scaling: tokens/s of a config-S training step from 1 to N ranks (one BLAS thread
each), and the share of the step spent in the gradient all-reduce.

    python -m benchmarks.distributed [--ranks 1 2] [--steps 30] [--device cpu|cuda]

Weak scaling, as --distributed trains: every rank keeps config S's batch of 12 sequences, so N
ranks process N times the tokens of one per step; perfect scaling is N times the tokens/s. Each
rank count is its own ``mpiexec -n N`` job running this module with ``--worker``; the first row
is one process without MPI, the baseline that the MPI rows are compared with.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import minigrad_lm as mg
from minigrad_lm.models import GPT
from minigrad_lm.optim import AdamW, clip_grad_norm_, decay_groups
from minigrad_lm.train import distributed

from .harness import machine
from .train_step import CONFIGS

REPO = Path(__file__).resolve().parents[1]


def worker(steps: int, warmup: int, device: str, mpi: bool) -> dict:
    """Time ``steps`` training steps on this rank; rank 0's medians (steps end in lockstep)."""
    world = distributed.init() if mpi else distributed.LOCAL
    device = world.use_device(device)
    cfg, batch = CONFIGS["S"]
    mg.manual_seed(0)
    model = GPT(cfg).to(device)
    opt = AdamW(decay_groups(model, 0.1), lr=1e-4)
    world.sync_optimizer(opt)
    ids = np.random.default_rng(world.rank).integers(
        0, cfg.vocab_size, (batch, cfg.context_length + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    step_s, comm_s = [], []
    for i in range(warmup + steps):
        world.sum(0.0)  # start together, so no rank's wait for another counts as comms
        start = time.perf_counter()
        opt.zero_grad()
        model.loss(x, y).backward()
        comm = world.allreduce_(opt.grad_buffers())
        opt.scale_grads_(1.0 / world.size)
        float(clip_grad_norm_(model.parameters(), 1.0))  # reads the norm: a device sync
        opt.step()
        if i >= warmup:
            step_s.append(time.perf_counter() - start)
            comm_s.append(comm)
    step, comm = statistics.median(step_s), statistics.median(comm_s)
    return {
        "ranks": world.size,
        "mpi": mpi,
        "transport": world.transport,
        "device": device,
        "step_ms": step * 1e3,
        "comm_ms": comm * 1e3,
        "comm_share": comm / step,
        "tokens_per_s": world.size * batch * cfg.context_length / step,
        "is_root": world.is_root,
    }


def _mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit("mpiexec not found: pip install -e '.[dist]'")
    return found


def _run(ranks: int | None, steps: int, warmup: int, device: str) -> dict:
    """One job: ``ranks`` MPI ranks, or one process without MPI when ``ranks`` is None."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    cmd = [sys.executable, "-m", "benchmarks.distributed", "--worker", "--steps", str(steps),
           "--warmup", str(warmup), "--device", device]
    if ranks is not None:
        mpiexec = _mpiexec()
        version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                                 check=False).stdout
        # Open MPI: one core per rank (its default for so few ranks), said explicitly.
        extra = ["--bind-to", "core"] if "Open MPI" in version else []
        cmd = [mpiexec, *extra, "-n", str(ranks), *cmd, "--mpi"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return next(r for r in rows if r.pop("is_root"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3, help="jobs per row; the median is kept")
    p.add_argument("--out", default=None, help="also write the rows as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.steps, args.warmup, args.device, args.mpi)), flush=True)
        return
    rows = []
    for ranks in [None, *args.ranks]:
        runs = [_run(ranks, args.steps, args.warmup, args.device) for _ in range(args.repeats)]
        row = sorted(runs, key=lambda r: r["tokens_per_s"])[len(runs) // 2]
        rows.append(row)
    # One rank over MPI is the baseline when measured, else one process without MPI.
    base = next((r for r in rows if r["mpi"] and r["ranks"] == 1), rows[0])["tokens_per_s"]
    print(f"config S (batch {CONFIGS['S'][1]} per rank), {args.steps} steps, one thread per "
          f"rank, median of {args.repeats} jobs")
    print(f"{'job':<16}{'step ms':>9}{'comm ms':>9}{'comm %':>8}{'tokens/s':>10}{'scaling':>9}")
    for r in rows:
        job = f"{r['ranks']} rank(s)" if r["mpi"] else "1 process, no MPI"
        scaling = r["tokens_per_s"] / (base * r["ranks"])
        r["scaling_efficiency"] = scaling
        print(f"{job:<16}{r['step_ms']:>9.1f}{r['comm_ms']:>9.2f}{r['comm_share']:>8.1%}"
              f"{r['tokens_per_s']:>10,.0f}{scaling:>9.0%}")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
