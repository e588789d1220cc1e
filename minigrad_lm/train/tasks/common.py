"""What the tasks share: constants of the random streams, helpers for files, windows and
tokenizers.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager

import numpy as np

from ...data.tokenizer import ByteTokenizer, CharTokenizer
from ...data.trained_tokenizer import TrainedTokenizer, is_hf_dict
from ...engine.tensor import no_grad
from ..config import TrainConfig

# Evaluation draws its batches from a generator of its own, re-created for every evaluation:
# every eval scores the same windows, and the training streams are never touched.
EVAL_STREAM = 2
EPOCH_STREAM = 4  # the order of the rows in each epoch (classify)
MAJORITY_MARGIN = 0.005  # val accuracy within this of the majority baseline learned nothing
VAL_FRACTION = 0.1
SAMPLE_TEMPERATURE = 0.8
FINGERPRINT_ROWS = 1 << 16


@contextmanager
def evaluating(model):
    """Eval mode (no dropout) and no graph for the block, then back to training mode."""
    model.eval()
    try:
        with no_grad():
            yield
    finally:
        model.train()


def _first_unknown(tokenizer: CharTokenizer, text: str) -> int:
    known = set(tokenizer.chars)
    return next(i for i, c in enumerate(text) if c not in known)


def paths(data: str | list[str]) -> list[str]:
    return [data] if isinstance(data, str) else list(data)


def joined(data: str | list[str]) -> str:
    return ", ".join(paths(data))


def hold_out_lines(text: str, nth: int) -> tuple[str, str]:
    """(the text less its lines nth, 2 nth, ..., those lines), as classification splits."""
    numbered = list(enumerate(text.split("\n"), 1))
    return ("\n".join(line for n, line in numbered if n % nth),
            "\n".join(line for n, line in numbered if not n % nth))


def encode_text(tokenizer, text: str, name: str) -> np.ndarray:
    """Encode a corpus; an unknown character is reported by file and line, not offset. A
    learned (word or BPE) vocabulary encodes it line by line with [SEP] after each line, the
    line breaks that word tokens would otherwise lose."""
    sep = getattr(tokenizer, "sep_id", None)
    if sep is not None:
        lines = [line for line in text.split("\n") if line.strip()]
        ends = np.array([sep], np.int64)
        return np.concatenate([piece for ids in tokenizer.encode_batch(lines)
                               for piece in (ids, ends)])
    try:
        return tokenizer.encode(text)
    except ValueError:
        if not isinstance(tokenizer, CharTokenizer):  # byte-level BPE: only lone surrogates
            raise ValueError(f"{name}: text cannot be encoded as UTF-8 bytes") from None
        pos = _first_unknown(tokenizer, text)
        line = text.count("\n", 0, pos) + 1
        raise ValueError(
            f"{name}:{line}: character {text[pos]!r} is not in the vocabulary of the "
            "checkpoint's tokenizer"
        ) from None


def fingerprint(*arrays: np.ndarray) -> str:
    """A digest of the data that tells two machines' copies apart without reading a large
    token file whole: shapes, dtypes and an evenly spaced sample of rows."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.asarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a[:: max(1, len(a) // FINGERPRINT_ROWS)]))
    return h.hexdigest()


def check_length(ids: np.ndarray, context: int, what: str) -> None:
    if len(ids) <= context:
        raise ValueError(
            f"{what} has {len(ids):,} tokens, not more than --context {context}; "
            "use more text or a smaller --context"
        )


def tokenizer_kind(tokenizer_dict: dict) -> str:
    if is_hf_dict(tokenizer_dict):
        return TrainedTokenizer.from_dict(tokenizer_dict).kind
    return str(tokenizer_dict.get("type"))


def new_tokenizer(cfg: TrainConfig, texts: list[str]):
    if cfg.tokenizer == "char":
        return CharTokenizer.from_text("".join(texts), unknown=True)
    if cfg.tokenizer == "byte":
        return ByteTokenizer()
    return TrainedTokenizer.train(cfg.tokenizer, texts, cfg.vocab_size, cfg.lowercase,
                                  cfg.min_count)
