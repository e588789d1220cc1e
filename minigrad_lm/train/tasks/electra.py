"""Replaced-token detection (ELECTRA): the pretraining of a bidirectional encoder that learns
from every token of a window, where a masked LM learns from the 15% it hides.

The windows and their masking are the masked LM's (:class:`MaskedLMTask`); each window also
draws one uniform number a token, with which the generator samples its replacements, so a
step's batch is a function of the batch stream alone (exact resume). The model is
:class:`~minigrad_lm.models.electra.ElectraPretrainer`; ``--init-from`` a run of it starts a
classifier from its encoder.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from ...checkpoints.kinds import ElectraKind
from ...engine.tensor import Tensor
from ...inference.scoring import perplexity
from ...models.electra import DISCRIMINATOR_WEIGHT, ElectraConfig, electra_loss, electra_losses
from ..distributed import LOCAL, World
from .common import EVAL_STREAM, evaluating, gpt_config
from .masked_lm import MaskedLMTask

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint


class ElectraTask(MaskedLMTask):
    """Generator loss + 50 x replaced-token loss on random windows of the corpus; scored by
    both, the generator's accuracy on the hidden tokens and the encoder's on every token."""

    kind = ElectraKind
    name = ElectraKind.name
    summary = ("replaced-token detection, ELECTRA's pretraining of a bidirectional encoder: a "
               "small generator fills the hidden tokens, the encoder tells which were replaced")
    defaults = {**MaskedLMTask.defaults, "generator_layers": 1}
    alias = {}
    options = (*MaskedLMTask.options, "generator_layers")
    init_from = ()

    def model_config(self, source: Checkpoint | None):
        """The encoder's shape and the generator's depth (a resumed run's own)."""
        cfg = self.cfg
        if source is not None:
            return dataclasses.replace(source.model_config, dropout=cfg.dropout,
                                       recompute=cfg.recompute)
        encoder = gpt_config(cfg, self.vocab_size, None)
        return ElectraConfig(**encoder.to_dict(), generator_layers=cfg.generator_layers)

    def _draws(self, rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
        draws = super()._draws(rng, size)
        draws["sample"] = rng.random((size, self.cfg.context), dtype=np.float32)
        return draws

    def _masked(self, ids: np.ndarray, picks: np.ndarray) -> tuple[np.ndarray, ...]:
        """Masked inputs, targets and the uniform numbers of the generator's samples."""
        return (*super()._masked(ids, picks), picks["sample"])

    def loss(self, model, batch) -> Tensor:
        return electra_loss(model, *batch)

    def _score(self, model, ids, rng, world: World) -> dict[str, float]:
        cfg = self.cfg
        per_rank = cfg.batch_size * cfg.grad_accum_steps
        sums = {"gen": 0.0, "rtd": 0.0, "rtd_right": 0, "tokens": 0, "batches": 0}
        for _ in range(cfg.eval_batches):
            picks = self._picks(ids, rng, per_rank * world.size)
            mine = picks[world.rank * per_rank:(world.rank + 1) * per_rank]
            for lo in range(0, per_rank, cfg.batch_size):
                part = _score_batch(model, self._masked(ids, mine[lo:lo + cfg.batch_size]))
                sums = {k: sums[k] + part[k] for k in sums}
        total = {k: world.sum(v) for k, v in sums.items()}
        gen, rtd = total["gen"] / total["batches"], total["rtd"] / total["batches"]
        return {"loss": gen + DISCRIMINATOR_WEIGHT * rtd, "gen_loss": gen, "rtd_loss": rtd,
                "rtd_acc": total["rtd_right"] / total["tokens"]}

    def evaluate(self, model, world: World = LOCAL) -> dict[str, float]:
        """The objective on ``eval_batches`` fixed train and val batches; on val also its two
        parts and the encoder's accuracy at telling replaced tokens from originals."""
        rng = np.random.default_rng([self.cfg.seed, EVAL_STREAM])
        with evaluating(model):
            train = self._score(model, self.train, rng, world)
            val = self._score(model, self.val, rng, world)
        return {"train_loss": train["loss"], "val_loss": val["loss"],
                "val_gen_loss": val["gen_loss"], "val_gen_ppl": perplexity(val["gen_loss"]),
                "val_rtd_loss": val["rtd_loss"], "val_rtd_acc": val["rtd_acc"]}

    def eval_line(self, step: int, m: dict[str, float]) -> str:
        return (f"step {step}: objective train {m['train_loss']:.4f} | val {m['val_loss']:.4f} "
                f"(generator {m['val_gen_loss']:.4f}, replaced-token {m['val_rtd_loss']:.4f}, "
                f"acc {m['val_rtd_acc']:.1%}) | unigram {self.unigram:.4f}")


def _score_batch(model, batch: tuple[np.ndarray, ...]) -> dict[str, float]:
    gen_loss, rtd_loss, replaced, logits = electra_losses(model, *batch)
    return {"gen": gen_loss.item(), "rtd": rtd_loss.item(), "batches": 1,
            "rtd_right": int(((logits > 0) == replaced).sum()), "tokens": replaced.size}
