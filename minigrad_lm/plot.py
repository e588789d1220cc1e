"""Draw a run's train and val loss curves to a PNG.

    python -m minigrad_lm.plot runs/default            # writes runs/default/loss.png

Reads DIR/metrics.jsonl. Needs matplotlib, an optional extra: pip install "minigrad-lm[plot]"
(or pip install matplotlib).
"""

from __future__ import annotations

import argparse
import io
import os
import sys

import numpy as np

from .cli import report_errors
from .io.files import atomic_write_bytes
from .checkpoints.metrics import read_metrics

__all__ = ["main", "plot_losses"]

INSTALL_HINT = (
    'plotting needs matplotlib, an optional extra: pip install "minigrad-lm[plot]" '
    "(or pip install matplotlib)"
)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average; per-step losses are too noisy to read otherwise."""
    if window <= 1 or len(values) < window:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    head = sums[1:window] / np.arange(1, window)
    return np.concatenate([head, (sums[window:] - sums[:-window]) / window])


def plot_losses(records: list[dict], path: str, title: str) -> None:
    """Per-step train loss (raw and smoothed) and each evaluation's train/val loss.

    The image goes through a temporary file renamed over ``path``: a symlink planted at
    ``path`` is replaced, never followed to overwrite its target.
    """
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise ModuleNotFoundError(INSTALL_HINT) from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None]
    evals = [r for r in records if r.get("kind") == "eval" and r.get("val_loss") is not None]
    if not train and not evals:
        raise ValueError(f"{title}: no losses recorded yet")
    fig, ax = plt.subplots(figsize=(8, 5))
    if train:
        steps = np.array([r["step"] for r in train])
        losses = np.array([r["loss"] for r in train], dtype=float)
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8)
        window = max(1, len(losses) // 50)
        ax.plot(steps, _smooth(losses, window), color="tab:blue", label="train (per step)")
    if evals:
        scored = [r for r in evals if r.get("train_loss") is not None]
        ax.plot([r["step"] for r in scored], [r["train_loss"] for r in scored], "o--",
                color="tab:green", label="train (eval)")
        ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-",
                color="tab:orange", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, png.getvalue())


def _plot(args: argparse.Namespace) -> int:
    records = read_metrics(args.run_dir)
    path = args.output or os.path.join(args.run_dir, "loss.png")
    try:
        plot_losses(records, path, os.path.basename(os.path.normpath(args.run_dir)))
    except ModuleNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minigrad_lm.plot", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dir", metavar="DIR", help="a training run folder (--out of train)")
    parser.add_argument("--output", metavar="PNG", help="image path (default: DIR/loss.png)")
    args = parser.parse_args(argv)
    return report_errors(lambda: _plot(args))


if __name__ == "__main__":
    sys.exit(main())
