"""Labelled sentences for classification: TSV/CSV files or one file of sentences per class.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .text import PathLike, read_text
from .tokenizer import Tokenizer

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


def truncate(tokens: np.ndarray, context: int, tail: int = 0) -> np.ndarray:
    """At most ``context`` of ``tokens``: the first ones, or with ``tail`` the first
    ``context - tail`` and the last ``tail`` (Sun et al. 2019's head+tail for long reviews)."""
    if len(tokens) <= context:
        return tokens
    if not 0 <= tail < context:
        raise ValueError(f"truncate: tail {tail} must be in [0, context {context})")
    return np.concatenate([tokens[:context - tail], tokens[len(tokens) - tail:]])


def encode_classification(
    texts: Sequence[str],
    tokenizer: Tokenizer,
    context: int,
    names: Sequence[str] | None = None,
    prefix: Sequence[int] = (),
    tail: int = 0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """``ids`` (N, context) int64, ``lengths`` (N,) int64 and how many texts were cut.

    Each text, after the ``prefix`` ids (e.g. a [CLS] token), keeps its first tokens up to
    ``context`` (or, with ``tail``, its first ``context - tail`` and its last ``tail``) and
    is right-padded with id 0; since 0 may also be a real token, ``lengths``
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
        ids[i, :n] = truncate(tokens, context, tail)
        lengths[i] = n
    return ids, lengths, cut


# --truncation head_tail keeps this share of the context from a long text's end (Sun et al.,
# 2019, "How to Fine-Tune BERT for Text Classification": 382 of 510 tokens, best on IMDB).
TAIL_SHARE = 0.75
TRUNCATIONS = ("head", "head_tail")


def encode_sentences(tokenizer, texts: list[str], context: int, pooling: str,
                     names: list[str] | None = None, truncation: str = "head"
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """Ids, lengths and the number of sentences cut (by ``truncation``: ``head`` or
    ``head_tail``), as a classifier with ``pooling`` reads them: after a [CLS] token for
    ``"cls"``."""
    prefix = ()
    if pooling == "cls":
        if getattr(tokenizer, "cls_id", None) is None:
            raise ValueError("pooling cls: the tokenizer has no [CLS] token (use a word or bpe "
                             "tokenizer)")
        prefix = (tokenizer.cls_id,)
    tail = int(context * TAIL_SHARE) if truncation == "head_tail" else 0
    return encode_classification(texts, tokenizer, context, names, prefix, tail)
