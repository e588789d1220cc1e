"""word2vec's continuous bag of words (Mikolov et al., 2013) as the pretraining of an encoder's
token embeddings: the mean of a word's neighbours' embeddings must score the word above a few
words drawn from the corpus's frequencies (negative sampling).

A masked LM on two CPU cores spent the hour it was given on a plateau where it predicts word
frequencies (README, "Pretraining an encoder"): it must learn where a word's neighbours are
before their identity can teach it anything. Here the neighbours are given, so every step
teaches every word's embedding what company it keeps; in minutes the embeddings of "awful" and
"dreadful" meet, which is what a classifier trained on a few thousand sentences cannot learn
from its labels.

:class:`Word2VecPretrainer` *is* the encoder (a :class:`GPT` whose parameters keep their names,
so a classifier starts from it as from a masked LM), plus the context vectors that score the
words; only the token embeddings and the context vectors train, the layers above stay as they
were initialised, for the task that starts from them.
"""
from __future__ import annotations

import numpy as np

from ..engine import ops
from ..engine.tensor import Tensor
from ..nn import functional as F
from ..nn.layers import Embedding
from .config import GPTConfig
from .gpt import GPT, INIT_STD

# The names of the parameters that belong to pretraining alone, not to the encoder.
PRETRAINING_ONLY = ("context_vectors.",)
TRAINED = ("tok_emb.", *PRETRAINING_ONLY)


class Word2VecPretrainer(GPT):
    """The encoder and the context vectors (zeros at the start, as in word2vec); every
    parameter but the token embeddings and the context vectors is frozen."""

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.context_vectors = Embedding(config.vocab_size, config.d_model)
        self.context_vectors.weight.data[...] = 0
        for name, p in self.named_parameters():
            if not name.startswith(TRAINED):
                p.requires_grad_(False)


def encoder_state(state: dict, first_word: int) -> dict:
    """The encoder's weights out of a pretrainer's ``state_dict``, the vectors of the words
    (ids from ``first_word`` on; the special tokens' rows stay as initialised) scaled to the
    spread the encoder's embeddings start with (:data:`INIT_STD`). Their scale is free in
    word2vec (only dot products with the context vectors count) and ends about 15 times
    larger, which would drown the positions and the layers' outputs in the residual stream of
    the model they start (MR, benchmarks/pretrain.py: see the README)."""
    encoder = {k: v for k, v in state.items() if not k.startswith(PRETRAINING_ONLY)}
    vectors = np.array(encoder["tok_emb.weight"], copy=True)
    spread = float(vectors[first_word:].std())
    if spread > 0:
        vectors[first_word:] *= INIT_STD / spread
    return {**encoder, "tok_emb.weight": vectors}


def cbow_scores(model: Word2VecPretrainer, context: np.ndarray, weights: np.ndarray,
                candidates: np.ndarray) -> Tensor:
    """Scores (B, C) of ``candidates`` (B, C) as the word amid ``context`` (B, W): the dot
    product of each candidate's context vector with the weighted sum of the context's token
    embeddings (``weights`` (B, W): 1/n for the n words a row keeps, 0 for the others)."""
    embedded = F.embedding(context, model.tok_emb.weight)  # (B, W, d)
    w = np.asarray(weights, dtype=embedded.dtype)[:, :, None]
    mean = ops.sum(embedded * w, axis=1, keepdims=True)  # (B, 1, d)
    vectors = F.embedding(candidates, model.context_vectors.weight)  # (B, C, d)
    return ops.sum(mean * vectors, axis=2)


def cbow_loss(model: Word2VecPretrainer, context: np.ndarray, weights: np.ndarray,
              candidates: np.ndarray) -> Tensor:
    """word2vec's objective per word, averaged over the batch: the logistic loss of the true
    word (column 0 of ``candidates``) as 1 plus that of each noise word as 0."""
    scores = cbow_scores(model, context, weights, candidates)
    labels = np.zeros(candidates.shape, dtype=bool)
    labels[:, 0] = True
    return F.binary_cross_entropy_with_logits(scores, labels) * candidates.shape[1]
