"""Tokenizers learned from the user's own text, on the Hugging Face ``tokenizers`` library.

``word``: one token per word or punctuation mark (``tokenizers``' ``Whitespace`` split), the
vocabulary being the most frequent words of the training text; any other word becomes
``[UNK]``, so inference never fails on a word it has not seen.
``bpe``: byte-level BPE (GPT-2's scheme) trained on the text: every byte is in the alphabet,
so any text encodes, and frequent words are single tokens.

Both reserve the same special tokens at the same ids (:data:`SPECIAL_TOKENS`): ``[PAD]`` 0,
``[UNK]`` 1, ``[CLS]`` 2 (the token a classifier can pool) and ``[SEP]`` 3. ``to_dict()`` is
the library's own ``tokenizer.json`` document, so a checkpoint's ``tokenizer.json`` opens with
``tokenizers.Tokenizer.from_file`` as it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

__all__ = ["DEFAULT_VOCAB_SIZE", "KINDS", "SPECIAL_TOKENS", "TrainedTokenizer", "is_hf_dict"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
PAD, UNK, CLS, SEP = SPECIAL_TOKENS
KINDS = ("word", "bpe")
DEFAULT_VOCAB_SIZE = {"word": 30_000, "bpe": 8_000}
_MODEL_KIND = {"WordLevel": "word", "BPE": "bpe"}


def is_hf_dict(d: Any) -> bool:
    """True for a ``tokenizers`` JSON document (it has a ``model`` and no ``type`` of ours)."""
    return isinstance(d, dict) and isinstance(d.get("model"), dict) and "type" not in d


def _normalizer(lowercase: bool):
    steps = [normalizers.NFKC()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps)


class TrainedTokenizer:
    """A ``tokenizers.Tokenizer`` with what training needs: int64 id arrays, the special ids,
    and a JSON round-trip through checkpoints."""

    def __init__(self, hf: tokenizers.Tokenizer) -> None:
        kind = _MODEL_KIND.get(json.loads(hf.to_str())["model"].get("type"))
        if kind is None:
            raise ValueError("tokenizer.json: only WordLevel and BPE models are supported")
        self.hf, self.kind = hf, kind

    @classmethod
    def train(cls, kind: str, texts: Iterable[str], vocab_size: int | None = None,
              lowercase: bool = False, min_count: int = 1) -> TrainedTokenizer:
        """Learn a ``kind`` vocabulary of at most ``vocab_size`` tokens (specials included)
        from ``texts``; words seen fewer than ``min_count`` times are left out."""
        if kind not in KINDS:
            raise ValueError(f"tokenizer kind must be one of {', '.join(KINDS)}, got {kind!r}")
        size = vocab_size or DEFAULT_VOCAB_SIZE[kind]
        if kind == "word":
            hf = tokenizers.Tokenizer(models.WordLevel(unk_token=UNK))
            hf.pre_tokenizer = pre_tokenizers.Whitespace()
            trainer = trainers.WordLevelTrainer(
                vocab_size=size, min_frequency=min_count, special_tokens=list(SPECIAL_TOKENS),
                show_progress=False)
        else:
            hf = tokenizers.Tokenizer(models.BPE())
            hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
            hf.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=size, min_frequency=min_count, special_tokens=list(SPECIAL_TOKENS),
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        hf.normalizer = _normalizer(lowercase)
        hf.train_from_iterator(texts, trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    @property
    def pad_id(self) -> int | None:
        return self.token_id(PAD)

    @property
    def cls_id(self) -> int | None:
        return self.token_id(CLS)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.hf.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Many texts at once (the library spreads them over the cores)."""
        encodings = self.hf.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = np.asarray(ids).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            bad = int(arr.max() if arr.max() >= self.vocab_size else arr.min())
            raise ValueError(f"token id {bad} is out of range for a vocabulary of "
                             f"{self.vocab_size}")
        # [SEP] ends a line of a language-model corpus (see tasks.encode_text): a line break.
        cuts = np.flatnonzero(arr == self.token_id(SEP))
        pieces = np.split(arr, cuts)
        return "\n".join(self.hf.decode([int(i) for i in piece], skip_special_tokens=True)
                         for piece in pieces)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.hf.to_str())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainedTokenizer:
        try:
            hf = tokenizers.Tokenizer.from_str(json.dumps(d))
        except Exception as e:  # the library raises its own Exception subclass
            raise ValueError(f"not a valid tokenizers document ({str(e)[:200]})") from None
        return cls(hf)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrainedTokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"TrainedTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"
