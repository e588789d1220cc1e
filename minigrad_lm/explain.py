"""Show why a trained model decided: token attributions and attention maps.

    python -m minigrad_lm.explain --ckpt runs/mr "a gripping , funny film"
    python -m minigrad_lm.explain --ckpt runs/mr --file reviews.txt --encoding latin-1 \\
        --html report.html --png pictures/ --json explained.json
    python -m minigrad_lm.explain --ckpt runs/default "ROMEO:" --method grad-x-input
    python -m minigrad_lm.explain --ckpt runs/de-en "Ein Hund läuft im Park." --html de-en.html

A classifier: the attribution of each token to the logit of the predicted class (--target
CLASS for another) by integrated gradients over the token embeddings (--steps points, from
--baseline; the completeness check, the attributions' sum against f(x) - f(baseline), is
printed), or gradient x input (--method grad-x-input, one backward pass). A causal language
model: the same for the logit of the likeliest next token (--target TOKEN for another). A
translation model: its output (beam search, --beam) and the cross-attention of each output token
over the source, per layer and head and averaged. Every model: the attention of each layer and
head.

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
from collections.abc import Callable

import numpy as np

from .backend import check_device
from .cli import read_sentences, report_errors
from .data.trained_tokenizer import MASK, PAD, UNK
from .inference.decoding import DecodeOptions, translate_ids
from .inference.explain import (
    DEFAULT_BATCH,
    DEFAULT_STEPS,
    Explanation,
    explain_classifier,
    explain_next_token,
    explain_translation,
)
from .inference.explain_views import html_report, json_record, terminal_lines, write_pngs
from .io.files import CheckpointError, atomic_write_text, json_text
from .train.checkpoint import Checkpoint, read_checkpoint
from .train.tasks.classify import encode_sentences

__all__ = ["main"]

METHOD_FLAGS = {"ig": "integrated_gradients", "grad-x-input": "grad_x_input"}
BASELINES = {"auto": UNK, "unk": UNK, "zeros": None, "pad": PAD, "mask": MASK}
MAX_STEPS = 1000


def token_text(tokenizer) -> Callable[[int], str]:
    """The text of one token id: its decoded text, or for a special token that decodes to
    nothing (``[CLS]``) its name in the vocabulary."""
    hf = getattr(tokenizer, "hf", None)

    def text(i: int) -> str:
        piece = tokenizer.decode(np.array([i], dtype=np.int64))
        if piece.strip() or hf is None:
            return piece
        return hf.id_to_token(i) or piece
    return text


def _baseline_id(tokenizer, name: str) -> int | None:
    """The token id of ``--baseline name``; None for zero embeddings (``auto``: [UNK] where
    the vocabulary has one, the word a model trained with word dropout knows as "no word")."""
    if BASELINES[name] is None:
        return None
    found = getattr(tokenizer, "token_id", lambda _: None)(BASELINES[name])
    if found is None and name == "auto":
        return None
    if found is None:
        raise ValueError(f"--baseline {name}: this checkpoint's tokenizer has no "
                         f"{BASELINES[name]} token (use --baseline zeros)")
    return found


def _attribution_options(args: argparse.Namespace, tokenizer) -> dict:
    return dict(method=METHOD_FLAGS[args.method], steps=args.steps,
                baseline=_baseline_id(tokenizer, args.baseline), batch=args.batch)


def _classify(ckpt: Checkpoint, model, args, sentences, names) -> list[Explanation]:
    target = None
    if args.target is not None:
        if not args.target.isdigit() or int(args.target) >= ckpt.num_classes:
            raise ValueError(f"--target {args.target!r}: a classifier's target is a class "
                             f"number, 0..{ckpt.num_classes - 1}")
        target = int(args.target)
    tokenizer = ckpt.tokenizer
    ids, lengths, cut = encode_sentences(tokenizer, sentences, model.body.config.context_length,
                                         model.pooling, names)
    if cut:
        print(f"note: {cut} sentence(s) longer than the model's context of "
              f"{model.body.config.context_length} tokens keep their first ones", file=sys.stderr)
    options = _attribution_options(args, tokenizer)
    return [explain_classifier(model, row[:n], target, token_text=token_text(tokenizer),
                               **options) for row, n in zip(ids, lengths)]


def _language_model(ckpt: Checkpoint, model, args, sentences, names) -> list[Explanation]:
    if not ckpt.model_config.causal:
        raise CheckpointError(f"{ckpt.path}: a masked language model (bidirectional); it does "
                              "not predict a next token to explain")
    tokenizer = ckpt.tokenizer
    target = None
    if args.target is not None:
        target_ids = tokenizer.encode(args.target)
        if len(target_ids) != 1:
            raise ValueError(f"--target {args.target!r}: encodes to {len(target_ids)} tokens; "
                             "a next-token target must be exactly one")
        target = int(target_ids[0])
    context = ckpt.model_config.context_length
    options = _attribution_options(args, tokenizer)
    vocab = min(tokenizer.vocab_size, ckpt.model_config.vocab_size)
    out = []
    for i, sentence in enumerate(sentences):
        name = names[i] if names else f"sentence {i + 1}"
        try:
            ids = tokenizer.encode(sentence)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        if len(ids) > context:
            print(f"note: {name} has {len(ids)} tokens; keeping its last {context} (the "
                  "model's context)", file=sys.stderr)
            ids = ids[-context:]
        out.append(explain_next_token(model, ids, target, vocab_limit=vocab,
                                      token_text=token_text(tokenizer), **options))
    return out


def _translation(ckpt: Checkpoint, model, args, sentences, names) -> list[Explanation]:
    if args.target is not None:
        raise ValueError("--target: a translation is explained by the cross-attention of each "
                         "output token; --target applies to classifiers and language models")
    tokenizer, c = ckpt.tokenizer, ckpt.model_config
    sources = [np.append(ids, c.eos_id) for ids in tokenizer.encode_batch(sentences)]
    outputs = translate_ids(model, sources, DecodeOptions(args.beam))
    return [explain_translation(model, src, out, token_text=token_text(tokenizer))
            for src, out in zip(sources, outputs, strict=True)]


# The task of a checkpoint -> how its sentences are explained (a span-QA task: one more entry).
EXPLAINERS = {"classify": _classify, "lm": _language_model, "translate": _translation}


def _check_outputs(args: argparse.Namespace) -> None:
    """Every output option, before any model is read or file written."""
    if not 1 <= args.steps <= MAX_STEPS:
        raise ValueError(f"--steps must be in 1..{MAX_STEPS}, got {args.steps}")
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    if args.beam < 1:
        raise ValueError(f"--beam must be >= 1, got {args.beam}")
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
    _check_outputs(args)
    sentences, names = read_sentences(args.sentences, args.file, args.encoding)
    ckpt = read_checkpoint(args.ckpt)
    explainer = EXPLAINERS.get(ckpt.task)
    if explainer is None:
        raise CheckpointError(f"{ckpt.path}: a {ckpt.task} checkpoint; explain reads "
                              f"{', '.join(EXPLAINERS)} checkpoints")
    if ckpt.tokenizer is None:
        raise CheckpointError(f"{ckpt.path}: trained on token ids without a tokenizer, so it "
                              "cannot encode a sentence")
    model = ckpt.build_model(device, batch=args.batch)
    explained = explainer(ckpt, model, args, sentences, names)
    items = list(zip(sentences, explained, strict=True))
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
    parser = argparse.ArgumentParser(prog="python -m minigrad_lm.explain",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, metavar="DIR",
                        help="run folder (uses best/, else latest/) or checkpoint folder")
    parser.add_argument("--file", metavar="FILE", help="explain each line of FILE (- for stdin)")
    parser.add_argument("--encoding", default="utf-8",
                        help="text encoding of --file or stdin (default: utf-8)")
    parser.add_argument("--method", choices=tuple(METHOD_FLAGS), default="ig",
                        help="integrated gradients (default) or gradient x input")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N",
                        help=f"integrated gradients' points on the path (default: "
                             f"{DEFAULT_STEPS})")
    parser.add_argument("--baseline", choices=tuple(BASELINES), default="auto",
                        help="the reference input of integrated gradients: the [UNK], [PAD] "
                             "or [MASK] token at every position, or zero embeddings (default "
                             "auto: [UNK] where the vocabulary has it, else zeros)")
    parser.add_argument("--target", metavar="T",
                        help="explain this class (a number) or next token (its text) instead "
                             "of the prediction")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, metavar="N",
                        help=f"path points per forward pass (default: {DEFAULT_BATCH})")
    parser.add_argument("--beam", type=int, default=4, metavar="N",
                        help="beam size of a translation; 1 is greedy (default: 4)")
    parser.add_argument("--html", metavar="FILE", help="write a self-contained HTML report")
    parser.add_argument("--png", metavar="DIR", help="write PNG heatmaps (needs matplotlib)")
    parser.add_argument("--json", metavar="FILE",
                        help="write the raw numbers as JSON (- for stdout, instead of the text)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("sentences", nargs="*",
                        help="sentences to explain (default: --file, else stdin)")
    args = parser.parse_args(argv)
    return report_errors(lambda: _explain(args))


if __name__ == "__main__":
    sys.exit(main())
