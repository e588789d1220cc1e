"""Question answering on a Transformer body (BERT's recipe, Devlin et al. 2019 §4.2): a span
head scores each context token as the answer's start and end, and an answer head over the
pooled state picks a class answer (bAbI's "yes", "two", "n,w") or class 0, "the answer is a
span". See minigrad_lm/data/qa.py for the two kinds of answer.

A fact-reading model (``fact_tokens`` > 0) reads a story as facts instead (data/qa.py): each
unit, the question or a fact, is the sum of its words' embeddings, each multiplied by a
learned weight vector of its place in the unit (the position encoding of end-to-end memory
networks, Sukhbaatar et al. 2015, learned here rather than fixed), so word order counts; the
body then attends over units and the answer head reads the question's unit.

A model may also be told which context tokens (or facts' tokens) belong to a word of the
question (``question_match``): a learned vector is added to their embeddings, the exact-match
feature of DrQA (Chen et al. 2017), the marks made from the text (data.qa.word_keys). Whether a
context word is one of the question's is what locates an answer's sentence (or a bAbI story's
fact about the question's subject), and a body trained on a few thousand questions learns that
comparison slowly through attention alone.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..engine import ops, rng
from ..engine.tensor import Tensor
from ..nn import functional as F
from ..nn.layers import Linear
from ..nn.module import Module, Parameter
from .gpt import GPT, INIT_STD

# A logit that rules a position out: exp(-1e9 - max) is exactly 0 in float32 and float64.
MASKED = -1e9
IGNORE = -1  # a target position meaning "no span in this row"


class QuestionAnswerer(Module):
    """Start and end logits over the context tokens and answer logits, from a GPT body.

    The body reads ``[CLS] question [SEP] context``. A bidirectional body pools [CLS]
    (position 0); a causal one (GPT-2) the last real token, the only one that has seen the
    question and the whole context. Padding is masked out of a bidirectional body's attention,
    so a padded row scores as it would alone.
    """

    def __init__(self, body: GPT, num_answers: int, fact_tokens: int = 0,
                 question_match: bool = False):
        super().__init__()
        if num_answers < 1:
            raise ValueError(f"QuestionAnswerer: need at least 1 answer class, got {num_answers}")
        self.body, self.num_answers, self.fact_tokens = body, num_answers, fact_tokens
        d = body.config.d_model
        dtype = body.tok_emb.weight.data.dtype
        heads = [Linear(d, num_answers)]
        self.answer = heads[0]
        if fact_tokens:
            # ones: at the start a unit is the plain sum of its words' embeddings
            self.word_weights = Parameter(np.ones((fact_tokens, d), dtype))
        else:
            self.span = Linear(d, 2)
            heads.append(self.span)
        self.question_match = None
        if question_match:
            self.question_match = Parameter(
                (rng.host().standard_normal(d) * INIT_STD).astype(dtype))
        for head in heads:
            head.weight.data[...] = rng.host().standard_normal(head.weight.shape) * 0.02
            head.bias.data[...] = 0

    def parameters(self) -> list[Parameter]:
        """The parameters QA uses (the body's language-model head is left out unless tied)."""
        head = id(self.body.head.weight)
        shared = self.body.config.tie_weights
        return [p for _, p in self.named_parameters() if shared or id(p) != head]

    def reader(self) -> Module:
        """What reads a window, the answer head left out: the body, the span head and the
        question-match vector (another model's weights for these start a QA model)."""
        if self.fact_tokens:
            raise ValueError("QuestionAnswerer: a fact-reading model has no span reader")
        part = Module()
        part.body, part.span = self.body, self.span
        if self.question_match is not None:
            part.question_match = self.question_match
        return part

    def read_facts(self, ids, counts, matches=None) -> Tensor:
        """Answer logits (B, num_answers) for units ``ids`` (B, U, J) of which the first
        ``counts`` (B, U) tokens are real (a unit of 0 tokens is padding); unit 0 is the
        question. ``matches`` (B, U, J), which a question-match model needs, marks the facts'
        tokens of a question word (data.qa's FactFeatures.matches)."""
        if not self.fact_tokens:
            raise ValueError("QuestionAnswerer: this model reads token windows, not facts")
        b, u, j = ids.shape
        if j > self.fact_tokens:
            raise ValueError(f"QuestionAnswerer: units of {j} tokens, this model reads up to "
                             f"{self.fact_tokens}")
        device = self.answer.weight.device
        xp = backend.array_module(self.answer.weight.data)
        counts = xp.asarray(backend.to_device(np.asarray(counts), device))
        real = (xp.arange(j)[None, None, :] < counts[:, :, None]).astype(
            self.word_weights.data.dtype)  # (B, U, J)
        words = self._marked(F.embedding(ids, self.body.tok_emb.weight), matches,
                             "read_facts", "FactFeatures")  # (B, U, J, d)
        units = (words * self.word_weights[:j] * Tensor(real[..., None])).sum(axis=2)
        h = self.body.hidden_states(np.zeros((b, u), np.int64), key_padding_mask=counts > 0,
                                    token_embeddings=units)  # (B, U, d)
        return self.answer(h[:, 0])

    def _marked(self, embeddings: Tensor, matches, caller: str, features: str) -> Tensor:
        """The embeddings plus the question-match vector at ``matches`` (as they are without
        the vector)."""
        if self.question_match is None:
            return embeddings
        if matches is None:
            raise ValueError(f"QuestionAnswerer.{caller}: this model marks question words; "
                             f"pass matches (data.qa's {features}.matches)")
        matches = np.asarray(backend.to_numpy(matches), bool)
        if matches.shape != embeddings.shape[:-1]:
            raise ValueError(f"QuestionAnswerer.{caller}: matches of shape {matches.shape} for "
                             f"tokens of shape {embeddings.shape[:-1]}")
        hits = backend.to_device(matches[..., None], self.question_match.device)
        return embeddings + Tensor(hits.astype(embeddings.dtype)) * self.question_match

    def forward(self, ids, lengths, context_mask, token_embeddings: Tensor | None = None,
                matches=None) -> tuple[Tensor, Tensor, Tensor]:
        """(start logits (B, T), end logits (B, T), answer logits (B, num_answers)) for ids
        (B, T) whose first ``lengths`` (B,) tokens are real; positions outside
        ``context_mask`` (B, T) get :data:`MASKED` start and end logits.
        ``token_embeddings`` stand in for the ids' embeddings (GPT.hidden_states).
        ``matches`` (B, T), which a question-match model needs, marks the context tokens of a
        question word (data.qa's QAFeatures.matches)."""
        if self.fact_tokens:
            raise ValueError("QuestionAnswerer: this model reads facts (read_facts), not "
                             "token windows")
        ids = ids.data if isinstance(ids, Tensor) else ids
        device = self.span.weight.device
        xp = backend.array_module(self.span.weight.data)
        b, t = ids.shape
        lens = xp.asarray(backend.to_device(np.asarray(lengths, np.int64), device))
        keep = xp.arange(t)[None, :] < lens[:, None]  # (B, T) real tokens
        causal = self.body.config.causal
        if self.question_match is not None:
            if token_embeddings is None:
                token_embeddings = F.embedding(backend.to_device(ids, device),
                                               self.body.tok_emb.weight)
            token_embeddings = self._marked(token_embeddings, matches, "forward", "QAFeatures")
        h = self.body.hidden_states(ids, key_padding_mask=None if causal else keep,
                                    token_embeddings=token_embeddings)  # (B, T, d)
        logits = self.span(h)  # (B, T, 2)
        outside = ~xp.asarray(backend.to_device(np.asarray(context_mask, bool), device))
        start = ops.masked_fill(logits[:, :, 0], outside, MASKED)
        end = ops.masked_fill(logits[:, :, 1], outside, MASKED)
        pooled = h[xp.arange(b), lens - 1] if causal else h[:, 0]  # (B, d)
        return start, end, self.answer(pooled)


def qa_loss(start: Tensor, end: Tensor, answer: Tensor, start_target, end_target,
            answer_target) -> Tensor:
    """Mean answer-class cross-entropy, plus the mean of the start and end cross-entropies
    over the rows with a span (``start_target`` = :data:`IGNORE` elsewhere); a batch without
    a span has the class term alone."""
    loss = F.cross_entropy(answer, np.asarray(answer_target, np.int64))
    starts = np.asarray(start_target, np.int64)
    if (starts != IGNORE).any():
        ends = np.asarray(end_target, np.int64)
        span = (F.cross_entropy(start, starts, ignore_index=IGNORE)
                + F.cross_entropy(end, ends, ignore_index=IGNORE)) * 0.5
        loss = loss + span
    return loss
