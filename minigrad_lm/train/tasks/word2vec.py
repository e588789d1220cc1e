"""word2vec's continuous bag of words: the pretraining of an encoder's token embeddings.

The corpus is read as :class:`LMTask` reads it (text files tokenized once into a token cache,
or a token folder); each step draws ``--batch-size`` words of it with their neighbours and
noise words (:mod:`minigrad_lm.data.word2vec`), and :func:`~minigrad_lm.models.word2vec.cbow_loss`
teaches the token embeddings. ``--init-from`` a run of it starts a classifier, a masked or
causal LM, or a QA model from the encoder, its layers as initialised; ``--epochs`` counts
passes over the words the subsampling keeps.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ...checkpoints.kinds import Word2VecKind
from ...data.trained_tokenizer import FIRST_WORD_ID
from ...data.word2vec import CONTEXT, NEGATIVES, SPAN, CBOWSampler
from ...engine.tensor import Tensor
from ...inference.scoring import score_cbow
from ...models.word2vec import cbow_loss
from ..distributed import LOCAL, World
from .common import EVAL_STREAM, GPT_OPTIONS, evaluating, require_learned_tokenizer
from .lm import LMTask

if TYPE_CHECKING:
    from ..config import TrainConfig

# LMTask's defaults that a word2vec run does without: it writes no text, and --epochs sizes
# it (evaluating twice a pass).
NOT_READ = ("sample_tokens", "max_steps", "decay_steps", "eval_every")


class Word2VecTask(LMTask):
    """Continuous bag of words with negative sampling on words drawn from the corpus; scored
    by the objective and by how often the true word outscores its noise words."""

    kind = Word2VecKind
    name = Word2VecKind.name
    summary = ("word2vec's continuous bag of words: pretrains an encoder's token embeddings "
               "(a word from the mean of its neighbours, against noise words)")
    # One pass over the IMDB reviews' kept words (6M) in 4.5 minutes: in-domain word vectors
    # whose nearest neighbours are synonyms; three passes gave MR no more (README).
    defaults = {**{k: v for k, v in LMTask.defaults.items() if k not in NOT_READ},
                "epochs": 1, "tokenizer": "word", "attention": "bidirectional",
                "batch_size": 4096, "context": 256, "n_layer": 2, "d_model": 128,
                "lr": 1e-2, "min_lr": 1e-4, "warmup_steps": 0, "beta2": 0.999,
                "weight_decay": 0.0, "log_every": 100, **GPT_OPTIONS}
    options = (*(name for name in LMTask.options if name != "sample_tokens"), "epochs")
    alias = {}
    init_from = ()
    head_share = 0.0

    @staticmethod
    def check(cfg: TrainConfig) -> None:
        LMTask.check_data(cfg)
        require_learned_tokenizer(cfg, "--task word2vec learns a vector for each word")

    def __init__(self, cfg: TrainConfig, source_tokenizer: dict | None = None,
                 resumed_extras: dict[str, Any] | None = None):
        super().__init__(cfg, source_tokenizer)
        line_end = getattr(self.tokenizer, "sep_id", None)
        self.sampler = CBOWSampler.of(self.train, self.vocab_size, list(range(FIRST_WORD_ID)),
                                      line_end)
        self.train_rows = self.sampler.expected_centres(self.train)

    def describe(self) -> list[str]:
        lines = super().describe()[:-1]
        return [*lines, (f"continuous bag of words: {self.train_rows:,} words a pass after "
                         f"subsampling, up to {CONTEXT} neighbours (within {SPAN} tokens a "
                         f"side), {NEGATIVES} noise words each")]

    def flops_per_token(self, model_config) -> float:
        """Forward and backward of one word: the neighbours' mean and its dot products with
        the candidates' vectors (the encoder's layers do not run)."""
        return 6 * model_config.d_model * (CONTEXT + 1 + NEGATIVES)

    def batch_rows(self) -> int:
        """The memory estimate's windows: a batch's embedded words, in windows of context."""
        words = self.cfg.batch_size * (CONTEXT + 1 + NEGATIVES)
        return max(1, -(-words // self.cfg.context))

    def draw(self, rng: np.random.Generator, size: int, step: int) -> np.ndarray:
        return self.sampler.draw(rng, self.train, size)

    def batch_at(self, picks: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.sampler.batch(self.train, picks)

    @staticmethod
    def tokens(batch) -> int:
        return len(batch[0])

    def loss(self, model, batch) -> Tensor:
        return cbow_loss(model, *batch)

    def evaluate(self, model, world: World = LOCAL) -> dict[str, float]:
        """The objective on ``eval_batches`` batches of train and of val words, drawn the same
        every time; on val also how often the true word scores above all its noise words."""
        rng = np.random.default_rng([self.cfg.seed, EVAL_STREAM])
        n = self.cfg.eval_batches * self.cfg.batch_size
        with evaluating(model):
            train_loss, _ = score_cbow(model, self.sampler, self.train, n, self.cfg.batch_size,
                                       rng, world)
            val_loss, val_acc = score_cbow(model, self.sampler, self.val, n,
                                           self.cfg.batch_size, rng, world)
        return {"train_loss": train_loss, "val_loss": val_loss, "val_acc": val_acc}

    def eval_line(self, step: int, m: dict[str, float]) -> str:
        return (f"step {step}: continuous bag of words: train {m['train_loss']:.4f} | val "
                f"{m['val_loss']:.4f} (true word first among {NEGATIVES + 1}: "
                f"{m['val_acc']:.1%})")

    def finish(self, model, best: float | None) -> list[str]:
        return []
