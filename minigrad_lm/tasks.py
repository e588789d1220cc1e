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
    default_corpus,
    encode_classification,
    load_classification_rows,
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
from .train_config import TrainConfig

__all__ = ["ClassifyTask", "LMTask", "make_task"]

# Evaluation draws its batches from a generator of its own, re-created for every evaluation:
# every eval scores the same windows, and the training streams are never touched.
EVAL_STREAM = 2
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


def _encode_text(tokenizer, text: str, name: str) -> np.ndarray:
    """Encode a corpus; an unknown character is reported by file and line, not offset."""
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

    def __init__(self, cfg: TrainConfig, source_tokenizer: dict | None):
        self.cfg = cfg
        data = Path(cfg.data) if cfg.data is not None else None
        if data is not None and data.is_dir() and (data / "train.bin").exists():
            self._load_token_folder(data, source_tokenizer)
        else:
            self._load_text(data, source_tokenizer)
        name = cfg.data if cfg.data is not None else "the default corpus"
        _check_length(self.train, cfg.context, f"{name}: the training split")
        _check_length(self.val, cfg.context, f"{cfg.val_data or name}: the validation split")
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

    def _load_text(self, data: Path | None, source_tokenizer: dict | None) -> None:
        if data is None:
            text, name = default_corpus(), "default corpus"
            digest = hashlib.sha256(text.encode()).hexdigest()[:12]
            self.source = (
                f"docstrings of the Python {platform.python_version()} standard library, "
                f"{len(text):,} characters (sha256 {digest})"
            )
        else:
            text, name = load_text(data), str(data)
            self.source = f"{data}, {len(text):,} characters"
        val_text = load_text(self.cfg.val_data) if self.cfg.val_data is not None else None
        if source_tokenizer is not None:
            if source_tokenizer.get("type") == "external":
                raise ValueError(
                    "the checkpoint was trained on token ids without a tokenizer; it cannot "
                    "encode text (give --data a token folder)"
                )
            tokenizer = tokenizer_from_dict(source_tokenizer)
        elif self.cfg.tokenizer == "char":
            # Validation characters join the vocabulary: they are known now, and an error
            # about them would only stop the run.
            tokenizer = CharTokenizer.from_text(text + (val_text or ""), unknown=True)
        else:
            tokenizer = ByteTokenizer()
        ids = _encode_text(tokenizer, text, name)
        if val_text is None:
            self.train, self.val = split_train_val(ids, VAL_FRACTION)
            self.source += f", split {1 - VAL_FRACTION:.0%}/{VAL_FRACTION:.0%} into train/val"
        else:
            self.train, self.val = ids, _encode_text(tokenizer, val_text, self.cfg.val_data)
            self.source += f"; val: {self.cfg.val_data}, {len(val_text):,} characters"
        self.tokenizer, self.tokenizer_dict = tokenizer, tokenizer.to_dict()

    def describe(self) -> list[str]:
        return [
            f"data: {self.source}",
            (
                f"tokens: {len(self.train):,} train, {len(self.val):,} val; vocabulary "
                f"{self.vocab_size} ({self.tokenizer_dict['type']})"
            ),
            f"unigram baseline (token frequencies, no context): val loss {self.unigram:.4f}",
        ]

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Where the ``size`` training windows of one step start (the step's one random draw,
        the same as :func:`~minigrad_lm.data.sample_batch`'s)."""
        return rng.integers(0, len(self.train) - self.cfg.context, size=size)

    def batch_at(self, starts: np.ndarray) -> tuple[np.ndarray, ...]:
        """The training windows that start at ``starts``: inputs and next-token targets."""
        return _windows(self.train, starts, self.cfg.context)

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

    def finish(self, model) -> list[str]:
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
        if self.tokenizer is not None:
            try:
                return self.tokenizer.encode("\n")
            except ValueError:  # a corpus without newlines
                pass
        return np.asarray(self.val[:1], dtype=np.int64)


class ClassifyTask:
    """Sentence classification: random rows per batch, evaluation over the whole val file."""

    name = "classify"

    def __init__(self, cfg: TrainConfig, source_tokenizer: dict | None, num_classes: int | None):
        self.cfg = cfg
        train_texts, self.train_labels, train_lines = load_classification_rows(cfg.data)
        val_texts, self.val_labels, val_lines = load_classification_rows(cfg.val_data)
        if source_tokenizer is not None:
            if source_tokenizer.get("type") == "external":
                raise ValueError("the checkpoint was trained on token ids without a tokenizer; "
                                 "it cannot encode sentences")
            self.tokenizer = tokenizer_from_dict(source_tokenizer)
        elif cfg.tokenizer == "char":
            self.tokenizer = CharTokenizer.from_text("".join(train_texts + val_texts))
        else:
            self.tokenizer = ByteTokenizer()
        self.tokenizer_dict = self.tokenizer.to_dict()
        self.vocab_size = self.tokenizer.vocab_size
        self.train_ids, self.train_len = encode_classification(
            train_texts, self.tokenizer, cfg.context, [f"{cfg.data}:{n}" for n in train_lines]
        )
        self.val_ids, self.val_len = encode_classification(
            val_texts, self.tokenizer, cfg.context, [f"{cfg.val_data}:{n}" for n in val_lines]
        )
        self.num_classes = num_classes or max(
            2, int(max(self.train_labels.max(), self.val_labels.max())) + 1
        )
        self._check_labels(cfg.data, self.train_labels, train_lines)
        self._check_labels(cfg.val_data, self.val_labels, val_lines)
        majority = np.bincount(self.train_labels).argmax()
        self.majority = float(np.mean(self.val_labels == majority))

    def _check_labels(self, name: str, labels: np.ndarray, lines: list[int]) -> None:
        bad = np.flatnonzero(labels >= self.num_classes)
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{name}:{lines[i]}: label {int(labels[i])}, but the checkpoint's classifier "
                f"has {self.num_classes} classes (0..{self.num_classes - 1})"
            )

    def describe(self) -> list[str]:
        return [
            (
                f"data: {self.cfg.data} ({len(self.train_labels):,} rows), val "
                f"{self.cfg.val_data} ({len(self.val_labels):,} rows); {self.num_classes} classes"
            ),
            (
                f"vocabulary {self.vocab_size} ({self.tokenizer_dict['type']}); sentences cut "
                f"to {self.cfg.context} tokens"
            ),
            f"majority-class baseline: val accuracy {self.majority:.1%}",
        ]

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """The ``size`` training rows of one step (the step's one random draw)."""
        return rng.integers(0, len(self.train_labels), size=size)

    def batch_at(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.train_ids[rows], self.train_len[rows], self.train_labels[rows]

    def fingerprint(self) -> str:
        return _fingerprint(self.train_ids, self.train_labels, self.val_ids, self.val_labels)

    def loss(self, model, batch) -> Tensor:
        ids, lengths, labels = batch
        return F.cross_entropy(model(ids, lengths), labels)

    def _score(self, model, ids, lengths, labels, world: World) -> tuple[float, float]:
        total_loss, correct = 0.0, 0
        starts = range(0, len(labels), self.cfg.batch_size)
        for lo in starts[world.rank::world.size]:  # the ranks take turns
            part = slice(lo, lo + self.cfg.batch_size)
            logits = model(ids[part], lengths[part])
            total_loss += F.cross_entropy(logits, labels[part], reduction="sum").item()
            pred = backend.to_numpy(logits.data.argmax(axis=-1))
            correct += int((pred == labels[part]).sum())
        return world.sum(total_loss) / len(labels), world.sum(correct) / len(labels)

    def evaluate(self, model, world: World = LOCAL) -> dict[str, float]:
        """Loss and accuracy on the whole val file and on a fixed sample of train rows (the
        ranks share the batches)."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, EVAL_STREAM])
        step_rows = cfg.batch_size * cfg.grad_accum_steps * world.size
        n = min(len(self.train_labels), cfg.eval_batches * step_rows)
        rows = np.sort(rng.permutation(len(self.train_labels))[:n])
        with _evaluating(model):
            train_loss, train_acc = self._score(
                model, self.train_ids[rows], self.train_len[rows], self.train_labels[rows], world
            )
            val_loss, val_acc = self._score(model, self.val_ids, self.val_len, self.val_labels,
                                            world)
        return {"train_loss": train_loss, "train_acc": train_acc, "val_loss": val_loss,
                "val_acc": val_acc}

    def eval_line(self, step: int, m: dict[str, Any]) -> str:
        return (
            f"step {step}: train {m['train_loss']:.4f} (acc {m['train_acc']:.1%}) | val "
            f"{m['val_loss']:.4f} (acc {m['val_acc']:.1%}) | majority {self.majority:.1%}"
        )

    def finish(self, model) -> list[str]:
        return []
