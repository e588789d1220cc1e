"""nanoGPT's CPU recipe end to end: `python -m minigrad_lm.train` against nanoGPT's train.py.

    python -m benchmarks.nanogpt_recipe                          # our side alone
    python -m benchmarks.nanogpt_recipe --nanogpt ~/src/nanoGPT  # nanoGPT first, then ours

nanoGPT's README trains a character-level model on Tiny Shakespeare on a CPU with
config/train_shakespeare_char.py and --device=cpu --compile=False --block_size=64
--batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000
--dropout=0.0; here its evaluations use 200 batches (the config's eval_iters) instead of the
README's 20, for a val loss worth comparing. Our command sets the same model, batch, schedule
(lr 1e-3 to 1e-4, 100 warmup steps, beta2 0.99, weight decay 0.1, clipping at 1.0), the same
90/10 split of the text and the same evaluations (every 250 steps, 200 batches of train and of
val text); nanoGPT also evaluates at step 0. Each side is one process, timed by wall clock from
start to exit, nanoGPT just before ours. Reads ../shared/data/tinyshakespeare.txt (nanoGPT's
input.txt); skips with a message when absent. Writes benchmarks/results/nanogpt_recipe_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import machine

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
RESULTS = REPO / "benchmarks" / "results" / "nanogpt_recipe_cpu.json"

NANOGPT_FLAGS = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
                 "--eval_iters=200", "--log_interval=100", "--block_size=64", "--batch_size=12",
                 "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
                 "--lr_decay_iters=2000", "--dropout=0.0"]
OUR_FLAGS = ["--tokenizer", "char", "--context", "64", "--batch-size", "12", "--n-layer", "4",
             "--n-head", "4", "--d-model", "128", "--max-steps", "2000", "--decay-steps", "2000",
             "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-steps", "100", "--beta2", "0.99",
             "--weight-decay", "0.1", "--grad-clip", "1.0", "--dropout", "0.0",
             "--eval-every", "250", "--eval-batches", "200", "--log-every", "100",
             "--sample-tokens", "0"]


def _timed(cmd: list[str], cwd: Path, val_pattern: str) -> dict:
    """Wall seconds of cmd and the last val loss its output reports."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    losses = re.findall(val_pattern, proc.stdout)
    return {"seconds": seconds, "val_loss": float(losses[-1]) if losses else None,
            "command": " ".join(cmd)}


def run_nanogpt(checkout: Path, text: Path, work: Path) -> dict:
    """nanoGPT's recipe in a copy of its shakespeare_char data folder (prepare.py reads
    input.txt when present, so nothing is downloaded)."""
    data = checkout / "data" / "shakespeare_char"
    shutil.copy(text, data / "input.txt")
    subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, capture_output=True)
    return _timed([sys.executable, "train.py", *NANOGPT_FLAGS, f"--out_dir={work / 'nanogpt'}"],
                  checkout, r"val loss ([0-9.]+)")


def run_ours(text: Path, work: Path) -> dict:
    return _timed([sys.executable, "-m", "minigrad_lm.train", "--data", str(text),
                   "--out", str(work / "ours"), *OUR_FLAGS], REPO, r"\| val ([0-9.]+)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout (run just before ours)")
    p.add_argument("--data", type=Path, default=DATA, help="Tiny Shakespeare's input.txt")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if not args.data.is_file():
        print(f"skipped: {args.data} is not here")
        return 0
    if args.nanogpt and not (args.nanogpt / "train.py").is_file():
        p.error(f"--nanogpt {args.nanogpt}: no train.py there")
    result = {"machine": machine(), "data": str(args.data)}
    with tempfile.TemporaryDirectory() as tmp:
        if args.nanogpt:
            result["nanogpt"] = run_nanogpt(args.nanogpt, args.data, Path(tmp))
            print(json.dumps(result["nanogpt"]))
        result["minigrad_lm"] = run_ours(args.data, Path(tmp))
        print(json.dumps(result["minigrad_lm"]))
    if "nanogpt" in result:
        result["speed_vs_nanogpt"] = result["nanogpt"]["seconds"] / result["minigrad_lm"]["seconds"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
