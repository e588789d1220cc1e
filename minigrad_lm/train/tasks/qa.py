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

``--qa-input facts`` (the default for bAbI) reads each question with its story's facts as units
instead of token windows (data/qa.py): a row is then a question, ``--context`` counts units,
and the throughput's "tokens" are units, the positions the body reads.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ...checkpoints.kinds import LMKind, MaskedLMKind, QAKind, Word2VecKind
from ...data.qa import (
    FactFeatures,
    QAData,
    QAFeatures,
    QATokens,
    answer_vocabulary,
    encode_facts,
    encode_qa,
    fact_tokens_needed,
    read_qa,
)
from ...data.tokenizer import tokenizer_from_dict
from ...engine.tensor import Tensor
from ...inference.qa import predict_answers, predict_fact_answers
from ...inference.qa_metrics import qa_metrics
from ...models.qa import qa_loss
from ...nn import functional as F
from ..distributed import LOCAL, World
from .base import Task
from .common import (
    EPOCH_STREAM,
    EVAL_STREAM,
    evaluating,
    fingerprint,
    flag,
    gpt_config,
    new_tokenizer,
    require_learned_tokenizer,
)

if TYPE_CHECKING:
    from ...checkpoints.folder import Checkpoint
    from ..config import TrainConfig

__all__ = ["QATask", "read_qa_split"]

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


class QATask(Task):
    """Span and class answers on ``[CLS] question [SEP] context`` windows."""

    kind = QAKind
    name = QAKind.name
    summary = "question answering (SQuAD spans, bAbI answers) on a Transformer encoder"
    # Measured by benchmarks/qa.py on bAbI and SQuAD, on 2 CPU cores.
    defaults = {"epochs": 3, "tokenizer": "word", "batch_size": 32, "context": 256,
                "n_layer": 3, "d_model": 128, "dropout": 0.1,
                "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 100, "beta2": 0.99,
                "weight_decay": 0.1, "log_every": 100, "attention": "bidirectional",
                "max_answer_tokens": QAKind.MAX_ANSWER_TOKENS, "recompute": "none"}
    options = ("epochs", "val_every_nth", "stride", "max_answer_tokens", "recompute",
               "qa_input", "question_match")
    init_from = (LMKind.name, MaskedLMKind.name, Word2VecKind.name, QAKind.name)
    best_metric = "val_f1"
    higher_is_better = True
    head_share = 0.0  # the language model's output layer is not used

    @staticmethod
    def check(cfg: TrainConfig) -> None:
        if cfg.data is None:
            raise ValueError("--task qa needs --data: SQuAD JSON file(s) or bAbI task files")
        if cfg.val_data is None and cfg.val_every_nth is None:
            raise ValueError("--task qa needs --val-data FILE(S) or --val-every-nth N (every "
                             "Nth SQuAD article held out for validation)")
        require_learned_tokenizer(cfg, "--task qa reads answers off character offsets")
        if cfg.stride is not None and cfg.stride > cfg.context:
            raise ValueError(f"{flag('stride')} {cfg.stride} is longer than --context "
                             f"{cfg.context}: windows would skip text")

    def __init__(self, cfg: TrainConfig, source_tokenizer: dict | None = None,
                 resumed_extras: dict[str, Any] | None = None):
        self.cfg = cfg
        answers = (resumed_extras or {}).get("answers")
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
        index = {a: i for i, a in enumerate(self.answers)}
        self.train_examples, self.val_examples = train.examples, val.examples
        self.fact_tokens = (resumed_extras or {}).get("fact_tokens", 0)
        if resumed_extras is None and _reads_facts(cfg, train):
            self.fact_tokens = fact_tokens_needed(train.examples + val.examples, self.framing)
        reading = "facts" if self.fact_tokens else "tokens"
        if cfg.qa_input not in (None, reading):
            raise ValueError(f"--qa-input {cfg.qa_input}: the resumed run reads {reading}")
        if cfg.positional is None:
            # By measurement (benchmarks/qa.py): ALiBi's nearness finds SQuAD's answers beside
            # the question's words; bAbI's facts need each unit's recency sharp, which learned
            # positions give.
            cfg.positional = "learned" if self.fact_tokens else "alibi"
        self.question_match = _question_match(cfg, resumed_extras, bool(self.fact_tokens))

        def encode(examples: list, training: bool) -> QAFeatures | FactFeatures:
            if self.fact_tokens:
                return encode_facts(examples, self.framing, cfg.context, self.fact_tokens,
                                    index, training, self.question_match)
            return encode_qa(examples, self.framing, cfg.context, self.stride, index,
                             training)[0]

        self.train = encode(train.examples, True)
        self.untrained = len(train.examples) - len(np.unique(self.train.example))
        if not len(self.train):
            raise ValueError(f"{', '.join(train.files)}: no question has an answer the model "
                             "can be trained on")
        self.val, self.val_scored = encode(val.examples, False), encode(val.examples, True)
        self.train_rows = len(self.train)
        self.unseen = sum(e.kind == "class" and e.answers[0] not in index
                          for e in val.examples)

    def describe(self) -> list[str]:
        cfg = self.cfg
        val_from = (f"every {cfg.val_every_nth}th article held out" if cfg.val_data is None
                    else _files(self.sources[1]))
        lines = self._describe_facts(val_from) if self.fact_tokens else \
            self._describe_windows(val_from)
        lines += [f"note: {n}" for n in self.notes]
        if self.untrained:
            why = ("have no class answer" if self.fact_tokens else
                   "have no window holding their answer whole")
            lines.append(f"note: {self.untrained:,} training questions {why} and are not "
                         "trained on")
        if self.unseen:
            lines.append(f"note: {self.unseen:,} val questions have a class answer never seen "
                         "in training: they count as wrong")
        return lines

    def _describe_windows(self, val_from: str) -> list[str]:
        cfg = self.cfg
        spans = sum(e.kind == "span" for e in self.train_examples)
        return [
            (f"data: {_files(self.sources[0])}: {len(self.train_examples):,} questions "
             f"({spans:,} span, {len(self.train_examples) - spans:,} class answers) in "
             f"{self.train_rows:,} training windows; val ({val_from}): "
             f"{len(self.val_examples):,} questions in {len(self.val):,} windows"),
            (f"vocabulary {self.vocab_size:,}; {len(self.answers) - 1} class answers; windows of "
             f"--context {cfg.context} tokens, --stride {self.stride}; answers up to "
             f"{cfg.max_answer_tokens} tokens; mean window {self.train.lengths.mean():.1f} "
             "tokens"),
        ]

    def _describe_facts(self, val_from: str) -> list[str]:
        cfg = self.cfg
        lines = [
            (f"data: {_files(self.sources[0])}: {len(self.train_examples):,} questions; val "
             f"({val_from}): {len(self.val_examples):,} questions"),
            (f"vocabulary {self.vocab_size:,}; {len(self.answers) - 1} class answers; read as "
             f"facts (--qa-input facts): the question and its story's latest {cfg.context - 1} "
             f"facts, of up to {self.fact_tokens} tokens each; mean {self.train.lengths.mean():.1f}"
             " units a question (throughput counts units as tokens)"),
        ]
        cut = sum(len(e.statements()) >= cfg.context for e in self.train_examples)
        if cut:
            lines.append(f"note: {cut:,} training stories have more facts than --context "
                         f"{cfg.context} leaves room for: their oldest facts are not read")
        return lines

    def model_config(self, source: Checkpoint | None):
        return gpt_config(self.cfg, self.vocab_size, source)

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"answers": self.answers, "fact_tokens": self.fact_tokens,
                "question_match": self.question_match}

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
        if self.fact_tokens:
            return fingerprint(self.train.ids, self.train.answer, self.val.ids)
        return fingerprint(self.train.ids, self.train.start, self.train.answer, self.val.ids)

    def loss(self, model, batch: QAFeatures | FactFeatures) -> Tensor:
        if self.fact_tokens:
            return F.cross_entropy(model.read_facts(batch.ids, batch.counts, batch.matches),
                                   batch.answer)
        start, end, answer = model(batch.ids, batch.lengths, batch.context_mask(),
                                   matches=batch.matches)
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
        if self.fact_tokens:
            predictions = predict_fact_answers(model, self.val, self.answers, cfg.batch_size)
        else:
            predictions = predict_answers(model, self.val, [e.context for e in self.val_examples],
                                          self.answers, cfg.batch_size, cfg.max_answer_tokens)
        scores = qa_metrics(self.val_examples, [p.text for p in predictions])
        metrics = {"train_loss": train_loss, "val_loss": val_loss,
                   "val_em": scores["exact_match"], "val_f1": scores["f1"]}
        if "babi" in scores:
            metrics["val_babi_mean_error"] = scores["babi"]["mean_error"]
            metrics["val_babi_failed"] = scores["babi"]["failed_tasks"]
        return metrics

    def eval_line(self, step: int, m: dict[str, Any]) -> str:
        line = (f"step {step}: train {m['train_loss']:.4f} | val {m['val_loss']:.4f} | "
                f"val EM {m['val_em']:.1f} F1 {m['val_f1']:.1f}")
        if "val_babi_mean_error" in m:
            line += (f" | bAbI mean error {m['val_babi_mean_error']:.1%}, "
                     f"{m['val_babi_failed']} failed")
        return line


def _reads_facts(cfg: TrainConfig, train: QAData) -> bool:
    """--qa-input, or by default facts when every training answer is a class answer."""
    if cfg.qa_input is not None:
        return cfg.qa_input == "facts"
    return all(e.kind == "class" for e in train.examples)


def _question_match(cfg: TrainConfig, resumed_extras: dict[str, Any] | None,
                    facts: bool) -> bool:
    """--question-match, the resumed run's choice, or by default yes for token windows and no
    for facts (measured on bAbI: no lower mean error, and chained facts collapse; README)."""
    chosen = cfg.question_match
    if resumed_extras is not None:
        resumed = resumed_extras.get("question_match", False)
        if chosen is not None and chosen != resumed:
            raise ValueError(f"--{'' if chosen else 'no-'}question-match: the resumed run was "
                             f"trained {'with' if resumed else 'without'} it")
        return resumed
    return not facts if chosen is None else chosen


def _files(paths: list[str]) -> str:
    """The files, or for many (20 bAbI tasks) how many and the first and last."""
    if len(paths) <= 3:
        return ", ".join(paths)
    return f"{len(paths)} files ({paths[0]} ... {paths[-1]})"

