"""Masked language modelling (BERT's objective): the pretraining of a bidirectional encoder.

``--task mlm`` trains it (``--task lm --attention bidirectional`` is its older spelling). A
bidirectional model cannot learn next-token prediction (each token sees its successor), so it
learns to fill in hidden tokens instead: in
each window, every real token is picked with probability ``--mask-prob`` (BERT's 15%), and a
picked token is replaced by ``[MASK]`` 80% of the time, by a random token 10%, and kept 10%
(so the model cannot tell which real tokens are scored). The loss is the cross-entropy of the
picked tokens alone, and only their hidden states go through the vocabulary projection. The
encoder then starts a classifier with ``--init-from``, the same attention it was trained with.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ...checkpoints.kinds import MaskedLMKind
from ...data.masking import mask_draws, mask_tokens
from ...engine.tensor import Tensor
from ...inference.scoring import masked_logits, perplexity, score_masked
from ...nn import functional as F
from ..distributed import LOCAL, World
from .common import EVAL_STREAM, evaluating, require_learned_tokenizer
from .lm import LMTask

if TYPE_CHECKING:
    from ..config import TrainConfig

# LMTask's options of the text it writes: a bidirectional model writes none.
NO_SAMPLE = ("sample_tokens",)
# Windows an evaluation batch masks at once: a fixed number (the default --batch-size), so
# the hidden tokens, and the val loss, never depend on --batch-size or the ranks.
EVAL_WINDOWS = 32


class MaskedLMTask(LMTask):
    """Masked language modelling on random windows of the corpus, as :class:`LMTask` draws
    them; scored by the loss, perplexity and accuracy on the hidden tokens."""

    kind = MaskedLMKind
    name = MaskedLMKind.name
    summary = ("masked language modelling, BERT's pretraining of a bidirectional encoder "
               "(also --task lm --attention bidirectional)")
    options = (*(name for name in LMTask.options if name not in NO_SAMPLE), "mask_prob")
    defaults = {**{k: v for k, v in LMTask.defaults.items() if k not in NO_SAMPLE},
                "tokenizer": "word", "attention": "bidirectional", "mask_prob": 0.15}
    fixed = (*LMTask.fixed, "mask_prob")
    alias = {"task": LMTask.name, "attention": "bidirectional"}

    @staticmethod
    def check(cfg: TrainConfig) -> None:
        LMTask.check_data(cfg)
        if cfg.attention != "bidirectional":
            raise ValueError("--task mlm fills in hidden tokens from both sides: its attention "
                             "is bidirectional")
        require_learned_tokenizer(cfg, "--attention bidirectional trains a masked language "
                                  "model, which needs a [MASK] token")

    def __init__(self, cfg: TrainConfig, source_tokenizer: dict | None = None,
                 resumed_extras: dict[str, Any] | None = None):
        super().__init__(cfg, source_tokenizer)
        self.head_share = cfg.mask_prob  # only the hidden tokens reach the output layer
        self.mask_id = getattr(self.tokenizer, "mask_id", None)
        if self.mask_id is None:
            raise ValueError(
                "--attention bidirectional trains a masked language model, which needs a "
                "[MASK] token: use --tokenizer word or bpe"
                + (" (the checkpoint's tokenizer has none)" if source_tokenizer else ""))

    def _picks(self, ids: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` windows of ``ids``: where each starts and its masking draws, one record
        a window (so a step's rows can be split between micro-batches and ranks)."""
        context = self.cfg.context
        starts = rng.integers(0, len(ids) - context, size=size)
        draws = self._draws(rng, size)
        picks = np.empty(size, dtype=[("start", np.int64), *(
            (name, a.dtype, (context,)) for name, a in draws.items())])
        picks["start"] = starts
        for name, a in draws.items():
            picks[name] = a
        return picks

    def _draws(self, rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
        """The random numbers of ``size`` windows besides where they start."""
        return mask_draws(rng, size, self.cfg.context, self.vocab_size)

    def _masked(self, ids: np.ndarray, picks: np.ndarray) -> tuple[np.ndarray, ...]:
        """The windows' masked inputs and their targets."""
        x = np.asarray(ids)[picks["start"][:, None] + np.arange(self.cfg.context)]
        return mask_tokens(x.astype(np.int64), picks, self.mask_id, self.cfg.mask_prob)

    def draw(self, rng: np.random.Generator, size: int, step: int) -> np.ndarray:
        return self._picks(self.train, rng, size)

    def batch_at(self, picks: np.ndarray) -> tuple[np.ndarray, ...]:
        return self._masked(self.train, picks)

    def loss(self, model, batch) -> Tensor:
        logits, targets = masked_logits(model, *batch)
        return F.cross_entropy(logits, targets)

    def _score(self, model, ids, rng, world: World) -> tuple[float, float]:
        """(loss, accuracy) on the hidden tokens of ``eval_batches`` chunks of
        :data:`EVAL_WINDOWS` windows: the windows and their masks are drawn a chunk at a time,
        so the same tokens are hidden whatever the batch size and the ranks; each rank scores
        its share of a chunk's rows in micro-batches of ``--batch-size``."""
        cfg = self.cfg
        loss_sum, correct, scored = 0.0, 0, 0
        for _ in range(cfg.eval_batches):
            inputs, targets = self._masked(ids, self._picks(ids, rng, EVAL_WINDOWS))
            share = np.array_split(np.arange(EVAL_WINDOWS), world.size)[world.rank]
            for lo in range(0, len(share), cfg.batch_size):
                rows = share[lo:lo + cfg.batch_size]
                if (targets[rows] == F.IGNORE_INDEX).all():
                    continue  # nothing hidden in these windows
                part_loss, part_right, part_n = score_masked(model, inputs[rows], targets[rows])
                loss_sum, correct, scored = (loss_sum + part_loss, correct + part_right,
                                             scored + part_n)
        scored = world.sum(scored)
        return world.sum(loss_sum) / scored, world.sum(correct) / scored

    def evaluate(self, model, world: World = LOCAL) -> dict[str, float]:
        """Loss on the hidden tokens of ``eval_batches`` fixed chunks of train and of val
        windows; val perplexity and accuracy on them."""
        rng = np.random.default_rng([self.cfg.seed, EVAL_STREAM])
        with evaluating(model):
            train_loss, _ = self._score(model, self.train, rng, world)
            val_loss, val_acc = self._score(model, self.val, rng, world)
        return {"train_loss": train_loss, "val_loss": val_loss,
                "val_ppl": perplexity(val_loss), "val_acc": val_acc}

    def eval_line(self, step: int, m: dict[str, float]) -> str:
        return (f"step {step}: masked tokens: train {m['train_loss']:.4f} | val "
                f"{m['val_loss']:.4f} (ppl {m['val_ppl']:.2f}, acc {m['val_acc']:.1%}) | "
                f"unigram {self.unigram:.4f}")

    def finish(self, model, best: float | None) -> list[str]:
        return []  # a bidirectional model does not write text left to right
