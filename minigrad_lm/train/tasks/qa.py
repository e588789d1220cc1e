"""Question answering (``--task qa``): SQuAD v1.1 JSON or bAbI stories (see data/qa.py) on a
Transformer body with a span head and an answer head (models/qa.py).

``--data`` takes SQuAD files or bAbI task files (several bAbI tasks train one joint model);
validation is ``--val-data`` or, for SQuAD, every ``--val-every-nth`` article held out whole.
``--init-from`` starts the body from a pretrained checkpoint (a masked language model's
bidirectional encoder, or a GPT-2 folder), whose tokenizer the task then uses. Each epoch
visits every training window once, in an order drawn from the seed and the epoch, so a batch
is a function of the step alone (exact resume). Evaluation answers every validation question
(the best span over its windows, or a class answer) and scores EM/F1, plus, for bAbI, the
accuracy per task, the mean error and the failed tasks.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ...data.qa import (
    QAData,
    QAExample,
    QAFeatures,
    QATokens,
    answer_vocabulary,
    encode_qa,
    read_qa,
)
from ...data.tokenizer import tokenizer_from_dict
from ...engine.tensor import Tensor
from ...inference.qa import predict_answers
from ...inference.qa_metrics import babi_scores, squad_scores
from ...models.qa import qa_loss
from ..config import TrainConfig
from ..distributed import LOCAL, World
from .common import EPOCH_STREAM, EVAL_STREAM, evaluating, fingerprint, new_tokenizer

__all__ = ["QATask", "qa_metrics", "read_qa_split"]

BUCKET_BATCHES = 16  # batches of windows sorted by length together (see QATask._epoch_order)


def read_qa_split(cfg: TrainConfig) -> tuple[QAData, QAData]:
    """(training, validation) questions: --val-data, or SQuAD articles held out whole."""
    train = read_qa(cfg.data)
    if cfg.val_data is not None:
        return train, read_qa(cfg.val_data)
    if any(e.kind == "class" for e in train.examples):
        raise ValueError("bAbI data needs --val-data (e.g. the tasks' _valid.txt files): "
                         "--val-every-nth holds out whole SQuAD articles")
    return train.split_groups(cfg.val_every_nth)


def qa_metrics(examples: list[QAExample], predictions: list[str]) -> dict[str, Any]:
    """EM and F1 (percent) over all the questions; with bAbI questions, their accuracy per
    task, mean error and failed tasks too."""
    by_id = {e.qid: p for e, p in zip(examples, predictions)}
    metrics: dict[str, Any] = squad_scores(by_id, {e.qid: e.answers for e in examples})
    babi = [e for e in examples if e.kind == "class"]
    if babi:
        metrics["babi"] = babi_scores(by_id, {e.qid: e.answers[0] for e in babi},
                                      {e.qid: e.group for e in babi})
    return metrics


class QATask:
    """Span and class answers on ``[CLS] question [SEP] context`` windows."""

    name = "qa"
    best_metric = "val_f1"
    head_share = 0.0  # the language model's output layer is not used

    def __init__(self, cfg: TrainConfig, source_tokenizer: dict | None,
                 answers: list[str] | None = None):
        self.cfg = cfg
        train, val = read_qa_split(cfg)
        self.sources, self.notes = (train.files, val.files), train.notes + val.notes
        if source_tokenizer is not None:
            tokenizer = tokenizer_from_dict(source_tokenizer)
        else:
            tokenizer = new_tokenizer(cfg, [t for e in train.examples
                                            for t in (e.question, e.context)])
        self.framing = QATokens.of(tokenizer)
        self.tokenizer, self.tokenizer_dict = tokenizer, tokenizer.to_dict()
        self.vocab_size = tokenizer.vocab_size
        self.stride = cfg.stride or max(1, cfg.context // 2)
        self.answers = answers or answer_vocabulary(train.examples)
        self.num_classes = len(self.answers)
        index = {a: i for i, a in enumerate(self.answers)}
        self.train_examples, self.val_examples = train.examples, val.examples
        self.train, self.untrained = encode_qa(train.examples, self.framing, cfg.context,
                                               self.stride, index, training=True)
        if not len(self.train):
            raise ValueError(f"{', '.join(train.files)}: no question has an answer the model "
                             "can be trained on")
        self.val, _ = encode_qa(val.examples, self.framing, cfg.context, self.stride, index,
                                training=False)
        self.val_scored, _ = encode_qa(val.examples, self.framing, cfg.context, self.stride,
                                       index, training=True)
        self.train_rows = len(self.train)
        self.unseen = sum(e.kind == "class" and e.answers[0] not in index
                          for e in val.examples)

    def describe(self) -> list[str]:
        cfg = self.cfg
        val_from = (f"every {cfg.val_every_nth}th article held out" if cfg.val_data is None
                    else _files(self.sources[1]))
        spans = sum(e.kind == "span" for e in self.train_examples)
        lines = [
            (f"data: {_files(self.sources[0])}: {len(self.train_examples):,} questions "
             f"({spans:,} span, {len(self.train_examples) - spans:,} class answers) in "
             f"{self.train_rows:,} training windows; val ({val_from}): "
             f"{len(self.val_examples):,} questions in {len(self.val):,} windows"),
            (f"vocabulary {self.vocab_size:,}; {self.num_classes - 1} class answers; windows of "
             f"--context {cfg.context} tokens, --stride {self.stride}; answers up to "
             f"{cfg.max_answer_tokens} tokens; mean window {self.train.lengths.mean():.1f} "
             "tokens"),
        ]
        lines += [f"note: {n}" for n in self.notes]
        if self.untrained:
            lines.append(f"note: {self.untrained:,} training questions have no window holding "
                         "their answer whole and are not trained on")
        if self.unseen:
            lines.append(f"note: {self.unseen:,} val questions have a class answer never seen "
                         "in training: they count as wrong")
        return lines

    def _epoch_order(self, epoch: int, size: int) -> np.ndarray:
        """Every training window once, shuffled by the seed and the epoch, then grouped by
        length: each run of BUCKET_BATCHES batches is sorted by length and cut into batches,
        whose order is shuffled again. A batch then pads little (bAbI's stories run from 20
        to hundreds of tokens) and still mixes questions from the whole set."""
        g = np.random.default_rng([self.cfg.seed, EPOCH_STREAM, epoch])
        order = g.permutation(self.train_rows)
        chunk = size * BUCKET_BATCHES
        batches = []
        for lo in range(0, len(order), chunk):
            part = order[lo:lo + chunk]
            part = part[np.argsort(self.train.lengths[part], kind="stable")]
            batches += [part[i:i + size] for i in range(0, len(part), size)]
        return np.concatenate([batches[i] for i in g.permutation(len(batches))])

    def draw(self, rng: np.random.Generator, size: int, step: int) -> np.ndarray:
        """The ``size`` training windows of step ``step``: the next ones in the concatenation
        of the epochs' orders (a function of the step alone: exact resume)."""
        start = step * size
        first, last = start // self.train_rows, (start + size - 1) // self.train_rows
        order = np.concatenate([self._epoch_order(e, size) for e in range(first, last + 1)])
        offset = start - first * self.train_rows
        return order[offset:offset + size]

    def batch_at(self, rows: np.ndarray) -> QAFeatures:
        """The windows, cut to the longest of them."""
        return self.train.take(rows, int(self.train.lengths[rows].max()))

    @staticmethod
    def tokens(batch: QAFeatures) -> int:
        return int(batch.lengths.sum())

    def fingerprint(self) -> str:
        return fingerprint(self.train.ids, self.train.start, self.train.answer, self.val.ids)

    def loss(self, model, batch: QAFeatures) -> Tensor:
        start, end, answer = model(batch.ids, batch.lengths, batch.context_mask())
        return qa_loss(start, end, answer, batch.start, batch.end, batch.answer)

    def _mean_loss(self, model, feats: QAFeatures, rows: np.ndarray) -> float:
        total = 0.0
        rows = rows[np.argsort(feats.lengths[rows], kind="stable")]  # batches pad little
        for lo in range(0, len(rows), self.cfg.batch_size):
            part = rows[lo:lo + self.cfg.batch_size]
            total += self.loss(model, feats.take(part, int(feats.lengths[part].max()))).item() \
                * len(part)
        return total / max(1, len(rows))

    def evaluate(self, model, world: World = LOCAL) -> dict[str, Any]:
        """Loss on a fixed sample of training windows and on the val windows holding an
        answer; EM/F1 (and bAbI's scores) of the answers to every val question. Every rank
        computes the same figures."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, EVAL_STREAM])
        n = min(self.train_rows, cfg.eval_batches * cfg.batch_size)
        with evaluating(model):
            train_loss = self._mean_loss(model, self.train, np.sort(rng.permutation(
                self.train_rows)[:n]))
            val_loss = self._mean_loss(model, self.val_scored, np.arange(len(self.val_scored)))
        predictions = predict_answers(model, self.val, [e.context for e in self.val_examples],
                                      self.answers, cfg.batch_size, cfg.max_answer_tokens)
        scores = qa_metrics(self.val_examples, [p.text for p in predictions])
        metrics = {"train_loss": train_loss, "val_loss": val_loss,
                   "val_em": scores["exact_match"], "val_f1": scores["f1"]}
        if "babi" in scores:
            metrics["val_babi_mean_error"] = scores["babi"]["mean_error"]
            metrics["val_babi_failed"] = scores["babi"]["failed_tasks"]
        return metrics

    @staticmethod
    def improves(metrics: dict[str, float], best: float | None) -> bool:
        return best is None or metrics["val_f1"] > best

    def eval_line(self, step: int, m: dict[str, Any]) -> str:
        line = (f"step {step}: train {m['train_loss']:.4f} | val {m['val_loss']:.4f} | "
                f"val EM {m['val_em']:.1f} F1 {m['val_f1']:.1f}")
        if "val_babi_mean_error" in m:
            line += (f" | bAbI mean error {m['val_babi_mean_error']:.1%}, "
                     f"{m['val_babi_failed']} failed")
        return line

    def finish(self, model, best: float | None) -> list[str]:
        return []


def _files(paths: list[str]) -> str:
    """The files, or for many (20 bAbI tasks) how many and the first and last."""
    return ", ".join(paths) if len(paths) <= 3 else f"{len(paths)} files ({paths[0]} ... {paths[-1]})"


def answer_examples(model, tokenizer, answers: list[str], examples: list[QAExample],
                    stride: int, max_answer_tokens: int, batch_size: int = 32) -> list:
    """The model's best answer (inference.qa.Answer: text, probability, span) to each
    example, read from its windows as in evaluation."""
    context = model.body.config.context_length
    index = {a: i for i, a in enumerate(answers)}
    features, _ = encode_qa(examples, QATokens.of(tokenizer), context, stride, index,
                            training=False)
    return predict_answers(model, features, [e.context for e in examples], answers, batch_size,
                           max_answer_tokens)
