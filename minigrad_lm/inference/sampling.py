"""Autoregressive sampling from a GPT: temperature, top-k, top-p, with or without a KV cache.

Both paths feed the model exactly the same token windows, so for the same seed they produce the
same tokens; the cached one just computes each step's logits from the new token only.

Windows: a GPT sees at most ``context_length`` tokens. The prompt is cropped to its last
``context_length`` tokens. When the sequence outgrows the window, the window restarts from the
last ``context_length // 2`` tokens (at least one), and the cached path re-fills its cache from
that window (a "prefill"). Halving instead of sliding by one token keeps the cached path cheap:
one prefill per ``context_length // 2`` new tokens rather than one per token.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import backend
from ..backend import memory
from ..engine.tensor import no_grad
from ..models import GPT
from ..nn import KVCache

# What each new token holds until the end: a Python int in a list, then an int64.
BYTES_PER_NEW_TOKEN = 48

__all__ = ["check_length", "check_options", "filter_probs", "generate", "next_window_start"]


def filter_probs(
    logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None
) -> np.ndarray:
    """Sampling distribution (float64, sums to 1) from one row of logits.

    Temperature first, then top-k (keep the k most likely tokens), then top-p (keep the smallest
    set of most likely tokens whose probability reaches p), as in Hugging Face's samplers.
    ``temperature == 0`` is greedy: all mass on the argmax (lowest id on ties).
    """
    logits = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        probs = np.zeros_like(logits)
        probs[int(np.argmax(logits))] = 1.0
        return probs
    # A stable sort gives ties a fixed order, so top-k/top-p keep the same ids on every backend
    # (a positive temperature keeps the order of the logits).
    order = np.argsort(-logits, kind="stable")
    keep = len(order) if top_k is None else min(top_k, len(order))
    with np.errstate(over="ignore"):  # a tiny temperature sends all but the top to -inf: p 0
        probs_sorted = np.exp((logits[order] - logits[order[0]]) / temperature)
    probs_sorted[keep:] = 0.0
    probs_sorted /= probs_sorted.sum()
    if top_p is not None and top_p < 1.0:
        # Keep token i while the mass before it is still below p: the first always stays.
        before = np.cumsum(probs_sorted) - probs_sorted
        probs_sorted[before >= top_p] = 0.0
        probs_sorted /= probs_sorted.sum()
    probs = np.zeros_like(probs_sorted)
    probs[order] = probs_sorted
    return probs


def check_options(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not temperature >= 0:  # also refuses NaN
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def next_window_start(start: int, length: int, context: int) -> int:
    """Where the model's window begins for a sequence of ``length`` tokens (see module doc)."""
    if length - start <= context:
        return start
    return length - max(1, context // 2)


def _sample(probs: np.ndarray, rng: np.random.Generator) -> int:
    """Inverse-CDF draw: exactly one uniform per token, whatever the distribution."""
    u = rng.random()
    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(probs) - 1))


def check_length(max_new_tokens: int, name: str = "max_new_tokens") -> None:
    """Refuse a negative length, or one whose tokens cannot be held in memory (``name``: what
    the error calls it, e.g. a flag)."""
    if max_new_tokens < 0:
        raise ValueError(f"{name} must be >= 0, got {max_new_tokens}")
    memory.require(max_new_tokens * BYTES_PER_NEW_TOKEN, f"{BYTES_PER_NEW_TOKEN} bytes a token",
                   f"{name} {max_new_tokens:,}")


def generate(
    model: GPT,
    prompt_ids,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    vocab_limit: int | None = None,
    on_token: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Sample ``max_new_tokens`` token ids (int64, 1-D) continuing ``prompt_ids`` (1-D).

    Only the new ids are returned. The prompt must be non-empty; a prompt longer than the
    model's context is cropped to its last ``context_length`` tokens. The model runs in eval
    mode (no dropout) and is put back in its previous mode afterwards. ``seed`` seeds a private
    generator, so sampling never disturbs the training random streams.

    ``vocab_limit`` restricts sampling to ids below it: a model's embedding is often padded
    beyond its tokenizer's vocabulary (50257 -> 50304), and an id the tokenizer cannot decode
    must never come out. ``on_token`` is called with each id as soon as it is drawn.
    """
    check_options(temperature, top_k, top_p)
    if not model.config.causal:
        raise ValueError("this model is bidirectional (a masked language model or an encoder): "
                         "each token sees the ones after it, so it cannot write text left to "
                         "right")
    vocab = model.config.vocab_size
    if vocab_limit is not None and not 1 <= vocab_limit <= vocab:
        raise ValueError(f"vocab_limit must be in [1, {vocab}], got {vocab_limit}")
    check_length(max_new_tokens)
    context = model.config.context_length
    seq = [int(t) for t in np.asarray(prompt_ids).reshape(-1)][-context:]
    if not seq:
        raise ValueError("the prompt is empty: give at least one token to continue")
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            new = _generate_loop(
                model, seq, max_new_tokens, rng, use_cache,
                lambda row: filter_probs(row[:vocab_limit], temperature, top_k, top_p),
                on_token or (lambda token: None))
    finally:
        model.train(was_training)
    return np.array(new, dtype=np.int64)


def _generate_loop(
    model: GPT,
    seq: list[int],
    max_new_tokens: int,
    rng: np.random.Generator,
    use_cache: bool,
    to_probs: Callable[[np.ndarray], np.ndarray],
    on_token: Callable[[int], None],
) -> list[int]:
    """Extend ``seq`` in place by ``max_new_tokens`` sampled ids; return those ids."""
    context = model.config.context_length
    start, cache, new = 0, None, []
    for step in range(max_new_tokens):
        moved = next_window_start(start, len(seq), context)
        if not use_cache:
            window = seq[moved:]
        elif step == 0 or moved != start:
            cache = KVCache(capacity=context)  # prefill the whole (new) window
            window = seq[moved:]
        else:
            window = seq[-1:]  # the cache already holds everything before the last token
        start = moved
        logits = model(np.array([window], dtype=np.int64), cache=cache if use_cache else None)
        token = _sample(to_probs(backend.to_numpy(logits.data[0, -1])), rng)
        seq.append(token)
        new.append(token)
        on_token(token)
    return new
