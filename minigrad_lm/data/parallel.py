"""Parallel text: two line-aligned text files (gzip is recognised by its magic bytes and
read transparently, see :func:`minigrad_lm.data.text.read_lines`), a sentence and its
translation on the same line of each.
"""
from __future__ import annotations

import numpy as np

from .text import read_lines

__all__ = ["encode_lines", "pad_pairs", "pair_fits", "read_parallel"]


def read_parallel(src_path: str, tgt_path: str, encoding: str = "utf-8"
                  ) -> tuple[list[str], list[str], list[int], list[int]]:
    """(sources, targets, their line numbers, line numbers of skipped pairs with an empty
    side) of two line-aligned files."""
    src, tgt = read_lines(src_path, encoding), read_lines(tgt_path, encoding)
    if len(src) != len(tgt):
        raise ValueError(f"{src_path} has {len(src):,} lines but {tgt_path} has {len(tgt):,}: "
                         "parallel files must be line-aligned")
    kept, empty = [], []
    for i, (s, t) in enumerate(zip(src, tgt), start=1):
        (kept if s.strip() and t.strip() else empty).append(i)
    if not kept:
        raise ValueError(f"{src_path}, {tgt_path}: no sentence pair with text on both sides")
    return [src[i - 1] for i in kept], [tgt[i - 1] for i in kept], kept, empty


def encode_lines(tokenizer, lines: list[str], eos: int | None = None) -> list[np.ndarray]:
    """Each line's token ids, with ``eos`` appended when given (a source sentence's end)."""
    ids = tokenizer.encode_batch(lines)
    return ids if eos is None else [np.append(a, eos) for a in ids]


def pair_fits(src: np.ndarray, tgt: np.ndarray, context: int) -> bool:
    """Whether a pair fits a model of ``context`` positions: the source as it is, the target
    after the decoder's start token."""
    return len(src) <= context and len(tgt) + 1 <= context


def pad_pairs(rows, src: list[np.ndarray], tgt: list[np.ndarray], pad: int, bos: int, eos: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source, decoder input, decoder target) arrays of pairs ``rows``, padded: the decoder
    reads ``bos target`` and predicts ``target eos``."""
    n = len(rows)
    s = np.full((n, max(len(src[i]) for i in rows)), pad, dtype=np.int64)
    t = np.full((n, max(len(tgt[i]) for i in rows) + 2), pad, dtype=np.int64)
    for r, i in enumerate(rows):
        s[r, :len(src[i])] = src[i]
        t[r, 0], t[r, 1:len(tgt[i]) + 1], t[r, len(tgt[i]) + 1] = bos, tgt[i], eos
    return s, np.ascontiguousarray(t[:, :-1]), np.ascontiguousarray(t[:, 1:])
