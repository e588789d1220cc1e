"""Generate text with a trained language model.

    python -m minigrad_lm.generate --ckpt runs/default --prompt "Return the" --max-new-tokens 200

--ckpt takes a run folder (its best/ checkpoint, else latest/) or a checkpoint folder. The prompt
and its continuation go to stdout; notes (a cropped prompt) go to stderr. A key/value cache makes
each new token cost attention over the context instead of a re-run of the whole sequence;
--no-cache recomputes every step and gives the same tokens for the same --seed.

Prompts longer than the model's context are cropped to their last context tokens. With a char
tokenizer, a character the training text never had is an error; a byte tokenizer encodes any
text (as UTF-8 bytes). Tokens are printed as they are generated, so Ctrl-C keeps what came out;
only ids the tokenizer can decode are sampled (a model's vocabulary may be padded beyond it).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

import numpy as np

from .backend import check_device
from .cli import checkpoint_parser, report_errors
from .inference.sampling import check_length, check_options, generate
from .io.files import CheckpointError
from .checkpoints.kinds import LMKind
from .checkpoints.folder import read_checkpoint, require_task

__all__ = ["main"]

# A token can end inside a UTF-8 character (byte-level tokenizers): its text waits for the
# tokens that complete it, at most this many.
HOLD_TOKENS = 8


class _TextStream:
    """Writes the text of token ids as they arrive."""

    def __init__(self, tokenizer, out: TextIO) -> None:
        self.tokenizer, self.out, self.pending = tokenizer, out, []

    def add(self, token: int) -> None:
        self.pending.append(token)
        text = self.tokenizer.decode(np.array(self.pending, dtype=np.int64))
        if not text.endswith("\ufffd") or len(self.pending) >= HOLD_TOKENS:
            self._write(text)

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
        self.pending = []

    def finish(self) -> None:
        if self.pending:
            self._write(self.tokenizer.decode(np.array(self.pending, dtype=np.int64)))
        self._write("\n")


def _parser() -> argparse.ArgumentParser:
    p = checkpoint_parser("generate", __doc__)
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=300, metavar="N",
                   help="tokens to generate (default: 300)")
    p.add_argument("--temperature", type=float, default=0.8, metavar="T",
                   help="softmax temperature; 0 is greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, default=None, metavar="K",
                   help="sample among the K most likely tokens only")
    p.add_argument("--top-p", type=float, default=None, metavar="P",
                   help="sample among the most likely tokens that make up probability P")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="seed for reproducible samples (default: fresh randomness)")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute the whole window for every token (slower; same output)")
    return p


def _generate(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    check_length(args.max_new_tokens, "--max-new-tokens")
    if args.seed is not None and args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    check_options(args.temperature, args.top_k, args.top_p)  # before any output
    ckpt = read_checkpoint(args.ckpt)
    if ckpt.kind.bare_gpt and not ckpt.model_config.causal:
        raise CheckpointError(f"{ckpt.path}: a masked language model (bidirectional); it fills "
                              "in hidden tokens and cannot continue a prompt")
    require_task(ckpt, LMKind.name)
    tokenizer = ckpt.tokenizer
    if tokenizer is None:
        raise CheckpointError(
            f"{ckpt.path}: trained on token ids without a tokenizer, so it cannot encode a prompt"
        )
    if args.prompt == "":
        raise ValueError("--prompt is empty: give at least one character to continue")
    try:
        prompt = tokenizer.encode(args.prompt)
    except ValueError as e:
        raise ValueError(f"--prompt: {e} (the model only knows its training text's characters)"
                         ) from None
    context = ckpt.model_config.context_length
    if len(prompt) > context:
        print(f"note: the prompt has {len(prompt)} tokens; keeping its last {context} (the "
              "model's context)", file=sys.stderr)
        prompt = prompt[-context:]
    model = ckpt.build_model(device)
    stream = _TextStream(tokenizer, sys.stdout)
    stream.out.write(tokenizer.decode(prompt))
    try:
        generate(model, prompt, args.max_new_tokens, temperature=args.temperature,
                 top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                 use_cache=not args.no_cache,
                 vocab_limit=min(tokenizer.vocab_size, ckpt.model_config.vocab_size),
                 on_token=stream.add)
    finally:
        stream.finish()  # an error or Ctrl-C keeps the text produced so far
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return report_errors(lambda: _generate(args))


if __name__ == "__main__":
    sys.exit(main())
