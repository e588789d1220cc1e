"""Scoring a trained model on token ids: summed loss, number right and number scored, the
pieces of a mean that ranks or batches add up; and corpus BLEU of translations.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from ..data.masking import mask_draws, mask_tokens
from ..data.text import windows
from ..engine.tensor import Tensor
from ..models.word2vec import cbow_scores
from ..nn import functional as F

__all__ = ["bleu", "masked_logits", "perplexity", "require_sacrebleu", "score_cbow",
           "score_classifier", "score_lm", "score_masked", "score_masked_lm",
           "score_translation", "summed_loss"]


# exp() of a float overflows past about 709.8: a diverged loss reads as a huge perplexity.
MAX_LOG_PERPLEXITY = 700.0


def perplexity(mean_loss: float) -> float:
    """exp(mean cross-entropy), clamped so that a diverged model's never overflows."""
    return math.exp(min(mean_loss, MAX_LOG_PERPLEXITY))


def summed_loss(logits: Tensor, targets: np.ndarray) -> tuple[float, int]:
    """(summed cross-entropy, number right) of ``logits`` against ``targets``."""
    loss = F.cross_entropy(logits, targets, reduction="sum").item()
    return loss, int((backend.to_numpy(logits.data.argmax(axis=-1)) == targets).sum())


def score_lm(model, ids: np.ndarray, context: int, batch_size: int) -> tuple[float, int, int]:
    """(summed next-token cross-entropy, number right, tokens scored) over ``ids`` cut into
    consecutive windows of ``context`` inputs (each scores every one of its targets)."""
    n = (len(ids) - 1) // context
    if n == 0:
        raise ValueError(f"{len(ids)} tokens: need more than the model's context of {context}")
    starts = np.arange(n) * context
    total_loss, correct = 0.0, 0
    for lo in range(0, n, batch_size):
        x, y = windows(ids, starts[lo:lo + batch_size], context)
        loss, right = summed_loss(model(x), y)
        total_loss, correct = total_loss + loss, correct + right
    return total_loss, correct, n * context


def masked_logits(model, inputs: np.ndarray, targets: np.ndarray) -> tuple[Tensor, np.ndarray]:
    """The vocabulary logits (N, V) of the N scored tokens and their targets (N,): the hidden
    states of the others never reach the (large) output projection."""
    scored = targets != F.IGNORE_INDEX
    h = model.hidden_states(inputs)
    return model.head(h[scored]), targets[scored]


def score_masked(model, inputs: np.ndarray, targets: np.ndarray) -> tuple[float, int, int]:
    """(summed cross-entropy, number right, number scored) over the hidden tokens of a batch."""
    logits, wanted = masked_logits(model, inputs, targets)
    return (*summed_loss(logits, wanted), len(wanted))


def score_cbow(model, sampler, ids: np.ndarray, n: int, batch_size: int,
               rng: np.random.Generator, world=None) -> tuple[float, float]:
    """(mean loss, accuracy) of word2vec's objective on ``n`` examples of ``ids`` drawn at
    once by ``sampler`` with ``rng`` (the same whatever the batch size and the ranks; each
    rank scores its share); accuracy: how often the true word scores above every noise word."""
    picks = sampler.draw(rng, ids, n)
    if world is not None:
        picks = np.array_split(picks, world.size)[world.rank]
    loss, right, scored = 0.0, 0, 0
    for lo in range(0, len(picks), batch_size):
        context, weights, candidates = sampler.batch(ids, picks[lo:lo + batch_size])
        s = backend.to_numpy(cbow_scores(model, context, weights, candidates).data)
        s = s.astype(np.float64)
        loss += float(np.logaddexp(0, -s[:, 0]).sum() + np.logaddexp(0, s[:, 1:]).sum())
        right += int((s[:, 0] > s[:, 1:].max(axis=1)).sum())
        scored += len(s)
    if world is not None:
        loss, right, scored = world.sum(loss), world.sum(right), world.sum(scored)
    return loss / scored, right / scored


# Windows whose masks are drawn at once: a fixed number, so the hidden tokens are the same
# whatever the batch size (a batch never spans two chunks).
MASK_CHUNK = 256


def score_masked_lm(model, ids: np.ndarray, context: int, batch_size: int, tokenizer,
                    prob: float = 0.15, seed: int = 0) -> tuple[float, int, int]:
    """(summed cross-entropy, number right, tokens scored) of a masked language model over
    ``ids`` cut into consecutive windows of ``context``, masked by draws of ``seed`` (the
    same tokens are hidden every time the file is scored)."""
    n = len(ids) // context
    if n == 0:
        raise ValueError(f"{len(ids)} tokens: need at least the model's context of {context}")
    rows = np.asarray(ids)[: n * context].reshape(n, context).astype(np.int64)
    rng = np.random.default_rng(seed)
    mask_id, vocab = tokenizer.mask_id, tokenizer.vocab_size
    if mask_id is None:
        raise ValueError("the checkpoint's tokenizer has no [MASK] token")
    total_loss, correct, scored = 0.0, 0, 0
    for chunk in range(0, n, MASK_CHUNK):  # masked a chunk at a time, whatever batch_size
        windows = rows[chunk:chunk + MASK_CHUNK]
        inputs, targets = mask_tokens(windows, mask_draws(rng, len(windows), context, vocab),
                                      mask_id, prob)
        for lo in range(0, len(windows), batch_size):
            if (targets[lo:lo + batch_size] == F.IGNORE_INDEX).all():
                continue  # nothing hidden in these windows
            part_loss, part_right, part_n = score_masked(
                model, inputs[lo:lo + batch_size], targets[lo:lo + batch_size])
            total_loss, correct = total_loss + part_loss, correct + part_right
            scored += part_n
    return total_loss, correct, scored


def score_translation(model, batch: tuple[np.ndarray, ...], pad: int) -> tuple[float, int]:
    """(summed target cross-entropy without smoothing, target tokens) of one padded batch of
    (source, decoder input, decoder target)."""
    src, tgt_in, tgt_out = batch
    loss = F.cross_entropy(model(src, tgt_in), tgt_out, ignore_index=pad, reduction="sum")
    return loss.item(), int((tgt_out != pad).sum())


def score_classifier(model, ids, lengths, labels, batch_size: int,
                     rank: int = 0, ranks: int = 1) -> tuple[float, int]:
    """(summed cross-entropy, number right) over rank ``rank``'s share (of ``ranks``) of the
    rows, in batches cut to their longest sentence."""
    total_loss, correct = 0.0, 0
    starts = range(0, len(labels), batch_size)
    for lo in starts[rank::ranks]:  # the ranks take turns
        part = slice(lo, lo + batch_size)
        width = int(lengths[part].max())
        loss, right = summed_loss(model(ids[part, :width], lengths[part]), labels[part])
        total_loss, correct = total_loss + loss, correct + right
    return total_loss, correct


def require_sacrebleu():
    """sacrebleu, or one line saying how to install it."""
    try:
        import sacrebleu
    except ModuleNotFoundError:
        raise ValueError("translation scores BLEU with sacrebleu: pip install sacrebleu") from None
    return sacrebleu


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (sacrebleu's standard 13a tokenization, on detokenized text), 0-100."""
    return float(require_sacrebleu().corpus_bleu(hypotheses, [references]).score)
