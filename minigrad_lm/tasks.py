"""The two training tasks: their data, batches, loss, evaluation and report lines.

:class:`LMTask` is next-token prediction on a corpus; :class:`ClassifyTask` is sentence
classification from a TSV/CSV file. The training loop in :mod:`minigrad_lm.train` only talks to
this small interface, so it treats both the same way (including checkpoints and resume).
"""

from __future__ import annotations

import hashlib
import math
import platform
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from . import backend
from .data import (
    ByteTokenizer,
    CharTokenizer,
    LabeledRows,
    default_corpus,
    encode_classification,
    load_labeled,
    load_text,
    load_token_folder,
    read_vocab_json,
    split_train_val,
    tokenizer_from_dict,
    unigram_baseline,
)
from .distributed import LOCAL, World
from .nn import functional as F
from .run_state import external_tokenizer_dict
from .sampling import generate
from .tensor import Tensor, no_grad
from .tokenizer import TrainedTokenizer, is_hf_dict
from .train_config import TrainConfig

__all__ = ["ClassifyTask", "LMTask", "make_task"]

# Evaluation draws its batches from a generator of its own, re-created for every evaluation:
# every eval scores the same windows, and the training streams are never touched.
EVAL_STREAM = 2
EPOCH_STREAM = 4  # the order of the rows in each epoch (classify)
MAJORITY_MARGIN = 0.005  # val accuracy within this of the majority baseline learned nothing
VAL_FRACTION = 0.1
SAMPLE_TEMPERATURE = 0.8
FINGERPRINT_ROWS = 1 << 16


def make_task(cfg: TrainConfig, source_tokenizer: dict | None, num_classes: int | None = None):
    """The task object for ``cfg.task``; ``source_tokenizer`` comes from a resumed or
    ``--init-from`` checkpoint, ``num_classes`` from a resumed classifier."""
    if cfg.task == "lm":
        return LMTask(cfg, source_tokenizer)
    if cfg.task == "translate":
        from .translate_task import TranslateTask  # it builds on this module's helpers
        return TranslateTask(cfg, source_tokenizer)
    return ClassifyTask(cfg, source_tokenizer, num_classes)


@contextmanager
def _evaluating(model):
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


def _paths(data: str | list[str]) -> list[str]:
    return [data] if isinstance(data, str) else list(data)


def _joined(data: str | list[str]) -> str:
    return ", ".join(_paths(data))


def _hold_out_lines(text: str, nth: int) -> tuple[str, str]:
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


def _fingerprint(*arrays: np.ndarray) -> str:
    """A digest of the data that tells two machines' copies apart without reading a large
    token file whole: shapes, dtypes and an evenly spaced sample of rows."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.asarray(a)
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a[:: max(1, len(a) // FINGERPRINT_ROWS)]))
    return h.hexdigest()


def _windows(ids: np.ndarray, starts: np.ndarray, context: int) -> tuple[np.ndarray, ...]:
    """Inputs and next-token targets of the windows that start at ``starts`` (the arrays
    :func:`~minigrad_lm.data.sample_batch` makes)."""
    window = np.asarray(ids)[starts[:, None] + np.arange(context + 1)].astype(np.int64)
    return np.ascontiguousarray(window[:, :-1]), np.ascontiguousarray(window[:, 1:])


def _check_length(ids: np.ndarray, context: int, what: str) -> None:
    if len(ids) <= context:
        raise ValueError(
            f"{what} has {len(ids):,} tokens, not more than --context {context}; "
            "use more text or a smaller --context"
        )


class LMTask:
    """Next-token prediction: random windows of ``context`` tokens from the train split."""

    name = "lm"
    num_classes = None
    best_metric = "val_loss"

    def __init__(self, cfg: TrainConfig, source_tokenizer: dict | None):
        self.cfg = cfg
        folder = Path(cfg.data) if isinstance(cfg.data, str) else None
        if folder is not None and folder.is_dir() and (folder / "train.bin").exists():
            self._load_token_folder(folder, source_tokenizer)
        else:
            self._load_text(source_tokenizer)
        name = _joined(cfg.data) if cfg.data is not None else "the default corpus"
        _check_length(self.train, cfg.context, f"{name}: the training split")
        val_name = _joined(cfg.val_data) if cfg.val_data is not None else name
        _check_length(self.val, cfg.context, f"{val_name}: the validation split")
        self.vocab_size = self._vocab_size()
        self.unigram = unigram_baseline(self.train, self.val, self.vocab_size)

    def _vocab_size(self) -> int:
        if self.tokenizer is not None:
            return self.tokenizer.vocab_size
        return self.tokenizer_dict["vocab_size"]

    def _load_token_folder(self, folder: Path, source_tokenizer: dict | None) -> None:
        if self.cfg.val_data is not None:
            raise ValueError(f"--val-data: {folder} is a token folder; its val.bin is the val set")
        self.train, self.val, tok = load_token_folder(folder)
        tok = tok or external_tokenizer_dict(read_vocab_json(folder)[1])
        if source_tokenizer is not None and source_tokenizer != tok:
            raise ValueError(f"{folder}/vocab.json: not the checkpoint's tokenizer")
        self.tokenizer_dict = tok
        self.tokenizer = None if tok["type"] == "external" else tokenizer_from_dict(tok)
        self.source = (
            f"{folder}: {len(self.train):,} train and {len(self.val):,} val token ids"
        )

    def _load_text(self, source_tokenizer: dict | None) -> None:
        cfg = self.cfg
        if cfg.data is None:
            text = default_corpus()
            digest = hashlib.sha256(text.encode()).hexdigest()[:12]
            self.source = (
                f"docstrings of the Python {platform.python_version()} standard library, "
                f"{len(text):,} characters (sha256 {digest})"
            )
            texts = [text]
        else:
            texts = [load_text(p, cfg.encoding) for p in _paths(cfg.data)]
            self.source = f"{_joined(cfg.data)}, {sum(map(len, texts)):,} characters"
        val_text = None
        if cfg.val_data is not None:
            val_text = "\n".join(load_text(p, cfg.encoding) for p in _paths(cfg.val_data))
        elif cfg.val_every_nth is not None:
            texts, held_out = zip(*(_hold_out_lines(t, cfg.val_every_nth) for t in texts))
            val_text = "\n".join(held_out)
        text = "\n".join(texts)
        if source_tokenizer is not None:
            if source_tokenizer.get("type") == "external":
                raise ValueError(
                    "the checkpoint was trained on token ids without a tokenizer; it cannot "
                    "encode text (give --data a token folder)"
                )
            tokenizer = tokenizer_from_dict(source_tokenizer)
        elif cfg.tokenizer == "char":
            # Validation characters join the vocabulary: they are known now, and an error
            # about them would only stop the run.
            tokenizer = CharTokenizer.from_text(text + (val_text or ""), unknown=True)
        else:
            tokenizer = _new_tokenizer(cfg, text.split("\n"))
        name = _joined(cfg.data) if cfg.data is not None else "default corpus"
        ids = encode_text(tokenizer, text, name)
        if val_text is None:
            self.train, self.val = split_train_val(ids, VAL_FRACTION)
            self.source += f", split {1 - VAL_FRACTION:.0%}/{VAL_FRACTION:.0%} into train/val"
        else:
            self.train, self.val = ids, encode_text(tokenizer, val_text, _joined(cfg.val_data)
                                                     if cfg.val_data else name)
            held = (f"every {cfg.val_every_nth}th line" if cfg.val_data is None
                    else _joined(cfg.val_data))
            self.source += f"; val: {held}, {len(val_text):,} characters"
        self.tokenizer, self.tokenizer_dict = tokenizer, tokenizer.to_dict()

    def describe(self) -> list[str]:
        return [
            f"data: {self.source}",
            (
                f"tokens: {len(self.train):,} train, {len(self.val):,} val; vocabulary "
                f"{self.vocab_size:,} ({_tokenizer_kind(self.tokenizer_dict)})"
            ),
            f"unigram baseline (token frequencies, no context): val loss {self.unigram:.4f}",
        ]

    def draw(self, rng: np.random.Generator, size: int, step: int) -> np.ndarray:
        """Where the ``size`` training windows of one step start (the step's one random draw,
        the same as :func:`~minigrad_lm.data.sample_batch`'s)."""
        return rng.integers(0, len(self.train) - self.cfg.context, size=size)

    def batch_at(self, starts: np.ndarray) -> tuple[np.ndarray, ...]:
        """The training windows that start at ``starts``: inputs and next-token targets."""
        return _windows(self.train, starts, self.cfg.context)

    @staticmethod
    def tokens(batch) -> int:
        return batch[0].size

    def fingerprint(self) -> str:
        return _fingerprint(self.train, self.val)

    def loss(self, model, batch) -> Tensor:
        x, y = batch
        return model.loss(x, y)

    def _score(self, model, ids, rng, world: World) -> tuple[float, float]:
        cfg = self.cfg
        per_rank = cfg.batch_size * cfg.grad_accum_steps
        loss_sum, correct = 0.0, 0
        for _ in range(cfg.eval_batches):
            # Drawn like training batches, so the scored windows never depend on the ranks.
            starts = rng.integers(0, len(ids) - cfg.context, size=per_rank * world.size)
            mine = starts[world.rank * per_rank:(world.rank + 1) * per_rank]
            for lo in range(0, per_rank, cfg.batch_size):
                x, y = _windows(ids, mine[lo:lo + cfg.batch_size], cfg.context)
                logits = model(x)
                loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                correct += int((backend.to_numpy(logits.data.argmax(axis=-1)) == y).sum())
        tokens = cfg.eval_batches * per_rank * world.size * cfg.context
        return world.sum(loss_sum) / tokens, world.sum(correct) / tokens

    def evaluate(self, model, world: World = LOCAL) -> dict[str, float]:
        """Mean loss on ``eval_batches`` fixed train and val batches (as large as a training
        step's, each rank scoring its rows); val ppl and accuracy."""
        rng = np.random.default_rng([self.cfg.seed, EVAL_STREAM])
        with _evaluating(model):
            train_loss, _ = self._score(model, self.train, rng, world)
            val_loss, val_acc = self._score(model, self.val, rng, world)
        return {
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_ppl": math.exp(min(val_loss, 700.0)),
            "val_acc": val_acc,
        }

    def eval_line(self, step: int, m: dict[str, float]) -> str:
        return (
            f"step {step}: train {m['train_loss']:.4f} | val {m['val_loss']:.4f} "
            f"(ppl {m['val_ppl']:.2f}, acc {m['val_acc']:.1%}) | unigram {self.unigram:.4f}"
        )

    @staticmethod
    def improves(metrics: dict[str, float], best: float | None) -> bool:
        return best is None or metrics["val_loss"] < best

    def finish(self, model, best: float | None) -> list[str]:
        """A sample from the trained model, started at a newline (a fresh docstring)."""
        n = self.cfg.sample_tokens
        if n == 0:
            return []
        prompt = self._sample_prompt()
        new = generate(model, prompt, n, temperature=SAMPLE_TEMPERATURE, seed=self.cfg.seed)
        head = f"sample ({n} tokens, temperature {SAMPLE_TEMPERATURE}, seed {self.cfg.seed}):"
        if self.tokenizer is None:
            return [head, " ".join(map(str, new.tolist()))]
        return [head, self.tokenizer.decode(np.concatenate([prompt, new]))]

    def _sample_prompt(self) -> np.ndarray:
        sep = getattr(self.tokenizer, "sep_id", None)
        if sep is not None:  # a line starts after a [SEP]
            return np.array([sep], np.int64)
        if self.tokenizer is not None:
            try:
                return self.tokenizer.encode("\n")
            except ValueError:  # a corpus without newlines
                pass
        return np.asarray(self.val[:1], dtype=np.int64)


class ClassifyTask:
    """Sentence classification: each epoch visits every training row once, in an order of its
    own drawn from the run's seed; evaluation scores the whole val set."""

    name = "classify"
    best_metric = "val_acc"

    def __init__(self, cfg: TrainConfig, source_tokenizer: dict | None, num_classes: int | None):
        self.cfg = cfg
        train = load_labeled(cfg.data, cfg.encoding)
        if cfg.val_data is not None:
            val = load_labeled(cfg.val_data, cfg.encoding)
        else:
            train, val = train.hold_out_every(cfg.val_every_nth)
        self.tokenizer = _classify_tokenizer(cfg, source_tokenizer, train.texts)
        self.tokenizer_dict = self.tokenizer.to_dict()
        self.vocab_size = self.tokenizer.vocab_size
        self.train_ids, self.train_len, self.train_cut = encode_sentences(
            self.tokenizer, train.texts, cfg.context, cfg.pooling, train.names())
        self.val_ids, self.val_len, self.val_cut = encode_sentences(
            self.tokenizer, val.texts, cfg.context, cfg.pooling, val.names())
        self.train_labels, self.val_labels = train.labels, val.labels
        self.num_classes = num_classes or max(
            2, int(max(train.labels.max(), val.labels.max())) + 1)
        self._check_labels(train)
        self._check_labels(val)
        self.train_rows = len(train.labels)
        self.sources = (train.files, val.files)
        majority = np.bincount(self.train_labels).argmax()
        self.majority = float(np.mean(self.val_labels == majority))

    def _check_labels(self, rows: LabeledRows) -> None:
        bad = np.flatnonzero(rows.labels >= self.num_classes)
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{rows.names()[i]}: label {int(rows.labels[i])}, but the checkpoint's "
                f"classifier has {self.num_classes} classes (0..{self.num_classes - 1})"
            )

    def describe(self) -> list[str]:
        cfg = self.cfg
        counts = np.bincount(self.train_labels, minlength=self.num_classes)
        val_from = (f"every {cfg.val_every_nth}th line held out" if cfg.val_data is None
                    else ", ".join(self.sources[1]))
        lines = [
            (f"data: {', '.join(self.sources[0])}: {self.train_rows:,} train rows (per class "
             f"{', '.join(map(str, counts))}); val ({val_from}): {len(self.val_labels):,} rows; "
             f"{self.num_classes} classes"),
            (f"vocabulary {self.vocab_size:,} ({_tokenizer_kind(self.tokenizer_dict)}); "
             f"sentences: mean {self.train_len.mean():.1f}, max {self.train_len.max()} tokens"),
        ]
        if self.train_cut or self.val_cut:
            lines.append(
                f"note: {self.train_cut:,} train and {self.val_cut:,} val sentences are longer "
                f"than --context {cfg.context} tokens and were cut to it")
        lines.append(f"majority-class baseline: val accuracy {self.majority:.1%}")
        return lines

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.cfg.seed, EPOCH_STREAM, epoch]).permutation(
            self.train_rows)

    def draw(self, rng: np.random.Generator, size: int, step: int) -> np.ndarray:
        """The ``size`` training rows of step ``step``: the next ones in the concatenation of
        the epochs' orders. A function of the step alone, so a resumed run (mid-epoch too)
        picks the rows the uninterrupted one would have."""
        start = step * size
        first, last = start // self.train_rows, (start + size - 1) // self.train_rows
        order = np.concatenate([self._epoch_order(e) for e in range(first, last + 1)])
        offset = start - first * self.train_rows
        return order[offset:offset + size]

    def batch_at(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """The rows' ids, cut to the longest of them (padding past it is never looked at)."""
        lengths = self.train_len[rows]
        width = int(lengths.max())
        return self.train_ids[rows, :width], lengths, self.train_labels[rows]

    @staticmethod
    def tokens(batch) -> int:
        """The real tokens of a batch (padding is not work done)."""
        return int(batch[1].sum())

    def fingerprint(self) -> str:
        return _fingerprint(self.train_ids, self.train_labels, self.val_ids, self.val_labels)

    def loss(self, model, batch) -> Tensor:
        ids, lengths, labels = batch
        return F.cross_entropy(model(ids, lengths), labels)

    def _score(self, model, ids, lengths, labels, world: World) -> tuple[float, float]:
        total_loss, correct = score_classifier(model, ids, lengths, labels,
                                               self.cfg.batch_size, world)
        return world.sum(total_loss) / len(labels), world.sum(correct) / len(labels)

    def evaluate(self, model, world: World = LOCAL) -> dict[str, float]:
        """Loss and accuracy on the whole val set and on a fixed sample of train rows (the
        ranks share the batches)."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, EVAL_STREAM])
        step_rows = cfg.batch_size * cfg.grad_accum_steps * world.size
        n = min(self.train_rows, cfg.eval_batches * step_rows)
        rows = np.sort(rng.permutation(self.train_rows)[:n])
        with _evaluating(model):
            train_loss, train_acc = self._score(
                model, self.train_ids[rows], self.train_len[rows], self.train_labels[rows], world
            )
            val_loss, val_acc = self._score(model, self.val_ids, self.val_len, self.val_labels,
                                            world)
        return {"train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                "val_acc": val_acc}

    @staticmethod
    def improves(metrics: dict[str, float], best: float | None) -> bool:
        return best is None or metrics["val_acc"] > best

    def eval_line(self, step: int, m: dict[str, Any]) -> str:
        return (
            f"step {step}: train {m['train_loss']:.4f} (acc {m['train_acc']:.1%}) | val "
            f"{m['val_loss']:.4f} (acc {m['val_acc']:.1%}) | majority {self.majority:.1%}"
        )

    def finish(self, model, best: float | None) -> list[str]:
        """A warning when the classifier never beat predicting the most frequent class."""
        if best is None or best > self.majority + MAJORITY_MARGIN:
            return []
        return [f"warning: the best val accuracy, {best:.1%}, is no better than always "
                f"predicting the most frequent class ({self.majority:.1%}): the model has not "
                "learned the task; try a lower --lr, more --epochs or another --tokenizer"]


def encode_sentences(tokenizer, texts: list[str], context: int, pooling: str,
                     names: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Ids, lengths and the number of sentences cut, as a classifier with ``pooling`` reads
    them: after a [CLS] token for ``"cls"``."""
    prefix = ()
    if pooling == "cls":
        if getattr(tokenizer, "cls_id", None) is None:
            raise ValueError("pooling cls: the tokenizer has no [CLS] token (use a word or bpe "
                             "tokenizer)")
        prefix = (tokenizer.cls_id,)
    return encode_classification(texts, tokenizer, context, names, prefix)


def score_lm(model, ids: np.ndarray, context: int, batch_size: int) -> tuple[float, int, int]:
    """(summed next-token cross-entropy, number right, tokens scored) over ``ids`` cut into
    consecutive windows of ``context`` inputs (each scores every one of its targets)."""
    n = (len(ids) - 1) // context
    if n == 0:
        raise ValueError(f"{len(ids)} tokens: need more than the model's context of {context}")
    starts = np.arange(n) * context
    total_loss, correct = 0.0, 0
    for lo in range(0, n, batch_size):
        x, y = _windows(ids, starts[lo:lo + batch_size], context)
        logits = model(x)
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((backend.to_numpy(logits.data.argmax(axis=-1)) == y).sum())
    return total_loss, correct, n * context


def score_classifier(model, ids, lengths, labels, batch_size: int,
                     world: World = LOCAL) -> tuple[float, int]:
    """(summed cross-entropy, number right) over this rank's share of the rows, in batches
    cut to their longest sentence."""
    total_loss, correct = 0.0, 0
    starts = range(0, len(labels), batch_size)
    for lo in starts[world.rank::world.size]:  # the ranks take turns
        part = slice(lo, lo + batch_size)
        width = int(lengths[part].max())
        logits = model(ids[part, :width], lengths[part])
        total_loss += F.cross_entropy(logits, labels[part], reduction="sum").item()
        pred = backend.to_numpy(logits.data.argmax(axis=-1))
        correct += int((pred == labels[part]).sum())
    return total_loss, correct


def _tokenizer_kind(tokenizer_dict: dict) -> str:
    if is_hf_dict(tokenizer_dict):
        return TrainedTokenizer.from_dict(tokenizer_dict).kind
    return str(tokenizer_dict.get("type"))


def _classify_tokenizer(cfg: TrainConfig, source_tokenizer: dict | None, texts: list[str]):
    """The checkpoint's tokenizer, or one learned from the training sentences."""
    if source_tokenizer is not None:
        if source_tokenizer.get("type") == "external":
            raise ValueError("the checkpoint was trained on token ids without a tokenizer; "
                             "it cannot encode sentences")
        return tokenizer_from_dict(source_tokenizer)
    return _new_tokenizer(cfg, texts)


def _new_tokenizer(cfg: TrainConfig, texts: list[str]):
    if cfg.tokenizer == "char":
        return CharTokenizer.from_text("".join(texts), unknown=True)
    if cfg.tokenizer == "byte":
        return ByteTokenizer()
    return TrainedTokenizer.train(cfg.tokenizer, texts, cfg.vocab_size, cfg.lowercase,
                                  cfg.min_count)
