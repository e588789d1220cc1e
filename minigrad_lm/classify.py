"""Classify sentences with a fine-tuned classifier checkpoint.

    python -m minigrad_lm.classify --ckpt runs/sst2 "a gripping, funny film" "dull and slow"

Prints one line per sentence: the predicted label, a tab, and its probability. Without sentence
arguments, each line of stdin is one sentence. --ckpt takes a run folder (its best/ checkpoint,
else latest/) or a checkpoint folder. Sentences longer than the model's context keep their
first context tokens, as in training.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .checkpoint import CheckpointError
from .cli import check_device, report_errors
from .data import encode_classification
from .ops import softmax
from .run_state import read_checkpoint
from .tensor import no_grad

__all__ = ["main", "predict"]

BATCH = 64


def predict(model, tokenizer, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities of those labels) for ``sentences``."""
    context = model.body.config.context_length
    names = [f"sentence {i + 1}" for i in range(len(sentences))]
    ids, lengths = encode_classification(sentences, tokenizer, context, names)
    probs = []
    with no_grad():
        for lo in range(0, len(sentences), BATCH):
            logits = model(ids[lo:lo + BATCH], lengths[lo:lo + BATCH])
            probs.append(softmax(logits, axis=-1).numpy())
    p = np.concatenate(probs).astype(np.float64)
    labels = p.argmax(axis=-1)
    return labels, p[np.arange(len(labels)), labels]


def _classify(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    sentences = args.sentences or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not sentences:
        raise ValueError("no sentences: give them as arguments or one per line on stdin")
    ckpt = read_checkpoint(args.ckpt)
    if ckpt.task != "classify":
        raise CheckpointError(
            f"{ckpt.path}: a {ckpt.task} checkpoint, not a classifier; train one with "
            "python -m minigrad_lm.train --task classify"
        )
    model = ckpt.build_model(device, batch=BATCH)
    labels, probs = predict(model, ckpt.tokenizer, sentences)
    for label, prob in zip(labels, probs, strict=True):
        print(f"{label}\t{prob:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minigrad_lm.classify", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--ckpt", required=True, metavar="DIR",
                        help="run folder (uses best/, else latest/) or checkpoint folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("sentences", nargs="*", help="sentences to classify (default: stdin)")
    args = parser.parse_args(argv)
    return report_errors(lambda: _classify(args))


if __name__ == "__main__":
    sys.exit(main())
