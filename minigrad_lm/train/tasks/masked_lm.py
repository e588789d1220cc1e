"""Masked language modelling (BERT's objective): the pretraining of a bidirectional encoder.

``--task lm --attention bidirectional`` trains it. A bidirectional model cannot learn next-token
prediction (each token sees its successor), so it learns to fill in hidden tokens instead: in
each window, every real token is picked with probability ``--mask-prob`` (BERT's 15%), and a
picked token is replaced by ``[MASK]`` 80% of the time, by a random token 10%, and kept 10%
(so the model cannot tell which real tokens are scored). The loss is the cross-entropy of the
picked tokens alone, and only their hidden states go through the vocabulary projection. The
encoder then starts a classifier with ``--init-from``, the same attention it was trained with.
"""
from __future__ import annotations

import math

import numpy as np

from ... import backend
from ...data.trained_tokenizer import FIRST_WORD_ID
from ...engine.tensor import Tensor
from ...nn import functional as F
from ..config import TrainConfig
from ..distributed import LOCAL, World
from .common import EVAL_STREAM, evaluating
from .lm import LMTask

IGNORE = -100  # the target of a token that is not scored
MASK_SHARE, RANDOM_SHARE = 0.8, 0.1  # of the picked tokens; the rest are kept as they are


def mask_draws(rng: np.random.Generator, size: int, context: int, vocab_size: int
               ) -> dict[str, np.ndarray]:
    """The random numbers that mask ``size`` windows: a pick and an action uniform per token,
    and the random token each would become. Drawn apart from the tokens, so a step's draws
    come from the batch stream alone (exact resume)."""
    return {"pick": rng.random((size, context), dtype=np.float32),
            "action": rng.random((size, context), dtype=np.float32),
            "random_id": rng.integers(FIRST_WORD_ID, vocab_size, size=(size, context))}


def mask_tokens(ids: np.ndarray, draws: dict[str, np.ndarray], mask_id: int, prob: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of windows ``ids`` (B, T): the picked tokens hidden as BERT hides
    them, and their ids as targets (:data:`IGNORE` elsewhere). Special tokens are never
    picked nor drawn as random tokens. At least one token of the batch is picked when any is
    a word, so the loss is always defined."""
    real = ids >= FIRST_WORD_ID
    picked = real & (draws["pick"] < prob)
    if not picked.any() and real.any():
        picked.flat[np.flatnonzero(real)[0]] = True
    action = draws["action"]
    inputs = np.where(picked & (action < MASK_SHARE), mask_id, ids)
    swap = picked & (action >= MASK_SHARE) & (action < MASK_SHARE + RANDOM_SHARE)
    inputs = np.where(swap, draws["random_id"], inputs)
    return inputs, np.where(picked, ids, IGNORE)


def masked_logits(model, inputs: np.ndarray, targets: np.ndarray) -> tuple[Tensor, np.ndarray]:
    """The vocabulary logits (N, V) of the N scored tokens and their targets (N,): the hidden
    states of the others never reach the (large) output projection."""
    scored = targets != IGNORE
    h = model.body(inputs)
    return model.head(h[scored]), targets[scored]


class MaskedLMTask(LMTask):
    """Masked language modelling on random windows of the corpus, as :class:`LMTask` draws
    them; scored by the loss, perplexity and accuracy on the hidden tokens."""

    def __init__(self, cfg: TrainConfig, source_tokenizer: dict | None):
        super().__init__(cfg, source_tokenizer)
        self.name = cfg.task  # "mlm", or "lm" with --attention bidirectional
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
        cfg = self.cfg
        per_rank = cfg.batch_size * cfg.grad_accum_steps
        loss_sum, correct, scored = 0.0, 0, 0
        for _ in range(cfg.eval_batches):
            # Drawn for every rank's rows, so the scored windows never depend on the ranks.
            picks = self._picks(ids, rng, per_rank * world.size)
            mine = picks[world.rank * per_rank:(world.rank + 1) * per_rank]
            for lo in range(0, per_rank, cfg.batch_size):
                batch = self._masked(ids, mine[lo:lo + cfg.batch_size])
                part_loss, part_right, part_n = score_masked(model, *batch)
                loss_sum, correct, scored = (loss_sum + part_loss, correct + part_right,
                                             scored + part_n)
        scored = world.sum(scored)
        return world.sum(loss_sum) / scored, world.sum(correct) / scored

    def evaluate(self, model, world: World = LOCAL) -> dict[str, float]:
        """Loss on the hidden tokens of ``eval_batches`` fixed train and val batches; val
        perplexity and accuracy on them."""
        rng = np.random.default_rng([self.cfg.seed, EVAL_STREAM])
        with evaluating(model):
            train_loss, _ = self._score(model, self.train, rng, world)
            val_loss, val_acc = self._score(model, self.val, rng, world)
        return {"train_loss": train_loss, "val_loss": val_loss,
                "val_ppl": math.exp(min(val_loss, 700.0)), "val_acc": val_acc}

    def eval_line(self, step: int, m: dict[str, float]) -> str:
        return (f"step {step}: masked tokens: train {m['train_loss']:.4f} | val "
                f"{m['val_loss']:.4f} (ppl {m['val_ppl']:.2f}, acc {m['val_acc']:.1%}) | "
                f"unigram {self.unigram:.4f}")

    def finish(self, model, best: float | None) -> list[str]:
        return []  # a bidirectional model does not write text left to right


def score_masked(model, inputs: np.ndarray, targets: np.ndarray) -> tuple[float, int, int]:
    """(summed cross-entropy, number right, number scored) over the hidden tokens of a batch."""
    logits, wanted = masked_logits(model, inputs, targets)
    loss = F.cross_entropy(logits, wanted, reduction="sum").item()
    right = int((backend.to_numpy(logits.data.argmax(axis=-1)) == wanted).sum())
    return loss, right, len(wanted)


def score_masked_lm(model, ids: np.ndarray, context: int, batch_size: int, tokenizer,
                    prob: float = 0.15, seed: int = 0) -> tuple[float, int, int]:
    """(summed cross-entropy, number right, tokens scored) of a masked language model over
    ``ids`` cut into consecutive windows of ``context``, masked by draws of ``seed`` (the
    same tokens are hidden every time the file is scored)."""
    n = len(ids) // context
    if n == 0:
        raise ValueError(f"{len(ids)} tokens: need at least the model's context of {context}")
    windows = np.asarray(ids)[: n * context].reshape(n, context).astype(np.int64)
    rng = np.random.default_rng(seed)
    mask_id, vocab = tokenizer.mask_id, tokenizer.vocab_size
    if mask_id is None:
        raise ValueError("the checkpoint's tokenizer has no [MASK] token")
    total_loss, correct, scored = 0.0, 0, 0
    for lo in range(0, n, batch_size):
        x = windows[lo:lo + batch_size]
        draws = mask_draws(rng, len(x), context, vocab)
        part_loss, part_right, part_n = score_masked(model, *mask_tokens(x, draws, mask_id, prob))
        total_loss, correct, scored = total_loss + part_loss, correct + part_right, scored + part_n
    return total_loss, correct, scored
