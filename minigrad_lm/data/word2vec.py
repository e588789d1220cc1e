"""The examples of word2vec's continuous bag of words: a word, the words around it, and noise
words to tell it from (Mikolov et al., 2013; their defaults below).

Frequent words are subsampled: a token of a word of corpus frequency f is kept, as a centre or
as a neighbour, with probability min(1, sqrt(t/f) + t/f), so "the" and "," stop taking most of
the updates. As in word2vec, the dropped tokens are skipped, not counted, when the neighbours
are taken: an example's neighbours are the ``reach`` nearest kept tokens on each side (the reach
drawn from 1 to :data:`WINDOW`, which weighs near neighbours more), looked for within
:data:`SPAN` tokens and not past the end of a line. Each token's keep-or-drop is drawn per
example, so a batch is a function of its random draws alone (exact resume) and the corpus is
never copied.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WINDOW = 5  # neighbours on each side at most
NEGATIVES = 5  # noise words per example
SUBSAMPLE = 1e-4  # word2vec's t
NOISE_POWER = 0.75  # noise words are drawn from the unigram distribution to this power
CONTEXT = 2 * WINDOW  # neighbours of an example at most
SPAN = 3 * WINDOW  # how far on each side the kept neighbours are looked for
SPAN_OFFSETS = np.concatenate([np.arange(-SPAN, 0), np.arange(1, SPAN + 1)])
COUNT_CHUNK = 1 << 20  # tokens counted at a time: counting a memory-mapped corpus stays flat
MAX_EMPTY_ROUNDS = 100  # draws of centres that found no word: the corpus has none


def token_counts(ids: np.ndarray, vocab_size: int) -> np.ndarray:
    """How often each id occurs in ``ids``, read a chunk at a time."""
    counts = np.zeros(vocab_size, np.int64)
    for lo in range(0, len(ids), COUNT_CHUNK):
        counts += np.bincount(np.asarray(ids[lo:lo + COUNT_CHUNK]), minlength=vocab_size)
    return counts


@dataclass(frozen=True)
class CBOWSampler:
    """Draws and builds the examples of one corpus: ``keep`` (V,) is the probability that a
    token of each id is kept (0 for the special tokens), ``noise_cdf`` (V,) the cumulative
    noise distribution, ``line_end`` the id that ends a line (None: the corpus has none)."""

    keep: np.ndarray
    noise_cdf: np.ndarray
    line_end: int | None = None

    @classmethod
    def of(cls, ids: np.ndarray, vocab_size: int, special_ids: list[int],
           line_end: int | None = None) -> CBOWSampler:
        """The sampler of corpus ``ids``, with frequencies counted on it."""
        counts = token_counts(ids, vocab_size).astype(np.float64)
        counts[list(special_ids)] = 0
        if counts.sum() == 0:
            raise ValueError("the corpus has no words besides special tokens")
        ratio = SUBSAMPLE / np.maximum(counts / counts.sum(), 1e-300)
        keep = np.where(counts > 0, np.minimum(1.0, np.sqrt(ratio) + ratio), 0.0)
        noise = counts ** NOISE_POWER
        return cls(keep.astype(np.float32), np.cumsum(noise / noise.sum()), line_end)

    def expected_centres(self, ids: np.ndarray) -> int:
        """How many tokens of ``ids`` a pass keeps as centres (what an epoch visits)."""
        counts = token_counts(ids, len(self.keep))
        return max(1, int(round(float(counts @ self.keep.astype(np.float64)))))

    def draw(self, rng: np.random.Generator, ids: np.ndarray, size: int) -> np.ndarray:
        """``size`` examples of ``ids``: a centre (a position, kept with its word's keep
        probability), a reach, the draws that keep or drop each neighbour, the noise words."""
        if len(ids) <= 2 * SPAN:
            raise ValueError(f"the corpus has {len(ids)} tokens: looking for neighbours "
                             f"{SPAN} tokens on each side needs more")
        picks = np.empty(size, dtype=[("centre", np.int64), ("reach", np.int8),
                                      ("keep", np.float32, (len(SPAN_OFFSETS),)),
                                      ("noise", np.int64, (NEGATIVES,))])
        filled, rounds = 0, 0
        while filled < size:  # rejection: a round keeps about half of its draws on IMDB
            need = size - filled
            at = rng.integers(SPAN, len(ids) - SPAN, size=4 * need)
            at = at[rng.random(len(at)) < self.keep[np.asarray(ids[at], np.int64)]][:need]
            picks["centre"][filled:filled + len(at)] = at
            filled, rounds = filled + len(at), rounds + 1
            if filled == 0 and rounds == MAX_EMPTY_ROUNDS:
                raise ValueError("no token of the corpus is a word the sampler keeps (only "
                                 "special tokens, or words unseen where it was counted)")
        picks["reach"] = rng.integers(1, WINDOW + 1, size=size)
        picks["keep"] = rng.random((size, len(SPAN_OFFSETS)), dtype=np.float32)
        noise = np.searchsorted(self.noise_cdf, rng.random((size, NEGATIVES)), side="right")
        picks["noise"] = np.minimum(noise, len(self.noise_cdf) - 1)
        return picks

    def batch(self, ids: np.ndarray, picks: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(context (B, CONTEXT) ids, weights (B, CONTEXT): 1/n on the n neighbours a row has,
        0 on padding, candidates (B, 1 + NEGATIVES): the centre's word, then the noise
        words), for the examples that have at least one neighbour."""
        span = np.asarray(ids[picks["centre"][:, None] + SPAN_OFFSETS], np.int64)  # (B, 2 SPAN)
        kept = picks["keep"] < self.keep[span]
        reach = picks["reach"][:, None]
        sides = []
        for side in (slice(SPAN - 1, None, -1), slice(SPAN, None)):  # each nearest first
            near, tokens = kept[:, side], span[:, side]
            if self.line_end is not None:
                near = near & (np.cumsum(tokens == self.line_end, axis=1) == 0)
            sides.append(near & (np.cumsum(near, axis=1) <= reach))
        chosen = np.concatenate([sides[0][:, ::-1], sides[1]], axis=1)  # back in text order
        rows = chosen.any(axis=1)
        chosen, span = chosen[rows], span[rows]
        first = np.argsort(~chosen, axis=1, kind="stable")[:, :CONTEXT]  # chosen, in order
        context = np.take_along_axis(span, first, axis=1)
        taken = np.take_along_axis(chosen, first, axis=1)
        weights = taken / taken.sum(axis=1, keepdims=True)
        centre = np.asarray(ids[picks["centre"][rows]], np.int64)
        candidates = np.concatenate([centre[:, None], picks["noise"][rows]], axis=1)
        return np.where(taken, context, 0), weights.astype(np.float32), candidates
