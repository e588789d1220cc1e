"""Where a GPU train step's time goes: each Function's forward and backward timed with device
synchronisation (slower than a real step; read the shares, not the total).

    python -m benchmarks.gpu_profile [--batch 8] [--context 1024]
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

import minigrad_lm as mg
from minigrad_lm.engine.tensor import Function
from minigrad_lm.models import GPT
from minigrad_lm.optim import Adam

from .gpu import gpt2_small


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--context", type=int, default=1024)
    args = p.parse_args(argv)
    cp = mg.backend.cupy()
    sync = cp.cuda.Device().synchronize
    totals = defaultdict(float)
    classes = {c for c in _subclasses(Function)}
    for cls in classes:
        for name in ("forward", "backward"):
            original = cls.__dict__.get(name)
            if original is None:
                continue

            def timed(self, *a, _orig=original, _key=f"{cls.__name__}.{name}", **k):
                sync()
                t0 = time.perf_counter()
                out = _orig(self, *a, **k)
                sync()
                totals[_key] += time.perf_counter() - t0
                return out
            setattr(cls, name, timed)
    mg.manual_seed(0)
    cfg = gpt2_small(args.context)
    model = GPT(cfg).to("cuda")
    opt = Adam(model.parameters(), lr=1e-4)
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (args.batch, args.context + 1))
    for i in range(3):
        if i == 1:
            totals.clear()
        sync()
        t0 = time.perf_counter()
        loss = model.loss(ids[:, :-1], ids[:, 1:])
        opt.zero_grad()
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        sync()
        totals["optimizer.step"] += time.perf_counter() - t1
        totals["whole step"] += time.perf_counter() - t0
    for key, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{key:40s} {seconds / 2 * 1e3:9.2f} ms/step")


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


if __name__ == "__main__":
    main()
