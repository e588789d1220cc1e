"""Reading answers off a question-answering model: the best span of each window within a
maximum length, the answer head's classes, and the best of them over a question's windows.

Each candidate is scored by its log probability under its window: a span by
log p(span) + log p(start) + log p(end), a class answer by log p(class). Class answers are
read from a question's last window only (the one that ends with the context, as training saw
them); spans from every window. A fact-reading model has one row per question and class
answers only.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import backend
from ..data.qa import FactFeatures, QAExample, QATokens, encode_facts, encode_qa
from ..engine.tensor import no_grad


@dataclass
class Answer:
    """An answer, and where it was read: the feature row ``window``, and there the span's
    first and last token positions ``tokens`` (None for a class answer) or the answer
    head's class ``answer_class`` (0: a span)."""

    text: str
    probability: float
    span: tuple[int, int] | None  # character offsets in the context, None for a class answer
    window: int | None = None
    tokens: tuple[int, int] | None = None
    answer_class: int = 0


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def best_span(start_logp: np.ndarray, end_logp: np.ndarray, max_tokens: int
              ) -> tuple[float, int, int]:
    """(score, first, last) maximising start_logp[first] + end_logp[last] over
    first <= last < first + max_tokens."""
    start_logp, end_logp = np.asarray(start_logp), np.asarray(end_logp)
    t = len(start_logp)
    best = (-math.inf, 0, 0)
    for k in range(min(max_tokens, t)):  # k = last - first
        scores = start_logp[:t - k] + end_logp[k:]
        i = int(np.argmax(scores))
        if scores[i] > best[0]:
            best = (float(scores[i]), i, i + k)
    return best


def span_text(context: str, offsets: np.ndarray, first: int, last: int
              ) -> tuple[str, tuple[int, int]]:
    """The context's own characters from token ``first`` to token ``last`` (inclusive) and
    their offsets, less the white space a byte-level token carries in front."""
    a, b = int(offsets[first, 0]), int(offsets[last, 1])
    text = context[a:b]
    a += len(text) - len(text.lstrip())
    text = text.strip()
    return text, (a, a + len(text))


def predict_answers(model, features, contexts: Sequence[str], answer_names: Sequence[str],
                    batch_size: int = 32, max_answer_tokens: int = 30) -> list[Answer]:
    """The best answer to each question (``contexts[i]`` is question i's context) from the
    windows ``features`` (a data.qa.QAFeatures; ``features.example`` says whose each row is).
    """
    best: list[tuple[float, Answer] | None] = [None] * len(contexts)
    for rows, part in _batches(model, features, batch_size):
        start, end, answer = model(part.ids, part.lengths, part.context_mask(),
                                   matches=part.matches)
        logp = [log_softmax(backend.to_numpy(t.data)) for t in (start, end, answer)]
        for r in range(len(rows)):
            _candidates(best, part, r, int(rows[r]), *(a[r] for a in logp), contexts,
                        answer_names, max_answer_tokens)
    return [b[1] if b is not None else Answer("", 0.0, None) for b in best]


def _batches(model, features, batch_size: int):
    """(rows, their features cut to the longest) in batches of similar lengths, so they pad
    little, with ``model`` in eval mode and no graph recorded."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            by_length = np.argsort(features.lengths, kind="stable")
            for lo in range(0, len(features), batch_size):
                rows = by_length[lo:lo + batch_size]
                yield rows, features.take(rows, int(features.lengths[rows].max()))
    finally:
        model.train(was_training)


def _candidates(best, part, r, window, start_lp, end_lp, answer_lp, contexts, answer_names,
                max_answer_tokens) -> None:
    """Offer row r (feature row ``window``)'s best span and (in a last window) its best class
    to its example."""
    i = int(part.example[r])
    offers = []
    context_pos = np.flatnonzero(part.offsets[r, :, 0] >= 0)
    if context_pos.size:
        lo, hi = int(context_pos[0]), int(context_pos[-1]) + 1
        score, first, last = best_span(start_lp[lo:hi], end_lp[lo:hi], max_answer_tokens)
        text, where = span_text(contexts[i], part.offsets[r], lo + first, lo + last)
        offers.append((score + answer_lp[0],
                       Answer(text, 0.0, where, window, (lo + first, lo + last))))
    if part.last[r] and len(answer_lp) > 1:
        k = 1 + int(np.argmax(answer_lp[1:]))
        offers.append((float(answer_lp[k]), Answer(answer_names[k], 0.0, None, window,
                                                   answer_class=k)))
    for score, ans in offers:
        if best[i] is None or score > best[i][0]:
            ans.probability = math.exp(score)
            best[i] = (score, ans)


def predict_fact_answers(model, features: FactFeatures, answer_names: Sequence[str],
                         batch_size: int = 32) -> list[Answer]:
    """The most probable class answer (never class 0, the span class: a fact-reading model
    has no spans) to each question of ``features``, in the order of its rows."""
    out: list[Answer | None] = [None] * len(features)
    for rows, part in _batches(model, features, batch_size):
        logits = model.read_facts(part.ids, part.counts, part.matches)
        logp = log_softmax(backend.to_numpy(logits.data))
        for r, row in enumerate(rows):
            k = 1 + int(np.argmax(logp[r, 1:]))
            out[row] = Answer(answer_names[k], math.exp(logp[r, k]), None, int(row),
                              answer_class=k)
    return out


def answer_examples(model, tokenizer, answers: Sequence[str], examples: Sequence[QAExample],
                    stride: int, max_answer_tokens: int, batch_size: int = 32) -> list[Answer]:
    """The model's best answer to each example, read from its windows (or its facts) as in
    evaluation; ``answers`` are the answer head's classes."""
    if model.fact_tokens:
        index = {a: i for i, a in enumerate(answers)}
        facts = encode_facts(examples, QATokens.of(tokenizer), model.body.config.context_length,
                             model.fact_tokens, index, training=False,
                             question_match=model.question_match is not None)
        return predict_fact_answers(model, facts, answers, batch_size)
    features = read_windows(model, tokenizer, answers, examples, stride)
    return predict_answers(model, features, [e.context for e in examples], answers, batch_size,
                           max_answer_tokens)


def read_windows(model, tokenizer, answers: Sequence[str], examples: Sequence[QAExample],
                 stride: int):
    """Every window (a data.qa.QAFeatures row) the model reads of each example."""
    index = {a: i for i, a in enumerate(answers)}
    return encode_qa(examples, QATokens.of(tokenizer), model.body.config.context_length,
                     stride, index, training=False)[0]
