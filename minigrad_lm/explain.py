"""Show why a trained model decided: token attributions and attention maps.

    python -m minigrad_lm.explain --ckpt runs/mr "a gripping , funny film"
    python -m minigrad_lm.explain --ckpt runs/mr --file reviews.txt --encoding latin-1 \\
        --html report.html --png pictures/ --json explained.json
    python -m minigrad_lm.explain --ckpt runs/default "Return the" --method grad-x-input
    python -m minigrad_lm.explain --ckpt runs/de-en "Ein Hund läuft im Park." --html de-en.html
    python -m minigrad_lm.explain --ckpt runs/squad --context-file article.txt "Who?" "When?"

A classifier: the attribution of each token to the logit of the predicted class (--target
CLASS for another) by integrated gradients over the token embeddings (--steps points, from
--baseline; the completeness check, the attributions' sum against f(x) - f(baseline), is
printed), or gradient x input (--method grad-x-input, one backward pass). A causal language
model: the same for the logit of the likeliest next token (--target TOKEN for another). A
translation model: its output (beam search, --beam) and the cross-attention of each output token
over the source, per layer and head and averaged. Every model: the attention of each layer and
head. What each checkpoint kind explains is its ``explain`` (checkpoints/kinds.py). A
classifier reads a sentence's first context-length tokens, as in training; a language model
its last ones. A question-answering model: each sentence is a question about --context TEXT
(or --context-file FILE); the attributions over question and context tokens are of the answer
``answer`` chooses, a span's start plus end logit or a class answer's logit; a context longer
than one window is explained in the window that holds the answer, as the output says.

On a terminal the tokens are coloured (green raises the explained logit, red lowers it);
otherwise each token and its score is a line. --html writes one self-contained page (no
network needed to view it), --png heatmaps (matplotlib), --json the raw numbers (- for stdout,
instead of the text). Sentences come from the arguments, else --file (one a line; - is
stdin), else stdin. --ckpt takes a run folder (its best/ checkpoint, else latest/) or a
checkpoint folder.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from .backend import check_device
from .cli import checkpoint_parser, read_context, read_sentences, report_errors
from .inference.explain import BASELINES, ExplainOptions
from .inference.explain_views import html_report, json_record, terminal_lines, write_pngs
from .io.files import CheckpointError, atomic_write_text, json_text
from .checkpoints.folder import read_checkpoint

__all__ = ["main"]

METHOD_FLAGS = {"ig": "integrated_gradients", "grad-x-input": "grad_x_input"}


def _check_outputs(args: argparse.Namespace) -> None:
    """The output options, before any model is read or file written."""
    for flag, path in (("--html", args.html), ("--json", args.json)):
        if path is None or path == "-" and flag == "--json":
            continue
        folder = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path) or not os.path.isdir(folder):
            raise ValueError(f"{flag} {path}: not a file in an existing folder")
    if args.png is not None:
        if os.path.exists(args.png) and not os.path.isdir(args.png):
            raise ValueError(f"--png {args.png}: exists and is not a folder")
        if importlib.util.find_spec("matplotlib") is None:
            raise ValueError("--png needs matplotlib (pip install matplotlib); --html draws "
                             "the same heatmaps without it")


def _explain(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    context = None
    if args.context is not None or args.context_file is not None:
        context = read_context(args.context, args.context_file, args.encoding)
    options = ExplainOptions(METHOD_FLAGS[args.method], args.steps, args.baseline, args.batch,
                             args.target, args.beam, context)
    _check_outputs(args)
    lines, line_names = read_sentences(args.sentences, args.file, args.encoding)
    kept = [i for i, line in enumerate(lines) if line.strip()]
    if not kept:
        raise ValueError("no sentences: give them as arguments, with --file, or one per line "
                         "on stdin")
    sentences, names = [lines[i] for i in kept], [line_names[i] for i in kept]
    ckpt = read_checkpoint(args.ckpt)
    if ckpt.tokenizer is None:
        raise CheckpointError(f"{ckpt.path}: trained on token ids without a tokenizer, so it "
                              "cannot read a sentence")
    ckpt.kind.check_explain_options(ckpt, options)
    model = ckpt.build_model(device, batch=args.batch)
    items = list(zip(sentences, ckpt.kind.explain(ckpt, model, sentences, names, options),
                     strict=True))
    if args.json != "-":
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        for i, (sentence, ex) in enumerate(items):
            print("\n".join(([""] if i else []) + [sentence] + terminal_lines(ex, color)))
    records = [json_record(s, ex) for s, ex in items]
    if args.json == "-":
        print(json_text(records))
    elif args.json is not None:
        atomic_write_text(args.json, json_text(records) + "\n")
    if args.html is not None:
        atomic_write_text(args.html, html_report(f"Why {ckpt.path} decided", items))
    if args.png is not None:
        os.makedirs(args.png, exist_ok=True)
        for i, (_, ex) in enumerate(items, 1):
            write_pngs(ex, args.png, f"sentence{i}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = checkpoint_parser("explain", __doc__)
    parser.add_argument("--file", metavar="FILE", help="explain each line of FILE (- for stdin)")
    parser.add_argument("--encoding", default="utf-8",
                        help="text encoding of --file, --context-file or stdin (default: utf-8)")
    parser.add_argument("--context", metavar="TEXT",
                        help="a question-answering model: the text the questions are about")
    parser.add_argument("--context-file", metavar="FILE",
                        help="a question-answering model: read the context from FILE")
    parser.add_argument("--method", choices=tuple(METHOD_FLAGS), default="ig",
                        help="integrated gradients (default) or gradient x input")
    parser.add_argument("--steps", type=int, default=ExplainOptions.steps, metavar="N",
                        help=f"integrated gradients' points on the path (default: "
                             f"{ExplainOptions.steps})")
    parser.add_argument("--baseline", choices=tuple(BASELINES), default=ExplainOptions.baseline,
                        help="the reference input of integrated gradients: the [UNK], [PAD] "
                             "or [MASK] token at every position, or zero embeddings (default "
                             "auto: [UNK] where the vocabulary has it, else zeros)")
    parser.add_argument("--target", metavar="T",
                        help="explain this class (a number) or next token (its text) instead "
                             "of the prediction")
    parser.add_argument("--batch", type=int, default=ExplainOptions.batch, metavar="N",
                        help=f"path points per forward pass (default: {ExplainOptions.batch})")
    parser.add_argument("--beam", type=int, default=ExplainOptions.beam, metavar="N",
                        help=f"beam size of a translation; 1 is greedy (default: "
                             f"{ExplainOptions.beam})")
    parser.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    parser.add_argument("--png", metavar="DIR", help="write PNG heatmaps (needs matplotlib)")
    parser.add_argument("--json", metavar="FILE",
                        help="write the raw numbers as JSON (- for stdout, instead of the text)")
    parser.add_argument("sentences", nargs="*",
                        help="sentences to explain (default: --file, else stdin)")
    args = parser.parse_args(argv)
    return report_errors(lambda: _explain(args))


if __name__ == "__main__":
    sys.exit(main())
