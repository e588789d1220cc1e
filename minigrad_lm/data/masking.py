"""BERT's masking of token windows: which tokens a masked language model must fill in.

In each window every real token is picked with a probability (BERT's 15%); a picked token is
replaced by ``[MASK]`` 80% of the time, by a random token 10%, and kept 10%, so the model
cannot tell which real tokens are scored.
"""
from __future__ import annotations

import numpy as np

from ..nn.functional import IGNORE_INDEX
from .trained_tokenizer import FIRST_WORD_ID

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
    them, and their ids as targets (``IGNORE_INDEX`` elsewhere). Special tokens are never
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
    return inputs, np.where(picked, ids, IGNORE_INDEX)
