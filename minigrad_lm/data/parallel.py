"""Parallel text: two line-aligned UTF-8 files (gzip is recognised by its magic bytes and
read transparently), a sentence and its translation on the same line of each.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..io.untrusted import read_regular_bytes

__all__ = ["encode_lines", "pad_pairs", "pair_fits", "read_lines", "read_parallel"]


def read_lines(path: str) -> list[str]:
    """The lines of a UTF-8 text file, gzipped or not (without their line endings)."""
    p = Path(path)
    raw = read_regular_bytes(p, 1 << 62)  # a folder, FIFO or device is refused by name
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{p}: not a readable gzip file ({e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"{p}:{line}: not UTF-8 (byte 0x{raw[e.start]:02x})") from None
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start another
    return [line.removesuffix("\r") for line in lines]


def read_parallel(src_path: str, tgt_path: str
                  ) -> tuple[list[str], list[str], list[int], list[int]]:
    """(sources, targets, their line numbers, line numbers of skipped pairs with an empty
    side) of two line-aligned files."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
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
