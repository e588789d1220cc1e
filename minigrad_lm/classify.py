"""Classify sentences with a trained classifier checkpoint.

    python -m minigrad_lm.classify --ckpt runs/sst2 "a gripping, funny film" "dull and slow"
    python -m minigrad_lm.classify --ckpt runs/mr --file reviews.txt --encoding latin-1

Prints one line per input line: the predicted label, a tab, and its probability, or an empty
line for a blank input line, so the output stays line-aligned with the input. Sentences come
from the arguments, else from --file (one a line, gzip or not; ``-`` is stdin), else from stdin;
files and stdin are read alike (a BOM dropped, CRLF or CR ends a line). --ckpt takes a run
folder (its best/ checkpoint, else latest/) or a checkpoint folder. Sentences longer than the
model's context keep their first context tokens, as in training.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .backend import check_device
from .cli import checkpoint_parser, read_sentences, report_errors
from .data.labeled import encode_sentences
from .engine.ops import softmax
from .engine.tensor import no_grad
from .checkpoints.folder import read_checkpoint_of

__all__ = ["main", "predict"]

BATCH = 64


def predict(model, tokenizer, sentences: list[str], names: list[str] | None = None,
            truncation: str = "head") -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities of those labels) for ``sentences``, cut to the model's context
    by ``truncation`` as in training."""
    context = model.body.config.context_length
    names = names or [f"sentence {i + 1}" for i in range(len(sentences))]
    ids, lengths, _ = encode_sentences(tokenizer, sentences, context, model.pooling, names,
                                       truncation)
    probs = []
    with no_grad():
        for lo in range(0, len(sentences), BATCH):
            width = int(lengths[lo:lo + BATCH].max())
            logits = model(ids[lo:lo + BATCH, :width], lengths[lo:lo + BATCH])
            probs.append(softmax(logits, axis=-1).numpy())
    p = np.concatenate(probs).astype(np.float64)
    labels = p.argmax(axis=-1)
    return labels, p[np.arange(len(labels)), labels]


def _classify(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    lines, names = read_sentences(args.sentences, args.file, args.encoding)
    todo = [i for i, line in enumerate(lines) if line.strip()]
    if not todo:
        raise ValueError("no sentences: give them as arguments, with --file, or one per line "
                         "on stdin")
    ckpt = read_checkpoint_of(args.ckpt, "classify")
    model = ckpt.build_model(device, batch=BATCH)
    labels, probs = predict(model, ckpt.tokenizer, [lines[i] for i in todo],
                            [names[i] for i in todo], ckpt.truncation)
    out = [""] * len(lines)  # a blank line gives an empty line
    for i, label, prob in zip(todo, labels, probs, strict=True):
        out[i] = f"{label}\t{prob:.4f}"
    print("\n".join(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = checkpoint_parser("classify", __doc__)
    parser.add_argument("--file", metavar="FILE",
                        help="classify each line of FILE (gzip or not; - for stdin)")
    parser.add_argument("--encoding", default="utf-8",
                        help="text encoding of --file or stdin (default: utf-8)")
    parser.add_argument("sentences", nargs="*", help="sentences to classify (default: --file, "
                        "else stdin)")
    args = parser.parse_args(argv)
    return report_errors(lambda: _classify(args))


if __name__ == "__main__":
    sys.exit(main())
