"""Score a checkpoint on a file: loss, perplexity and next-token accuracy of a language model
(of the hidden tokens, for a masked one), loss and accuracy of a classifier, loss,
perplexity and BLEU of a translation model, or exact match and F1 of a question-answering
model (with bAbI's error per task).

    python -m minigrad_lm.evaluate --ckpt runs/sst2 --data dev.tsv
    python -m minigrad_lm.evaluate --ckpt runs/mr --data neg.txt pos.txt --encoding latin-1 --json
    python -m minigrad_lm.evaluate --ckpt runs/default --data notes.txt
    python -m minigrad_lm.evaluate --ckpt runs/de-en --data val.de val.en
    python -m minigrad_lm.evaluate --ckpt runs/babi --data qa1_valid.txt qa2_valid.txt

--data reads as in training: for a language model text files, scored in consecutive windows
of the model's context (a masked language model's with 15% of the tokens hidden, the same ones
every time); for a classifier a TSV/CSV file (sentence/text and label columns) or one file of
sentences per class (labels 0, 1, ... in the order given); for a translation model SOURCE_FILE
TARGET_FILE, line-aligned (BLEU of beam-4 translations); for a question-answering model
SQuAD JSON or bAbI files (SQuAD's normalisation, the best over the gold answers; for bAbI also
the error per task, the mean error and the tasks failed, error > 5%). Prints a report, or with
--json one JSON object. --ckpt takes a run folder (its best/ checkpoint, else latest/) or a checkpoint
folder.
"""

from __future__ import annotations

import argparse
import json
import sys

from .backend import check_device
from .cli import checkpoint_parser, report_errors
from .checkpoints.folder import read_checkpoint

__all__ = ["evaluate", "main"]


def evaluate(ckpt, model, data: list[str], encoding: str = "utf-8",
             batch_size: int = 64) -> dict:
    """The metrics of ``model`` (read from ``ckpt``) on the files ``data``, as its task
    scores a file."""
    return ckpt.kind.score_file(ckpt, model, data, encoding, batch_size)


def _evaluate(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    ckpt = read_checkpoint(args.ckpt)
    model = ckpt.build_model(device)
    metrics = evaluate(ckpt, model, args.data, args.encoding, args.batch_size)
    print(json.dumps({"ckpt": ckpt.path, "data": args.data, **metrics}) if args.json
          else ckpt.kind.report(", ".join(args.data), metrics))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = checkpoint_parser("evaluate", __doc__)
    parser.add_argument("--data", required=True, nargs="+", metavar="FILE",
                        help="file(s) to score, read as in training")
    parser.add_argument("--encoding", default="utf-8", help="text encoding (default: utf-8)")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N",
                        help="rows, windows or sentence pairs per forward pass (default: 64)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    return report_errors(lambda: _evaluate(args))


if __name__ == "__main__":
    sys.exit(main())
