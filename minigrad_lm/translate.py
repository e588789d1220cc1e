"""Translate sentences with a trained encoder-decoder checkpoint.

    python -m minigrad_lm.translate --ckpt runs/de-en "Ein Hund läuft im Park."
    python -m minigrad_lm.translate --ckpt runs/de-en --file test.de > test.en
    echo "Zwei Männer spielen Fußball." | python -m minigrad_lm.translate --ckpt runs/de-en

Prints one line per input line, in order: its translation, or an empty line for a blank one,
so the output stays line-aligned with the input (a line break the model decodes becomes a
space). Sentences come from the arguments, else from --file (gzip or not; ``-`` is stdin), else
from stdin; files and stdin are read alike (a BOM dropped, CRLF or CR ends a line). --ckpt takes
a run folder (its best/ checkpoint, else latest/) or a checkpoint folder. A sentence longer than
the model's maximum is an error naming its file and line.
"""

from __future__ import annotations

import argparse
import math
import sys

from .backend import check_device, memory
from .checkpoints.folder import read_checkpoint_of
from .cli import checkpoint_parser, read_sentences, report_errors
from .data.parallel import encode_lines
from .data.text import one_line
from .inference.decoding import (DECODE_BATCH, DecodeOptions, decoding_bytes, max_target_length,
                                 translate_text)

__all__ = ["main", "translate"]


def translate(model, tokenizer, sentences: list[str], options: DecodeOptions,
              names: list[str] | None = None) -> list[str]:
    """One line per sentence: its translation (an empty sentence translates to an empty string,
    a line break the model decodes becomes a space); ``names`` (e.g. ``file:line``) say which
    sentence an error is about."""
    todo = [i for i, s in enumerate(sentences) if s.strip()]
    sources = encode_lines(tokenizer, [sentences[i] for i in todo], model.config.eos_id)
    todo_names = [names[i] if names else f"sentence {i + 1}" for i in todo]
    out = [""] * len(sentences)
    for i, text in zip(todo, translate_text(model, tokenizer, sources, options, todo_names),
                       strict=True):
        out[i] = one_line(text).strip()
    return out


FLAGS = {"beam_size": "--beam-size", "length_penalty": "--length-penalty",
         "max_len_a": "--max-len-a", "max_len_b": "--max-len-b"}


def decode_options(args: argparse.Namespace) -> DecodeOptions:
    """The decoding flags, each checked by name before anything is read."""
    values = {field: getattr(args, flag[2:].replace("-", "_")) for field, flag in FLAGS.items()}
    DecodeOptions.check(values, FLAGS)
    return DecodeOptions(**values)


def length_note(options: DecodeOptions, context: int) -> str | None:
    """A line when --max-len-a / --max-len-b allow more than the model can write for any
    source: its context bounds every output (and the memory estimate counts the whole
    context), so such values decode as far as the context goes."""
    shortest = max_target_length(1, options, math.inf)  # a source of eos alone
    capped = max_target_length(1, options, context)
    if shortest <= capped:
        return None
    return (f"note: --max-len-a {options.max_len_a:g} --max-len-b {options.max_len_b:g} allow "
            f"more than the model writes: each translation stops within its context of "
            f"{context} tokens")


def _translate(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    options = decode_options(args)
    sentences, names = read_sentences(args.sentences, args.file, args.encoding)
    if not any(s.strip() for s in sentences):
        raise ValueError("no sentences: give them as arguments, with --file, or one per line on "
                         "stdin")
    ckpt = read_checkpoint_of(args.ckpt, "translate")
    need, detail = decoding_bytes(ckpt.model_config, DECODE_BATCH * options.beam_size)
    memory.require(need, detail, f"--beam-size {options.beam_size}", device)
    model = ckpt.build_model(device)
    for line in translate(model, ckpt.tokenizer, sentences, options, names):
        print(line)
    note = length_note(options, ckpt.model_config.context_length)
    if note:  # after the output: an error stays the one line on stderr
        print(note, file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = checkpoint_parser("translate", __doc__)
    parser.add_argument("--file", metavar="PATH",
                        help="one sentence per line (gzip or not; - is stdin)")
    parser.add_argument("--encoding", default="utf-8",
                        help="text encoding of --file or stdin (default: utf-8)")
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
    parser.add_argument("sentences", nargs="*", help="sentences to translate (default: stdin)")
    args = parser.parse_args(argv)
    return report_errors(lambda: _translate(args))


if __name__ == "__main__":
    sys.exit(main())
