"""ELECTRA's replaced-token detection (Clark et al., 2020): a small masked-LM generator fills
the hidden positions with plausible words, and the encoder (the discriminator) learns from
every token whether it was replaced, not only from the 15% a masked LM scores.

:class:`ElectraPretrainer` *is* the encoder (a bidirectional :class:`GPT`, whose parameters
keep their names, so a classifier starts from them as from a masked LM's), with the generator
and the replaced-token head as two more children. The generator shares the encoder's token and
position embeddings (the paper's tied embeddings: the generator's softmax trains the inputs
both read) and is shallower (``generator_layers``; the paper finds a generator a quarter to a
half of the encoder's size best: a stronger one makes the task too hard).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import backend
from ..engine import ops
from ..engine.tensor import Tensor, no_grad
from ..nn import functional as F
from ..nn.layers import Linear
from .config import GPTConfig
from .gpt import GPT

# The paper's weight of the replaced-token loss against the generator's (its per-token loss
# is far smaller than a softmax over the vocabulary).
DISCRIMINATOR_WEIGHT = 50.0
# The names of the parameters that belong to pretraining alone, not to the encoder.
PRETRAINING_ONLY = ("generator.", "rtd.")


@dataclass
class ElectraConfig(GPTConfig):
    """The encoder's shape (a :class:`GPTConfig`) and the generator's depth."""

    generator_layers: int = 1

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.generator_layers, int) or self.generator_layers < 1:
            raise ValueError(f"ElectraConfig.generator_layers must be a positive integer, got "
                             f"{self.generator_layers!r}")
        if self.causal:
            raise ValueError("ElectraConfig: the encoder must be bidirectional (causal=False)")

    def encoder(self) -> GPTConfig:
        """The encoder's own config, as a classifier started from it has."""
        fields = {f.name for f in dataclasses.fields(GPTConfig)}
        return GPTConfig(**{k: v for k, v in self.to_dict().items() if k in fields})


class ElectraPretrainer(GPT):
    """The encoder (``causal=False``) plus a ``generator_layers``-layer generator and a
    linear replaced-or-original head over the encoder's hidden states."""

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        generator = dataclasses.replace(config.encoder(), n_layer=config.generator_layers)
        self.generator = GPT(generator)
        self.generator.tok_emb.weight = self.tok_emb.weight
        self.generator.head.weight = self.tok_emb.weight
        self.generator.pos_emb = self.pos_emb
        self.rtd = Linear(config.d_model, 1)
        self.rtd.bias.data[...] = 0


def encoder_state(state: dict) -> dict:
    """The encoder's weights out of a pretrainer's ``state_dict`` (the rest is pretraining's)."""
    return {k: v for k, v in state.items() if not k.startswith(PRETRAINING_ONLY)}


def sample_replacements(logits: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """One token per row of ``logits`` (N, V), drawn from its softmax by inverting the CDF at
    ``uniform`` (N,): the draw is a function of the given numbers (exact resume)."""
    xp = backend.array_module(logits)
    p = xp.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = xp.cumsum(p, axis=1)
    u = backend.to_device(uniform, backend.device_of(logits)) * cdf[:, -1]
    picked = (cdf < u[:, None]).sum(axis=1)
    return backend.to_numpy(xp.minimum(picked, logits.shape[1] - 1)).astype(np.int64)


def electra_losses(model: ElectraPretrainer, inputs: np.ndarray, targets: np.ndarray,
                   uniform: np.ndarray) -> tuple[Tensor, Tensor, np.ndarray, np.ndarray]:
    """(generator loss, replaced-token loss, which tokens were replaced (B, T), the encoder's
    replaced-token logits (B, T)) of windows ``inputs`` (B, T) in which the positions with a
    target (not ``IGNORE_INDEX``) were hidden. The generator's samples at those positions
    (drawn with ``uniform`` (B, T)) replace the original tokens; the encoder reads the result
    and is scored on every token. No gradient flows through the sampling (as in the paper)."""
    scored = targets != F.IGNORE_INDEX
    gen_logits = model.generator.head(model.generator.hidden_states(inputs)[scored])  # (N, V)
    gen_loss = F.cross_entropy(gen_logits, targets[scored])
    with no_grad():
        sampled = sample_replacements(gen_logits.data, uniform[scored])
    original = np.where(scored, targets, inputs)
    corrupted = original.copy()
    corrupted[scored] = sampled
    replaced = corrupted != original  # a sample equal to the original counts as original
    z = ops.reshape(model.rtd(model.hidden_states(corrupted)), *replaced.shape)  # (B, T)
    rtd_loss = F.binary_cross_entropy_with_logits(z, replaced)
    return gen_loss, rtd_loss, replaced, backend.to_numpy(z.data)


def electra_loss(model: ElectraPretrainer, inputs: np.ndarray, targets: np.ndarray,
                 uniform: np.ndarray, weight: float = DISCRIMINATOR_WEIGHT) -> Tensor:
    """The paper's objective: generator loss + ``weight`` x replaced-token loss."""
    gen_loss, rtd_loss, _, _ = electra_losses(model, inputs, targets, uniform)
    return gen_loss + rtd_loss * weight
