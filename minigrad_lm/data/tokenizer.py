"""The tokenizer interface, the character and byte tokenizers, and rebuilding any tokenizer
from its ``to_dict()`` form (the learned word and BPE ones are in trained_tokenizer.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from .trained_tokenizer import KINDS as LEARNED_KINDS
from .trained_tokenizer import MAX_TOKEN_ID, TrainedTokenizer, from_gpt2_bpe_dict, is_hf_dict

TOKENIZER_KINDS = ("char", "byte", *LEARNED_KINDS)  # what --tokenizer may name


class Tokenizer(Protocol):
    """What training and sampling need from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


def as_ids(ids: Sequence[int] | np.ndarray, vocab_size: int) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.size == 0:
        return arr.astype(np.int64).reshape(-1)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(
            f"expected a 1-D sequence of integer token ids, got {arr.dtype} with shape {arr.shape}"
        )
    bad = (arr < 0) | (arr >= vocab_size)
    if bad.any():
        pos = int(np.argmax(bad))
        raise ValueError(
            f"token id {int(arr[pos])} at position {pos} is out of range for a "
            f"vocabulary of {vocab_size}"
        )
    return arr.astype(np.int64, copy=False)


def _codepoints(text: str) -> np.ndarray:
    # One C-level encode gives every code point at once; surrogatepass keeps lone surrogates.
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


UNKNOWN_CHAR = "\ufffd"  # the Unicode replacement character


class CharTokenizer:
    """One token per Unicode character; token id = index in ``chars``.

    A vocabulary that holds U+FFFD (the replacement character; training runs add it) encodes
    any character it lacks as that token, so a model trained on one text still reads another;
    one without it refuses unknown characters.
    """

    def __init__(self, chars: Sequence[str]) -> None:
        chars = list(chars)
        if not chars:
            raise ValueError("a character vocabulary needs at least one character")
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"vocabulary entry {c!r} is not a single character")
        if len(set(chars)) != len(chars):
            raise ValueError("vocabulary characters must be unique")
        self.chars = chars
        self._points = _codepoints("".join(chars))
        # Sorted code points + their ids let encode use one vectorized binary search.
        self._order = np.argsort(self._points, kind="stable")
        self._sorted_points = self._points[self._order]
        self._unknown_id = chars.index(UNKNOWN_CHAR) if UNKNOWN_CHAR in chars else None

    @classmethod
    def from_text(cls, text: str, unknown: bool = False) -> CharTokenizer:
        """Vocabulary = the sorted distinct characters of ``text`` (and, with ``unknown``,
        U+FFFD to stand for every other character)."""
        return cls(sorted(set(text) | ({UNKNOWN_CHAR} if unknown else set())))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """int64 ids; an unknown character is U+FFFD's id, or without it a ValueError naming
        the character and its position."""
        points = _codepoints(text)
        slot = np.searchsorted(self._sorted_points, points)
        slot_clipped = np.minimum(slot, len(self._sorted_points) - 1)
        unknown = self._sorted_points[slot_clipped] != points
        ids = self._order[slot_clipped].astype(np.int64)
        if unknown.any():
            if self._unknown_id is None:
                pos = int(np.argmax(unknown))
                raise ValueError(
                    f"character {text[pos]!r} at position {pos} is not in the vocabulary")
            ids[unknown] = self._unknown_id
        return ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = as_ids(ids, self.vocab_size)
        return self._points[arr].astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "char", "chars": list(self.chars)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        if d.get("type") != "char" or not isinstance(d.get("chars"), list):
            raise ValueError("a char tokenizer dict looks like {'type': 'char', 'chars': [...]}")
        return cls(d["chars"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self.chars == other.chars

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class ByteTokenizer:
    """One token per UTF-8 byte: any text encodes, vocabulary 256.

    Decoding uses ``errors="replace"``: a sampled id sequence can cut a multi-byte character,
    and showing U+FFFD beats failing mid-generation.
    """

    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = as_ids(ids, self.vocab_size)
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "byte"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ByteTokenizer:
        if d.get("type") != "byte":
            raise ValueError("a byte tokenizer dict looks like {'type': 'byte'}")
        return cls()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ByteTokenizer)

    def __repr__(self) -> str:
        return "ByteTokenizer()"


_TOKENIZERS: dict[str, Any] = {
    "char": CharTokenizer.from_dict,
    "byte": ByteTokenizer.from_dict,
    "gpt2_bpe": from_gpt2_bpe_dict,  # our first format for GPT-2's; now a `tokenizers` BPE
}


def tokenizer_from_dict(d: dict[str, Any], max_vocab: int = MAX_TOKEN_ID + 1) -> Tokenizer:
    """Rebuild a tokenizer from its ``to_dict()`` form (e.g. read back from a checkpoint): one
    of ours, or a ``tokenizers`` document (a word or BPE vocabulary learned from the data).
    ``max_vocab`` (the model's vocabulary size) bounds the ids before any library sees them."""
    if is_hf_dict(d):
        return TrainedTokenizer.from_dict(d, max_vocab)
    if isinstance(d, dict) and d.get("type") == "gpt2_bpe":
        return from_gpt2_bpe_dict(d, max_vocab)
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in _TOKENIZERS:
        raise ValueError(
            f"unknown tokenizer type {kind!r}; expected one of {', '.join(sorted(_TOKENIZERS))}"
        )
    return _TOKENIZERS[kind](d)
