"""Text files and token folders for language modelling: reading them safely, splitting them.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..backend import memory
from ..io.untrusted import STDIN, parse_json, read_bytes, read_regular_bytes, reading
from .tokenizer import CharTokenizer, as_ids, tokenizer_from_dict
from .trained_tokenizer import is_hf_dict

PathLike = str | os.PathLike[str]

# Peak bytes of memory per byte of a text corpus while it is read and encoded (the str, its code
# points, int64 ids and the searches of the char tokenizer): 37 measured on a 100 MB line.
TEXT_MEMORY_PER_BYTE = 40
# A token folder's ids are uint16.
MAX_FOLDER_VOCAB = 1 << 16
# The most text one command reads (decompressed), whatever the memory: 16 GiB.
MAX_TEXT_BYTES = 1 << 34
# Every character str.splitlines ends a line at: a space in an output line, so whoever reads the
# output back (a shell, Python, an editor) counts as many lines as were given.
_LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\n]")


def text_limit() -> tuple[int, str]:
    """(the most bytes of text a command may read, why): MAX_TEXT_BYTES, or less where the
    memory available cannot hold TEXT_MEMORY_PER_BYTE bytes per byte."""
    free, source = memory.available_bytes()
    cap = f"at most {memory.gib(MAX_TEXT_BYTES)} of text"
    if free is None or free // TEXT_MEMORY_PER_BYTE >= MAX_TEXT_BYTES:
        return MAX_TEXT_BYTES, cap
    return free // TEXT_MEMORY_PER_BYTE, (f"about {TEXT_MEMORY_PER_BYTE} bytes of memory per "
                                          f"byte of text, {memory.gib(free)} {source}")


def read_text(path: PathLike, encoding: str = "utf-8", limit: int | None = None) -> str:
    """A whole text file (``-``: stdin), gzipped or not, in ``encoding``, newlines normalised
    (:func:`decode_text`). Bounded: more than :func:`text_limit` bytes (or ``limit``) is
    refused naming the file; a folder, FIFO or device (``/dev/zero``) too."""
    raw = _read_raw(path, limit)
    return decode_text(raw, encoding, "stdin" if os.fspath(path) == STDIN else os.fspath(path))


def _read_raw(path: PathLike, limit: int | None) -> bytes:
    most, why = text_limit()
    return read_bytes(path, most if limit is None else min(limit, most), "file", why)


def decode_text(raw: bytes, encoding: str, name: str) -> str:
    """The one input normalisation of every text reader: ``raw`` decoded, a leading BOM dropped,
    CRLF and a lone CR each one ``\\n``. Bytes that are not valid in ``encoding`` are an error
    naming ``name`` (a file, stdin), the line and the flag that picks another encoding."""
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise ValueError(f"--encoding {encoding!r}: not an encoding Python knows") from None
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ValueError(
            f"{name}:{line}: not valid {encoding} (byte 0x{raw[e.start]:02x}); give the "
            "file's encoding with --encoding (e.g. --encoding latin-1)"
        ) from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def split_lines(text: str) -> list[str]:
    """The lines of normalised text (:func:`decode_text`): a final newline ends the last line,
    it does not start another; blank lines are kept, so line n is ``lines[n - 1]``."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def read_lines(path: PathLike, encoding: str = "utf-8") -> list[str]:
    """The lines of a text file (``-``: stdin), gzipped or not (:func:`read_text`,
    :func:`split_lines`)."""
    return split_lines(read_text(path, encoding))


def one_line(text: str) -> str:
    """``text`` as one output line: every character that some reader takes for a line break
    (``\\n``, ``\\r``, U+2028...) becomes a space."""
    return _LINE_BREAKS.sub(" ", text)


def load_text(path: PathLike, encoding: str = "utf-8") -> str:
    """A text file (gzipped or not), or every ``.txt`` file directly in a folder (sorted,
    joined by newlines); together at most :func:`text_limit` bytes."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix == ".txt" and f.is_file())
        if not files:
            raise ValueError(f"{p}: folder has no .txt files")
    else:
        files = [p]
    left, texts = text_limit()[0], []
    for f in files:
        raw = _read_raw(f, left)
        left -= len(raw)
        texts.append(decode_text(raw, encoding, str(f)))
    text = "\n".join(texts)
    if not text.strip():
        raise ValueError(f"{p}: corpus is empty")
    return text


def read_vocab_json(folder: PathLike) -> tuple[dict[str, Any] | None, int]:
    """``(tokenizer_dict_or_None, vocab_size)`` from a token folder's ``vocab.json``.

    ``vocab.json`` is a tokenizer dict (``to_dict()`` output: ours, or a ``tokenizers``
    document, as a token cache holds) or ``{"vocab_size": N}`` for
    ids from an external tokenizer. nanoGPT's ``meta.pkl`` is a pickle and is never read.
    """
    folder = Path(folder)
    vocab_path = folder / "vocab.json"
    if not vocab_path.is_file():
        if (folder / "meta.pkl").exists():
            raise ValueError(
                f"{folder}: has meta.pkl but no vocab.json; meta.pkl is a pickle and is never "
                'loaded (unsafe), provide vocab.json instead, e.g. {"vocab_size": 50304}'
            )
        raise FileNotFoundError(f"{vocab_path}: no such file (it gives the vocabulary size)")
    vocab = parse_json(read_regular_bytes(vocab_path, 256 << 20), str(vocab_path))
    if isinstance(vocab, dict) and ("type" in vocab or is_hf_dict(vocab)):
        with reading(str(vocab_path)):
            return vocab, tokenizer_from_dict(vocab, MAX_FOLDER_VOCAB).vocab_size
    size = vocab.get("vocab_size") if isinstance(vocab, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_FOLDER_VOCAB:
        raise ValueError(
            f'{vocab_path}: expected a tokenizer dict or {{"vocab_size": N}} with '
            f"1 <= N <= {MAX_FOLDER_VOCAB} (ids are uint16)"
        )
    return None, size


def _load_bin(path: Path, vocab_size: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path}: empty token file")
    if size % 2:
        raise ValueError(f"{path}: size {size} bytes is not a whole number of uint16 ids")
    # A read-only memmap: multi-GB token files stay on disk and share the page cache.
    ids = np.memmap(path, dtype="<u2", mode="r")
    top = int(ids.max())
    if top >= vocab_size:
        pos = int(np.argmax(ids >= vocab_size))
        raise ValueError(
            f"{path}: token id {int(ids[pos])} at index {pos} is >= vocab_size {vocab_size}"
        )
    return ids


def load_token_folder(path: PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any] | None]:
    """nanoGPT-style ``train.bin``/``val.bin`` (raw little-endian uint16 ids) + ``vocab.json``.

    Returns ``(train_ids, val_ids, tokenizer_dict_or_None)``; the id arrays are read-only
    memory maps. For ``{"vocab_size": N}`` folders use :func:`read_vocab_json` to get N.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such token folder")
    tokenizer, vocab_size = read_vocab_json(folder)
    train = _load_bin(folder / "train.bin", vocab_size)
    val = _load_bin(folder / "val.bin", vocab_size)
    return train, val, tokenizer


def split_train_val(ids: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """First ``1 - val_fraction`` of the ids for training, the rest for validation (views).

    A contiguous split, not a shuffle: validation text must not overlap training windows.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_train = int(len(ids) * (1.0 - val_fraction))
    if n_train == 0 or n_train == len(ids):
        raise ValueError(
            f"corpus of {len(ids)} tokens is too short to split with val_fraction {val_fraction}"
        )
    return ids[:n_train], ids[n_train:]


def windows(ids: np.ndarray, starts: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """``x`` (len(starts), context) int64, the windows of ``ids`` that begin at ``starts``, and
    ``y``, the same windows shifted by one token (the next-token targets)."""
    window = np.asarray(ids)[starts[:, None] + np.arange(context + 1)].astype(np.int64)
    return np.ascontiguousarray(window[:, :-1]), np.ascontiguousarray(window[:, 1:])


def unigram_baseline(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int) -> float:
    """Val cross-entropy (nats/token) of add-one-smoothed train token frequencies.

    The loss a model gets by ignoring context: a trained model must beat it.
    """
    train, val = np.asarray(train_ids).reshape(-1), np.asarray(val_ids).reshape(-1)
    if val.size == 0:
        raise ValueError("unigram_baseline needs at least one validation token")
    # Chunks: a memory-mapped multi-GB train.bin is never copied whole (to int64, 4x its size).
    counts = np.ones(vocab_size)
    for lo in range(0, train.size, _CHUNK):
        counts += np.bincount(as_ids(train[lo:lo + _CHUNK], vocab_size), minlength=vocab_size)
    log_p = np.log(counts) - np.log(counts.sum())
    total = sum(float(log_p[as_ids(val[lo:lo + _CHUNK], vocab_size)].sum())
                for lo in range(0, val.size, _CHUNK))
    return -total / val.size


_CHUNK = 1 << 20  # ids per chunk: 8 MB as int64


def _first_unknown(tokenizer: CharTokenizer, text: str) -> int:
    known = set(tokenizer.chars)
    return next(i for i, c in enumerate(text) if c not in known)


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
