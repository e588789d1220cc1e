"""Timing helpers shared by the benchmarks: medians of repeated runs, machine description."""
from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np


def median_seconds(fn, repeats: int = 10, warmup: int = 2, sync=None) -> float:
    """Median wall time of fn() over `repeats` runs after `warmup` runs (sync() after each)."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step(loss_fn, optimizer, sync=None):
    """One loss -> zero_grad -> backward -> step, for minigrad_lm and PyTorch alike (the same
    optimizer API); returns the loss."""
    def step():
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if sync:
            sync()
        return loss
    return step


def median_train_step(loss_fn, optimizer, repeats: int, sync=None) -> tuple[float, object]:
    """(median seconds, last loss) of train steps."""
    losses = []
    step = train_step(loss_fn, optimizer, sync)
    return median_seconds(lambda: losses.append(step()), repeats, warmup=2), losses[-1]


def interleaved_medians(fns: dict, repeats: int, block: int = 1, warmup: int = 2) -> dict:
    """name -> median seconds of each fn, the fns taking turns (`block` calls each).

    This machine's speed drifts by 20% over minutes; timing one implementation after the other
    puts that drift into their ratio, taking turns makes it slow both alike.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(-(-repeats // block)):
        for name, fn in fns.items():
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def numpy_gemm_flops(n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 GEMM rate of NumPy's BLAS (FLOP/s): the machine's practical peak."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = a.copy()
    return 2 * n ** 3 / median_seconds(lambda: a @ b, repeats=repeats, warmup=1)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__}
    try:
        import threadpoolctl
        blas = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
        if blas:
            info["blas"] = f"{blas[0]['internal_api']} {blas[0].get('version')} " \
                           f"({blas[0].get('architecture')}, {blas[0]['num_threads']} threads)"
    except ImportError:
        pass
    try:
        import numba
        info["numba"] = numba.__version__
    except ImportError:
        info["numba"] = None
    try:
        import torch
        info["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        pass
    return info


def cli_training(argv: list[str]) -> tuple[float, list[dict], list[dict]]:
    """One run of ``python -m minigrad_lm.train argv`` in this process, quietly: (seconds, its
    eval records, its train records) from the run folder's metrics.jsonl."""
    import contextlib
    import io

    from minigrad_lm import train
    from minigrad_lm.checkpoints.metrics import read_metrics

    log, errors = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(errors):
        code = train.main(argv)
    seconds = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"training failed ({code}):\n{log.getvalue()[-2000:]}\n"
                           f"{errors.getvalue()[-2000:]}")
    records = read_metrics(argv[argv.index("--out") + 1])
    return (seconds, [r for r in records if r["kind"] == "eval"],
            [r for r in records if r["kind"] == "train"])
