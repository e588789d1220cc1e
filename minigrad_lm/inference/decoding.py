"""Greedy and beam-search decoding of an encoder-decoder model, batched over sentences.

Both work on a *decoder state* (:meth:`Seq2SeqTransformer.start_decoding`, or any object with
the same three members): ``tokens`` (N, t) the prefixes so far, ``log_probs()`` (N, vocab) for
the next token, ``advance(next_tokens, rows=None)`` that keeps ``rows`` (beam search's
reordering) and appends a token to each. So a tiny hand-written model can stand in for a
Transformer in tests.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..backend import memory

__all__ = ["DECODE_BATCH", "DecodeOptions", "beam_search", "decoding_bytes", "greedy",
           "max_target_length", "translate_ids", "translate_text"]


DECODE_BATCH = 64  # sentences decoded together (each beam-size hypotheses)
# length ** penalty must stay a float for any length a model can have (2**31 ** 30 ~ 1e280).
MAX_LENGTH_PENALTY = 30.0


@dataclass
class DecodeOptions:
    """How to decode: beam_size 1 is greedy; the output has at most max_len_a * source length +
    max_len_b tokens (eos excluded); hypotheses are ranked by log p / length ** length_penalty."""

    beam_size: int = 4
    length_penalty: float = 1.0
    max_len_a: float = 1.5
    max_len_b: int = 10

    def __post_init__(self):
        self.check(vars(self))

    @staticmethod
    def check(values: Mapping[str, Any], names: Mapping[str, str] | None = None) -> None:
        """Refuse what cannot decode: ``values`` maps each field to its value, ``names`` a field
        to what the error calls it (a command-line flag; the field's name by default)."""
        name = {f: (names or {}).get(f, f) for f in values}
        beam = values["beam_size"]
        if not isinstance(beam, int) or isinstance(beam, bool) or beam < 1:
            raise ValueError(f"{name['beam_size']} must be a positive integer, got {beam!r}")
        for field in ("length_penalty", "max_len_a", "max_len_b"):
            value = values[field]
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value)):
                raise ValueError(f"{name[field]} must be a finite number, got {value!r}")
        if abs(values["length_penalty"]) > MAX_LENGTH_PENALTY:
            raise ValueError(f"{name['length_penalty']} must be in [-{MAX_LENGTH_PENALTY:g}, "
                             f"{MAX_LENGTH_PENALTY:g}], got {values['length_penalty']}")
        a, b = values["max_len_a"], values["max_len_b"]
        if a < 0 or b < 0 or a + b <= 0:
            raise ValueError(f"{name['max_len_a']} {a} and {name['max_len_b']} {b} must be >= 0 "
                             "and not both 0")


def max_target_length(source_length: int, options: DecodeOptions, limit: int) -> int:
    """Decoding steps at most: max_len_a * source_length + max_len_b tokens, then eos (forced
    at the last step), within the model's `limit` positions (bos takes one)."""
    wanted = options.max_len_a * source_length + options.max_len_b + 1
    return max(1, int(min(wanted, limit - 1)))


def _limits(max_steps, n: int) -> np.ndarray:
    """Per-sentence step limits from an int or a sequence of n ints."""
    return np.broadcast_to(np.asarray(max_steps, dtype=np.int64), (n,))


def greedy(state, eos_id: int, max_steps) -> list[list[int]]:
    """The most likely next token at each step until eos (not returned), which is forced at
    step max_steps (an int, or one per sentence)."""
    n = state.tokens.shape[0]
    limits = _limits(max_steps, n)
    done = np.zeros(n, dtype=bool)
    for step in range(1, int(limits.max()) + 1):
        best = state.log_probs().argmax(axis=-1)
        best[done | (step >= limits)] = eos_id  # finished rows wait; at the limit, eos
        state.advance(best)
        done |= best == eos_id
        if done.all():
            break
    return [_until_eos(row[1:], eos_id) for row in state.tokens]


def _until_eos(tokens: np.ndarray, eos_id: int) -> list[int]:
    hits = np.flatnonzero(tokens == eos_id)
    return tokens[: hits[0] if hits.size else len(tokens)].tolist()


def _top(scores: np.ndarray, m: int) -> np.ndarray:
    """Per row, the columns of the m highest scores, best first (ties: lower column first, as
    argmax breaks them); a partial sort, since rows hold beams x vocabulary entries."""
    m = min(m, scores.shape[1])
    part = np.argpartition(-scores, m - 1, axis=1)[:, :m]
    order = np.lexsort((part, -np.take_along_axis(scores, part, 1)), axis=1)
    return np.take_along_axis(part, order, 1)


def beam_search(state, eos_id: int, max_steps, beam_size: int,
                length_penalty: float = 1.0) -> list[list[int]]:
    """Best hypothesis per sentence by log p / length ** length_penalty (length counts eos),
    ended by eos within max_steps steps (an int, or one per sentence; eos forced at the last).

    The state holds one row per sentence on entry and beam_size rows per sentence after the
    first step. A hypothesis ends when eos is among the top beam_size candidates (as in
    Hugging Face's beam search, so beam size 1 is exactly greedy); a sentence stops once it has
    beam_size finished hypotheses and no live one can still beat them at its current length.
    """
    n, k = state.tokens.shape[0], beam_size
    scores = np.zeros((n, 1))  # live hypotheses' log p, (sentences, beams)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    done = np.zeros(n, dtype=bool)
    limits = _limits(max_steps, n)

    def norm(score: float, length: int) -> float:
        return float(score / np.float64(length) ** length_penalty)  # inf, never OverflowError

    for step in range(1, int(limits.max()) + 1):
        logp = state.log_probs()
        vocab = logp.shape[1]
        at_limit = np.repeat(step >= limits, scores.shape[1])
        logp[at_limit] = np.where(np.arange(vocab) == eos_id, logp[at_limit], -np.inf)
        cand = (scores[:, :, None] + logp.reshape(n, scores.shape[1], vocab)).reshape(n, -1)
        top = _top(cand, 2 * k)  # enough to refill k beams
        rows, tokens, new_scores = [], [], np.full((n, k), -np.inf)
        for b in range(n):
            beams = 0
            for rank, c in enumerate(top[b]):
                if not np.isfinite(cand[b, c]):  # a finished sentence, or too few candidates
                    break
                beam, token = divmod(int(c), vocab)
                row = b * scores.shape[1] + beam
                if token == eos_id:
                    if rank < k and not done[b]:
                        finished[b].append((norm(cand[b, c], step), state.tokens[row, 1:].tolist()))
                    continue
                rows.append(row)
                tokens.append(token)
                new_scores[b, beams] = cand[b, c]
                beams += 1
                if beams == k:
                    break
            for _ in range(beams, k):  # every sentence keeps k rows; spare ones score -inf
                rows.append(b * scores.shape[1])
                tokens.append(eos_id)
            finished[b].sort(key=lambda h: -h[0])
            del finished[b][k:]
            best_live = norm(new_scores[b, 0], step)
            done[b] |= len(finished[b]) == k and finished[b][-1][0] >= best_live
        if done.all():
            break
        new_scores[done] = -np.inf  # finished sentences keep rows but never add hypotheses
        scores = new_scores
        state.advance(np.asarray(tokens), np.asarray(rows))
    return [max(f, key=lambda h: h[0])[1] for f in finished]


def decoding_bytes(config, rows: int) -> tuple[int, str]:
    """(bytes, what they are) that decoding ``rows`` hypotheses at once holds besides the
    weights: per row the key/value caches of self- and cross-attention over the whole context,
    and the scores over the vocabulary (log p, candidates, their partial sort)."""
    cache = 4 * 2 * 2 * config.n_layer * config.context_length * config.d_model
    scores = 3 * 8 * config.vocab_size
    return rows * (cache + scores), (f"{rows:,} hypotheses, each a key/value cache of "
                                     f"{memory.gib(cache)} and scores of {memory.gib(scores)}")


def translate_ids(model, sources: list[np.ndarray], options: DecodeOptions,
                  batch_size: int = DECODE_BATCH, use_cache: bool = True,
                  names: list[str] | None = None) -> list[list[int]]:
    """Target ids for each source id sequence (eos included in the sources), batched by length
    so that each batch needs little padding; results come back in the input order. ``names``
    (e.g. ``file:line``) say which sentence an error is about. A beam too wide for the memory
    is refused before decoding (see :func:`decoding_bytes`)."""
    c = model.config
    for i, s in enumerate(sources):
        if len(s) > c.context_length:
            name = names[i] if names is not None else f"sentence {i + 1}"
            raise ValueError(f"{name}: {len(s)} tokens, longer than the model's "
                             f"maximum of {c.context_length}")
    need, detail = decoding_bytes(c, min(batch_size, len(sources)) * options.beam_size)
    device = next((p.device for p in model.parameters()), "cpu")
    memory.require(need, detail, f"decoding with beam size {options.beam_size}", device)
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[list[int]] = [[] for _ in sources]
    for lo in range(0, len(order), batch_size):
        part = order[lo:lo + batch_size]
        width = max(1, max(len(sources[i]) for i in part))
        src = np.full((len(part), width), c.pad_id, dtype=np.int64)
        for row, i in enumerate(part):
            src[row, : len(sources[i])] = sources[i]
        steps = [max_target_length(len(sources[i]), options, c.context_length) for i in part]
        state = model.start_decoding(src, capacity=max(steps) + 1, use_cache=use_cache)
        if options.beam_size == 1:
            hyps = greedy(state, c.eos_id, steps)
        else:
            hyps = beam_search(state, c.eos_id, steps, options.beam_size, options.length_penalty)
        for i, hyp in zip(part, hyps):
            out[i] = hyp
    return out


def translate_text(model, tokenizer, sources: list[np.ndarray], options: DecodeOptions,
                   names: list[str] | None = None, batch_size: int = DECODE_BATCH
                   ) -> list[str]:
    """The decoded translation of each source id sequence (eos included in the sources);
    ``names`` and ``batch_size`` as for :func:`translate_ids`."""
    return [tokenizer.decode(h).strip()
            for h in translate_ids(model, sources, options, batch_size, names=names)]
