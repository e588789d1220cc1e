"""Corpora, tokenizers, training batches and text-classification files.

Everything here is plain NumPy and standard library, so data preparation never needs the GPU
or a download: the default corpus is built from the docstrings of the running Python.
"""

from __future__ import annotations

import ast
import csv
import functools
import inspect
import io
import os
import re
import sysconfig
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from . import memory
from .bpe import GPT2Tokenizer
from .tokenizer import TrainedTokenizer, is_hf_dict
from .untrusted import parse_json, read_regular_bytes, reading, require_regular_file

__all__ = [
    "ByteTokenizer",
    "CharTokenizer",
    "Tokenizer",
    "default_corpus",
    "encode_classification",
    "LabeledRows",
    "load_class_files",
    "load_labeled",
    "load_classification_rows",
    "load_text",
    "decode_text",
    "read_text",
    "load_token_folder",
    "read_vocab_json",
    "sample_batch",
    "split_train_val",
    "tokenizer_from_dict",
    "unigram_baseline",
]

PathLike = str | os.PathLike[str]

# --------------------------------------------------------------------------------------------
# Default corpus
# --------------------------------------------------------------------------------------------

DEFAULT_CORPUS_CHARS = 1_000_000

# Tests, demos and vendored or legacy trees: repetitive or not prose.
_SKIP_DIRS = frozenset(
    {
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "idlelib",
        "lib2to3",
        "turtledemo",
        "__pycache__",
    }
)
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _stdlib_sources(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        found.extend(Path(dirpath, f) for f in filenames if f.endswith(".py"))
    # Sorting the relative POSIX paths makes the corpus independent of directory listing order.
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _docstrings(source: bytes) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old escape sequences in some modules warn on parse
        tree = ast.parse(source)
    nodes = [n for n in ast.walk(tree) if isinstance(n, _DOC_NODES)]
    # ast.walk is breadth-first; the module node has no position and sorts first.
    nodes.sort(key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", -1)))
    docs = (ast.get_docstring(n, clean=False) for n in nodes)
    return [clean for doc in docs if doc and (clean := inspect.cleandoc(doc))]


@functools.lru_cache(maxsize=1)
def default_corpus() -> str:
    """About 1 MB of English prose that needs no download: the standard library's docstrings.

    Module, class and function docstrings of the running Python's standard library, in sorted
    file order and source order, joined by blank lines and cut at a docstring boundary before
    ``DEFAULT_CORPUS_CHARS``. Deterministic for a given Python version; cached.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    pieces: list[str] = []
    total = 0
    for path in _stdlib_sources(root):
        try:
            docs = _docstrings(path.read_bytes())
        except (SyntaxError, ValueError, OSError):  # unparsable or unreadable: just skip it
            continue
        for doc in docs:
            cost = len(doc) + (2 if pieces else 0)
            if total + cost > DEFAULT_CORPUS_CHARS:
                return "\n\n".join(pieces)
            pieces.append(doc)
            total += cost
    if not pieces:
        raise RuntimeError(f"no standard-library docstrings found under {root}")
    return "\n\n".join(pieces)


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


class Tokenizer(Protocol):
    """What training and sampling need from a tokenizer."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


def _as_ids(ids: Sequence[int] | np.ndarray, vocab_size: int) -> np.ndarray:
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
        arr = _as_ids(ids, self.vocab_size)
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
        arr = _as_ids(ids, self.vocab_size)
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
    "char": CharTokenizer,
    "byte": ByteTokenizer,
    "gpt2_bpe": GPT2Tokenizer,
}


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from its ``to_dict()`` form (e.g. read back from a checkpoint): one
    of ours, or a ``tokenizers`` document (a word or BPE vocabulary learned from the data)."""
    if is_hf_dict(d):
        return TrainedTokenizer.from_dict(d)
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in _TOKENIZERS:
        raise ValueError(
            f"unknown tokenizer type {kind!r}; expected one of {', '.join(sorted(_TOKENIZERS))}"
        )
    return _TOKENIZERS[kind].from_dict(d)


# --------------------------------------------------------------------------------------------
# Text corpora
# --------------------------------------------------------------------------------------------


# Peak bytes of memory per byte of a text corpus while it is read and encoded (the str, its code
# points, int64 ids and the searches of the char tokenizer): 37 measured on a 100 MB line.
TEXT_MEMORY_PER_BYTE = 40


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """A whole regular text file (``/dev/zero`` would never end) in ``encoding``, a leading BOM
    dropped, CRLF -> LF. Bytes that are not valid in it are an error naming the file, the line
    and the flag that picks another encoding."""
    return decode_text(read_regular_bytes(path, 1 << 62), encoding, str(path))


def decode_text(raw: bytes, encoding: str, name: str) -> str:
    """:func:`read_text` for bytes that came from ``name`` (a file, stdin)."""
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
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def load_text(path: PathLike, encoding: str = "utf-8") -> str:
    """A text file, or every ``.txt`` file directly in a folder (sorted, joined by newlines).
    Windows line endings become ``\\n`` so they do not enter the vocabulary."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix == ".txt" and f.is_file())
        if not files:
            raise ValueError(f"{p}: folder has no .txt files")
    else:
        files = [p]
    size = sum(require_regular_file(f) for f in files)
    memory.require(size * TEXT_MEMORY_PER_BYTE, f"about {TEXT_MEMORY_PER_BYTE} bytes per byte "
                   "of text to read and encode it", f"{p}: a corpus of {size:,} bytes")
    text = "\n".join(read_text(f, encoding) for f in files)
    if not text.strip():
        raise ValueError(f"{p}: corpus is empty")
    return text


def read_vocab_json(folder: PathLike) -> tuple[dict[str, Any] | None, int]:
    """``(tokenizer_dict_or_None, vocab_size)`` from a token folder's ``vocab.json``.

    ``vocab.json`` is a tokenizer dict (``to_dict()`` output) or ``{"vocab_size": N}`` for
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
    if isinstance(vocab, dict) and "type" in vocab:
        with reading(str(vocab_path)):
            return vocab, tokenizer_from_dict(vocab).vocab_size
    size = vocab.get("vocab_size") if isinstance(vocab, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 65536:
        raise ValueError(
            f'{vocab_path}: expected a tokenizer dict or {{"vocab_size": N}} with '
            "1 <= N <= 65536 (ids are uint16)"
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


def sample_batch(
    ids: np.ndarray, batch_size: int, context: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random windows: ``x`` (batch_size, context) int64 and ``y`` = ``x`` shifted by one."""
    if batch_size < 1 or context < 1:
        raise ValueError(f"batch_size and context must be >= 1, got {batch_size}, {context}")
    n = len(ids)
    if n <= context:
        raise ValueError(f"corpus of {n} tokens is shorter than context {context} + 1")
    starts = rng.integers(0, n - context, size=batch_size)
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
        counts += np.bincount(_as_ids(train[lo:lo + _CHUNK], vocab_size), minlength=vocab_size)
    log_p = np.log(counts) - np.log(counts.sum())
    total = sum(float(log_p[_as_ids(val[lo:lo + _CHUNK], vocab_size)].sum())
                for lo in range(0, val.size, _CHUNK))
    return -total / val.size


_CHUNK = 1 << 20  # ids per chunk: 8 MB as int64


# --------------------------------------------------------------------------------------------
# Classification files
# --------------------------------------------------------------------------------------------

_INT = re.compile(r"[+-]?[0-9]+")
# A label is a class number: a larger one is a typo or another column, not a 65537-class task.
MAX_LABEL = 65535


@dataclass
class LabeledRows:
    """Sentences with integer labels, and where each came from (``file:line``) for errors."""

    texts: list[str]
    labels: np.ndarray
    files: list[str]
    lines: np.ndarray  # line number of each row in its file, from 1
    file_index: np.ndarray  # which of ``files`` each row is from

    def names(self) -> list[str]:
        return [f"{self.files[i]}:{n}" for i, n in zip(self.file_index, self.lines)]

    def take(self, keep: np.ndarray) -> LabeledRows:
        return LabeledRows([t for t, k in zip(self.texts, keep) if k], self.labels[keep],
                           self.files, self.lines[keep], self.file_index[keep])

    def hold_out_every(self, nth: int) -> tuple[LabeledRows, LabeledRows]:
        """(rows kept for training, validation rows): line numbers nth, 2 nth, ... of each
        file are validation, so the split never depends on how the files were ordered."""
        val = self.lines % nth == 0
        if not val.any() or val.all():
            empty = "validation" if not val.any() else "training"
            raise ValueError(f"--val-every-nth {nth} leaves no {empty} rows in "
                             f"{', '.join(self.files)}")
        return self.take(~val), self.take(val)


def _rows(path: Path, text: str) -> Iterable[tuple[int, list[str]]]:
    """(line number, fields) pairs, header first; blank lines are skipped."""
    if path.suffix.lower() == ".csv":
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            for row in reader:
                if row:
                    yield reader.line_num, row
        except csv.Error as e:  # e.g. a field over csv's 128 KB limit: not a ValueError
            raise ValueError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    else:
        # GLUE TSVs are unquoted and sentences contain '"', so no csv dialect: split on tabs.
        for lineno, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                yield lineno, line.split("\t")


def load_classification_rows(path: PathLike, encoding: str = "utf-8") -> LabeledRows:
    """Texts and int64 labels from a GLUE-style TSV (``sentence``, ``label`` columns) or a
    ``.csv`` file (``text``, ``label`` columns). Extra columns are ignored.

    Errors name the file and line: missing columns, wrong field count, empty text, a label
    that is not a non-negative integer (or is absurdly large), no rows.
    """
    p = Path(path)
    text_column = "text" if p.suffix.lower() == ".csv" else "sentence"
    rows = iter(_rows(p, read_text(p, encoding)))
    header_line = next(rows, None)
    if header_line is None:
        raise ValueError(f"{p}: empty file, expected a header with {text_column!r} and 'label'")
    lineno, header = header_line
    names = [h.strip() for h in header]
    missing = [c for c in (text_column, "label") if c not in names]
    if missing:
        hint = ("; for one file of sentences per class, give the files as "
                "--data FILE0 FILE1 ..." if len(names) == 1 else "")
        raise ValueError(
            f"{p}:{lineno}: header lacks column(s) {', '.join(map(repr, missing))} "
            f"(found {', '.join(repr(n[:40]) for n in names[:8])}){hint}"
        )
    t_col, l_col = names.index(text_column), names.index("label")
    texts: list[str] = []
    labels: list[int] = []
    lines: list[int] = []
    for lineno, fields in rows:
        if len(fields) != len(names):
            raise ValueError(f"{p}:{lineno}: expected {len(names)} fields, found {len(fields)}")
        sentence, label = fields[t_col], fields[l_col].strip()
        if not sentence.strip():
            raise ValueError(f"{p}:{lineno}: empty {text_column}")
        if not _INT.fullmatch(label):
            raise ValueError(f"{p}:{lineno}: label {label[:40]!r} is not an integer")
        if len(label) > len(str(MAX_LABEL)) + 1 or int(label) > MAX_LABEL:
            raise ValueError(f"{p}:{lineno}: label {label[:24]} is too large (labels are class "
                             f"numbers 0..{MAX_LABEL})")
        if int(label) < 0:
            raise ValueError(f"{p}:{lineno}: label {int(label)} is negative (labels must be >= 0)")
        texts.append(sentence)
        labels.append(int(label))
        lines.append(lineno)
    if not texts:
        raise ValueError(f"{p}: no rows after the header")
    return LabeledRows(texts, np.array(labels, dtype=np.int64), [str(p)],
                       np.array(lines, dtype=np.int64), np.zeros(len(texts), np.int64))


def load_class_files(paths: Sequence[PathLike], encoding: str = "utf-8") -> LabeledRows:
    """One sentence per line, one file per class: the lines of ``paths[i]`` get label i
    (the layout of the Movie Review corpus, ``rt-polarity.neg`` and ``.pos``). Blank lines
    are skipped."""
    texts: list[str] = []
    labels, lines, index = [], [], []
    for i, path in enumerate(paths):
        p = Path(path)
        found = 0
        for lineno, line in enumerate(read_text(p, encoding).split("\n"), start=1):
            if line.strip():
                texts.append(line)
                labels.append(i)
                lines.append(lineno)
                index.append(i)
                found += 1
        if not found:
            raise ValueError(f"{p}: no sentences (every line is blank)")
    return LabeledRows(texts, np.array(labels, dtype=np.int64), [str(p) for p in paths],
                       np.array(lines, dtype=np.int64), np.array(index, dtype=np.int64))


def load_labeled(data: str | Sequence[str], encoding: str = "utf-8") -> LabeledRows:
    """A TSV/CSV file of sentences and labels, or (two or more paths) one file per class."""
    if isinstance(data, str):
        return load_classification_rows(data, encoding)
    if len(data) == 1:
        return load_classification_rows(data[0], encoding)
    return load_class_files(data, encoding)


def encode_classification(
    texts: Sequence[str],
    tokenizer: Tokenizer,
    context: int,
    names: Sequence[str] | None = None,
    prefix: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray, int]:
    """``ids`` (N, context) int64, ``lengths`` (N,) int64 and how many texts were cut.

    Each text, after the ``prefix`` ids (e.g. a [CLS] token), keeps its first tokens up to
    ``context`` and is right-padded with id 0; since 0 may also be a real token, ``lengths``
    (the unpadded length, >= 1) is what marks the padding. Errors call text ``i`` by
    ``names[i]`` (e.g. ``"train.tsv:12"``), else ``"text i"``.
    """
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    ids = np.zeros((len(texts), context), dtype=np.int64)
    lengths = np.zeros(len(texts), dtype=np.int64)
    batch = getattr(tokenizer, "encode_batch", None)
    encoded = batch(texts) if batch is not None else None
    cut = 0
    for i, text in enumerate(texts):
        name = names[i] if names is not None else f"text {i}"
        try:
            tokens = encoded[i] if encoded is not None else tokenizer.encode(text)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        if len(tokens) == 0:
            raise ValueError(f"{name} encodes to no tokens")
        tokens = np.concatenate([np.asarray(prefix, np.int64), tokens]) if prefix else tokens
        n = min(len(tokens), context)
        cut += len(tokens) > context
        ids[i, :n] = tokens[:n]
        lengths[i] = n
    return ids, lengths, cut
