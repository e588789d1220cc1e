"""Score a checkpoint on a file: loss and accuracy of a classifier, or loss, perplexity and
next-token accuracy of a language model (of the hidden tokens, for a masked one).

    python -m minigrad_lm.evaluate --ckpt runs/sst2 --data dev.tsv
    python -m minigrad_lm.evaluate --ckpt runs/mr --data neg.txt pos.txt --encoding latin-1 --json
    python -m minigrad_lm.evaluate --ckpt runs/default --data notes.txt

--data reads as in training: for a classifier a TSV/CSV file (sentence/text and label
columns) or one file of sentences per class (labels 0, 1, ... in the order given); for a
language model text files, scored in consecutive windows of the model's context (a masked
language model's with 15% of the tokens hidden, the same ones every time). Prints one
line, or with --json one JSON object. --ckpt takes a run folder (its best/ checkpoint, else
latest/) or a checkpoint folder.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from .backend import check_device
from .cli import report_errors
from .data.labeled import load_labeled
from .data.text import load_text
from .engine.tensor import no_grad
from .train.checkpoint import read_checkpoint
from .train.tasks.classify import encode_sentences, score_classifier
from .train.tasks.common import encode_text
from .train.tasks.lm import score_lm
from .train.tasks.masked_lm import score_masked_lm

__all__ = ["evaluate", "main"]


def evaluate(ckpt, model, data: list[str], encoding: str = "utf-8",
             batch_size: int = 64) -> dict:
    """The metrics of ``model`` (read from ``ckpt``) on the files ``data``."""
    tokenizer = ckpt.tokenizer
    if tokenizer is None:
        raise ValueError(f"{ckpt.path}: trained on token ids without a tokenizer; it cannot "
                         "read text files")
    context = (model.body if ckpt.task == "classify" else model).config.context_length
    with no_grad():
        if ckpt.task == "classify":
            rows = load_labeled(data, encoding)
            if int(rows.labels.max()) >= ckpt.num_classes:
                i = int(rows.labels.argmax())
                raise ValueError(f"{rows.names()[i]}: label {int(rows.labels[i])}, but the "
                                 f"classifier has {ckpt.num_classes} classes")
            ids, lengths, cut = encode_sentences(tokenizer, rows.texts, context, ckpt.pooling,
                                                 rows.names(), ckpt.truncation)
            loss, correct = score_classifier(model, ids, lengths, rows.labels, batch_size)
            n = len(rows.labels)
            return {"task": "classify", "rows": n, "loss": loss / n, "accuracy": correct / n,
                    "cut_to_context": cut}
        text = "\n".join(load_text(p, encoding) for p in data)
        ids = encode_text(tokenizer, text, ", ".join(data))
        if model.config.causal:
            loss, correct, tokens = score_lm(model, ids, context, batch_size)
        else:
            loss, correct, tokens = score_masked_lm(model, ids, context, batch_size, tokenizer)
        return {"task": "lm", "objective": "next token" if model.config.causal else "masked",
                "tokens": tokens, "loss": loss / tokens,
                "perplexity": math.exp(min(loss / tokens, 700.0)), "accuracy": correct / tokens}


def _line(data: list[str], m: dict) -> str:
    where = ", ".join(data)
    if m["task"] == "classify":
        return (f"{where}: {m['rows']:,} rows | loss {m['loss']:.4f} | accuracy "
                f"{m['accuracy']:.1%}")
    scored = "tokens" if m["objective"] == "next token" else "hidden tokens"
    return (f"{where}: {m['tokens']:,} {scored} | loss {m['loss']:.4f} | perplexity "
            f"{m['perplexity']:.2f} | {m['objective']} accuracy {m['accuracy']:.1%}")


def _evaluate(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    ckpt = read_checkpoint(args.ckpt)
    model = ckpt.build_model(device)
    metrics = evaluate(ckpt, model, args.data, args.encoding, args.batch_size)
    print(json.dumps({"ckpt": ckpt.path, "data": args.data, **metrics}) if args.json
          else _line(args.data, metrics))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigrad_lm.evaluate",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, metavar="DIR",
                        help="run folder (uses best/, else latest/) or checkpoint folder")
    parser.add_argument("--data", required=True, nargs="+", metavar="FILE",
                        help="file(s) to score, read as in training")
    parser.add_argument("--encoding", default="utf-8", help="text encoding (default: utf-8)")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N",
                        help="rows or windows per forward pass (default: 64)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    return report_errors(lambda: _evaluate(args))


if __name__ == "__main__":
    sys.exit(main())
