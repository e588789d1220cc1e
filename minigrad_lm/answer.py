"""Answer questions with a question-answering checkpoint (``--task qa``).

    python -m minigrad_lm.answer --ckpt runs/squad --context "The Rhine flows ..." "Where?"
    python -m minigrad_lm.answer --ckpt runs/squad --context-file article.txt "Who?" "When?"
    python -m minigrad_lm.answer --ckpt runs/squad --file dev.json --out predictions.json

With a context, prints one line per question: the answer (the context's own characters, or
a class answer such as bAbI's "yes"), a tab, and its probability. With --file (SQuAD JSON or
bAbI text, read as in training) writes the official SQuAD predictions file, a JSON object of
question id -> answer, to --out (default: stdout). A context longer than the model's window is
read in overlapping windows (--stride, default: the training run's); a model that reads facts
(bAbI's) cuts the context into statements at its lines and after ".", "!" and "?".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .backend import check_device
from .checkpoints.kinds import QAKind
from .cli import checkpoint_parser, read_context, report_errors
from .data.qa import QAExample, read_qa
from .inference.qa import answer_examples
from .io.files import atomic_write_json, json_text
from .checkpoints.folder import read_checkpoint_of

__all__ = ["main"]


def _examples(args: argparse.Namespace) -> list[QAExample]:
    if args.file is not None:
        if args.questions or args.context is not None or args.context_file is not None:
            raise ValueError("--file holds its own questions and contexts: give no questions, "
                             "--context or --context-file with it")
        return read_qa(args.file).examples
    if not args.questions:
        raise ValueError("no question: give questions as arguments (with --context or "
                         "--context-file), or --file")
    if args.out is not None:
        raise ValueError("--out writes the predictions of --file")
    context = read_context(args.context, args.context_file, args.encoding)
    for n, q in enumerate(args.questions, 1):
        if not q.strip():
            raise ValueError(f"question {n} is empty")
    return [QAExample(f"question {n}", q, context, [], [], "span", "", f"question {n}")
            for n, q in enumerate(args.questions, 1)]


def _answer(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    for flag in ("stride", "max_answer_tokens", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if args.out is not None and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out}: is a folder")
    examples = _examples(args)
    ckpt = read_checkpoint_of(args.ckpt, QAKind.name)
    stride, longest = QAKind.reading(ckpt)
    model = ckpt.build_model(device, batch=args.batch_size)
    answers = answer_examples(model, ckpt.tokenizer, ckpt.extras["answers"], examples,
                              args.stride or stride, args.max_answer_tokens or longest,
                              args.batch_size)
    if args.file is None:
        for a in answers:
            print(f"{a.text}\t{a.probability:.4f}")
        return 0
    predictions = {e.qid: a.text for e, a in zip(examples, answers)}
    if args.out is None:
        sys.stdout.write(json_text(predictions) + "\n")
    else:
        atomic_write_json(args.out, predictions)
        print(f"wrote {len(predictions):,} answers to {args.out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = checkpoint_parser("answer", __doc__)
    parser.add_argument("--context", metavar="TEXT", help="the text the questions are about")
    parser.add_argument("--context-file", metavar="FILE", help="read the context from FILE")
    parser.add_argument("--file", metavar="FILE",
                        help="answer every question of a SQuAD JSON or bAbI file")
    parser.add_argument("--out", metavar="FILE",
                        help="with --file: write the predictions JSON here (default: stdout)")
    parser.add_argument("--encoding", default="utf-8",
                        help="text encoding of --context-file (default: utf-8)")
    parser.add_argument("--stride", type=int, metavar="N",
                        help="tokens between window starts (default: the training run's)")
    parser.add_argument("--max-answer-tokens", type=int, metavar="N",
                        help="the longest span answer (default: the training run's)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N",
                        help="windows per forward pass (default: 32)")
    parser.add_argument("questions", nargs="*", help="questions about the context")
    args = parser.parse_args(argv)
    return report_errors(lambda: _answer(args))


if __name__ == "__main__":
    sys.exit(main())
