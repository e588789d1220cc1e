"""Translate sentences with a trained encoder-decoder checkpoint.

    python -m minigrad_lm.translate --ckpt runs/de-en "Ein Hund läuft im Park."
    python -m minigrad_lm.translate --ckpt runs/de-en --file test.de > test.en
    echo "Zwei Männer spielen Fußball." | python -m minigrad_lm.translate --ckpt runs/de-en

Prints one translation per input sentence, in order. Sentences come from the arguments, else
from --file (gzip or not), else one per line of stdin; an empty line gives an empty line, so the
output stays line-aligned with the input. --ckpt takes a run folder (its best/ checkpoint, else
latest/) or a checkpoint folder. A sentence longer than the model's maximum is an error naming
it.
"""

from __future__ import annotations

import argparse
import sys

from .backend import check_device
from .cli import report_errors
from .data.parallel import encode_lines, read_lines
from .inference.decoding import DecodeOptions, translate_text
from .checkpoints.folder import read_checkpoint_of

__all__ = ["main", "translate"]


def translate(model, tokenizer, sentences: list[str], options: DecodeOptions) -> list[str]:
    """Translations of `sentences` (an empty sentence translates to an empty string)."""
    todo = [i for i, s in enumerate(sentences) if s.strip()]
    sources = encode_lines(tokenizer, [sentences[i] for i in todo], model.config.eos_id)
    out = [""] * len(sentences)
    for i, text in zip(todo, translate_text(model, tokenizer, sources, options), strict=True):
        out[i] = text
    return out


def _translate(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    options = DecodeOptions(args.beam_size, args.length_penalty, args.max_len_a, args.max_len_b)
    if args.sentences and args.file:
        raise ValueError("give sentences as arguments or --file, not both")
    if args.sentences:
        sentences = args.sentences
    elif args.file:
        sentences = read_lines(args.file)
    else:
        sentences = [line.rstrip("\n") for line in sys.stdin]
    if not any(s.strip() for s in sentences):
        raise ValueError("no sentences: give them as arguments, with --file, or one per line on "
                         "stdin")
    ckpt = read_checkpoint_of(args.ckpt, "translate")
    model = ckpt.build_model(device)
    for line in translate(model, ckpt.tokenizer, sentences, options):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minigrad_lm.translate", description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", required=True, metavar="DIR",
                        help="run folder (uses best/, else latest/) or checkpoint folder")
    parser.add_argument("--file", metavar="PATH", help="one sentence per line (gzip or not)")
    default = DecodeOptions()
    parser.add_argument("--beam-size", "--beam", type=int, default=default.beam_size,
                        metavar="N", help="beam size; 1 is greedy (default: %(default)s)")
    parser.add_argument("--length-penalty", type=float, default=default.length_penalty,
                        metavar="X",
                        help="rank hypotheses by log p / length ** X (default: %(default)s)")
    parser.add_argument("--max-len-a", type=float, default=default.max_len_a, metavar="X",
                        help="at most X x source tokens + --max-len-b tokens "
                        "(default: %(default)s)")
    parser.add_argument("--max-len-b", type=int, default=default.max_len_b, metavar="N",
                        help="(default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: stdin)")
    args = parser.parse_args(argv)
    return report_errors(lambda: _translate(args))


if __name__ == "__main__":
    sys.exit(main())
