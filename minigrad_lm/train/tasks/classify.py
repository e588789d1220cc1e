"""Sentence classification: a GPT body (fresh or a pretrained language model's) with a
pooled linear head, trained for --epochs passes over labelled sentences.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ...checkpoints.kinds import ClassifyKind, ElectraKind, LMKind, MaskedLMKind, Word2VecKind
from ...data.labeled import TRUNCATIONS, LabeledRows, encode_sentences, load_labeled
from ...data.tokenizer import tokenizer_from_dict
from ...data.trained_tokenizer import FIRST_WORD_ID, UNK
from ...engine import rng
from ...engine.tensor import Tensor
from ...inference.scoring import score_classifier
from ...nn import functional as F
from ..distributed import LOCAL, World
from .base import Task
from .common import (
    EVAL_STREAM,
    GPT_OPTIONS,
    MAJORITY_MARGIN,
    epoch_draw,
    evaluating,
    fingerprint,
    gpt_config,
    new_tokenizer,
    require_learned_tokenizer,
    tokenizer_kind,
)

if TYPE_CHECKING:
    from ...checkpoints.folder import Checkpoint
    from ..config import TrainConfig


# Measured on MR (benchmarks/classify.py); DAN's value on SST (Iyyer et al., 2015).
WORD_DROPOUT = 0.3


class ClassifyTask(Task):
    """Sentence classification: each epoch visits every training row once, in an order of its
    own drawn from the run's seed; evaluation scores the whole val set."""

    kind = ClassifyKind
    name = ClassifyKind.name
    summary = "train or fine-tune a sentence classifier"
    # Measured on the Movie Review corpus (benchmarks/classify.py), against a bag-of-words
    # baseline.
    defaults = {"epochs": 3, "tokenizer": "word", "batch_size": 32, "context": 64,
                "n_layer": 2, "d_model": 128, "positional": "learned", "dropout": 0.1,
                "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 100, "beta2": 0.99,
                "weight_decay": 0.1, "log_every": 100, "attention": "bidirectional",
                "pooling": "mean", "truncation": "head", "layer_decay": 1.0, **GPT_OPTIONS}
    options = ("epochs", "word_dropout", "pooling", "val_every_nth", "truncation", "layer_decay",
               *GPT_OPTIONS)
    fixed = (*Task.fixed, "pooling")
    init_from = (LMKind.name, MaskedLMKind.name, ElectraKind.name, Word2VecKind.name)
    best_metric = "val_acc"
    higher_is_better = True
    head_share = 0.0  # the language model's output layer is not used

    @staticmethod
    def check(cfg: TrainConfig) -> None:
        if cfg.data is None:
            raise ValueError("--task classify needs --data: a TSV/CSV file of sentences "
                             "and labels, or one file of sentences per class")
        if cfg.val_data is None and cfg.val_every_nth is None:
            raise ValueError("--task classify needs --val-data FILE(S) or --val-every-nth N "
                             "(every Nth line of --data held out for validation)")
        if cfg.pooling == "cls" and cfg.attention != "bidirectional":
            raise ValueError("--pooling cls needs --attention bidirectional (a causal model "
                             "shows the first token nothing else)")
        if cfg.word_dropout:
            require_learned_tokenizer(cfg, "--word-dropout replaces words by [UNK]")
        if cfg.pooling == "cls":
            require_learned_tokenizer(cfg, "--pooling cls needs a [CLS] token")
        if cfg.truncation not in TRUNCATIONS:
            raise ValueError(f"--truncation must be one of {', '.join(TRUNCATIONS)}, got "
                             f"{cfg.truncation!r}")

    def __init__(self, cfg: TrainConfig, source_tokenizer: dict | None = None,
                 resumed_extras: dict[str, Any] | None = None):
        self.cfg = cfg
        num_classes = (resumed_extras or {}).get("num_classes")
        train = load_labeled(cfg.data, cfg.encoding)
        if cfg.val_data is not None:
            val = load_labeled(cfg.val_data, cfg.encoding)
        else:
            train, val = train.hold_out_every(cfg.val_every_nth)
        self.tokenizer = _classify_tokenizer(cfg, source_tokenizer, train.texts)
        self.tokenizer_dict = self.tokenizer.to_dict()
        self.vocab_size = self.tokenizer.vocab_size
        self.unk_id = getattr(self.tokenizer, "token_id", lambda _: None)(UNK)
        self.word_dropout = cfg.word_dropout
        if self.word_dropout is None:  # a vocabulary without [UNK] has no word to drop to
            self.word_dropout = WORD_DROPOUT if self.unk_id is not None else 0.0
        elif self.word_dropout and self.unk_id is None:
            raise ValueError(f"--word-dropout replaces words by [UNK], which this "
                             f"{tokenizer_kind(self.tokenizer_dict)} tokenizer lacks")
        self.train_ids, self.train_len, self.train_cut = encode_sentences(
            self.tokenizer, train.texts, cfg.context, cfg.pooling, train.names(), cfg.truncation)
        self.val_ids, self.val_len, self.val_cut = encode_sentences(
            self.tokenizer, val.texts, cfg.context, cfg.pooling, val.names(), cfg.truncation)
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
            (f"vocabulary {self.vocab_size:,} ({tokenizer_kind(self.tokenizer_dict)}); "
             f"sentences: mean {self.train_len.mean():.1f}, max {self.train_len.max()} tokens; "
             f"word dropout {self.word_dropout:g}"),
        ]
        if self.train_cut or self.val_cut:
            lines.append(
                f"note: {self.train_cut:,} train and {self.val_cut:,} val sentences are longer "
                f"than --context {cfg.context} tokens and were cut to it ({cfg.truncation})")
        lines.append(f"majority-class baseline: val accuracy {self.majority:.1%}")
        return lines

    def model_config(self, source: Checkpoint | None):
        return gpt_config(self.cfg, self.vocab_size, source)

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "pooling": self.cfg.pooling}

    def draw(self, rng: np.random.Generator, size: int, step: int) -> np.ndarray:
        """The ``size`` training rows of step ``step``, epoch after epoch in seeded orders."""
        return epoch_draw(self.cfg.seed, self.train_rows, size, step)

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
        return fingerprint(self.train_ids, self.train_labels, self.val_ids, self.val_labels)

    def loss(self, model, batch) -> Tensor:
        ids, lengths, labels = batch
        if self.word_dropout and model.training:
            ids = drop_words(ids, self.word_dropout, self.unk_id, rng.host())
        return F.cross_entropy(model(ids, lengths), labels)

    def _score(self, model, ids, lengths, labels, world: World) -> tuple[float, float]:
        total_loss, correct = score_classifier(model, ids, lengths, labels,
                                               self.cfg.batch_size, world.rank, world.size)
        return world.sum(total_loss) / len(labels), world.sum(correct) / len(labels)

    def evaluate(self, model, world: World = LOCAL) -> dict[str, float]:
        """Loss and accuracy on the whole val set and on a fixed sample of train rows (the
        ranks share the batches)."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, EVAL_STREAM])
        step_rows = cfg.batch_size * cfg.grad_accum_steps * world.size
        n = min(self.train_rows, cfg.eval_batches * step_rows)
        rows = np.sort(rng.permutation(self.train_rows)[:n])
        with evaluating(model):
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

    def finish(self, model, best: float | None) -> list[str]:
        """A warning when the classifier never beat predicting the most frequent class."""
        if best is None or best > self.majority + MAJORITY_MARGIN:
            return []
        return [f"warning: the best val accuracy, {best:.1%}, is no better than always "
                f"predicting the most frequent class ({self.majority:.1%}): the model has not "
                "learned the task; try a lower --lr, more --epochs or another --tokenizer"]


def drop_words(ids: np.ndarray, p: float, unk_id: int, generator: np.random.Generator
               ) -> np.ndarray:
    """Word dropout (Iyyer et al., 2015): each word becomes [UNK] with probability ``p``, so the
    classifier cannot lean on the few words it has memorised. Special tokens ([CLS], [PAD])
    stay. Drawn from the dropout stream, which checkpoints keep (exact resume)."""
    drop = (ids >= FIRST_WORD_ID) & (generator.random(ids.shape, dtype=np.float32) < p)
    return np.where(drop, unk_id, ids)


def _classify_tokenizer(cfg: TrainConfig, source_tokenizer: dict | None, texts: list[str]):
    """The checkpoint's tokenizer, or one learned from the training sentences."""
    if source_tokenizer is not None:
        if source_tokenizer.get("type") == "external":
            raise ValueError("the checkpoint was trained on token ids without a tokenizer; "
                             "it cannot encode sentences")
        return tokenizer_from_dict(source_tokenizer)
    return new_tokenizer(cfg, texts)
