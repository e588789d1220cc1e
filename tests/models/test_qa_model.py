"""The question-answering head: loss and masking gradient-checked, padding-invariance."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm.models import GPT, GPTConfig
from minigrad_lm.models.qa import IGNORE, MASKED, QuestionAnswerer, qa_loss
from tests.helpers import to_float64


def tiny_qa(causal=False, answers=3, seed=0):
    mg.manual_seed(seed)
    body = GPT(GPTConfig(vocab_size=20, context_length=12, n_layer=2, n_head=2, d_model=8,
                         causal=causal))
    return QuestionAnswerer(body, answers)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), b=st.integers(1, 4), t=st.integers(2, 6),
       spans=st.lists(st.booleans(), min_size=4, max_size=4))
def test_qa_loss_and_masking_gradcheck(seed, b, t, spans):
    rng = np.random.default_rng(seed)
    start, end = rng.standard_normal((2, b, t))
    answer = rng.standard_normal((b, 3))
    mask = rng.random((b, t)) < 0.7
    mask[:, 0] = True  # each row keeps a context position for its target
    allowed = [np.flatnonzero(row) for row in mask]  # targets lie in the context
    start_t = np.where(spans[:b], [rng.choice(a) for a in allowed], IGNORE)
    end_t = np.where(spans[:b], [rng.choice(a) for a in allowed], IGNORE)
    answer_t = rng.integers(0, 3, b)

    def loss(s, e, a):
        s, e = s.masked_fill(~mask, MASKED), e.masked_fill(~mask, MASKED)
        return qa_loss(s, e, a, start_t, end_t, answer_t)

    inputs = [mg.tensor(x) for x in (start, end, answer)]
    assert mg.gradcheck(loss, inputs)
    out = loss(*[mg.tensor(x, requires_grad=True) for x in (start, end, answer)])
    # value check: the masked positions do not count
    want = _reference(start, end, answer, mask, start_t, end_t, answer_t)
    np.testing.assert_allclose(out.item(), want, rtol=1e-10)


def _reference(start, end, answer, mask, start_t, end_t, answer_t) -> float:
    def ce(logits, target, keep=None):
        logits = np.where(keep, logits, -np.inf) if keep is not None else logits
        lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        return lse - logits[np.arange(len(target)), target]
    total = ce(answer, answer_t).mean()
    rows = start_t != IGNORE
    if rows.any():
        total += 0.5 * (ce(start[rows], start_t[rows], mask[rows]).mean()
                        + ce(end[rows], end_t[rows], mask[rows]).mean())
    return float(total)


def test_whole_model_gradcheck_through_the_masked_heads():
    model = to_float64(tiny_qa())
    ids = np.array([[2, 7, 3, 9, 10, 11, 0], [2, 8, 8, 3, 12, 0, 0]])
    lengths = np.array([6, 5])
    context = np.zeros_like(ids, bool)
    context[0, 3:6] = context[1, 4:5] = True
    params = model.parameters()

    def loss(*_):
        s, e, a = model(ids, lengths, context)
        return qa_loss(s, e, a, [4, IGNORE], [5, IGNORE], [0, 2])

    assert mg.gradcheck(loss, params)
    s, e, _ = model(ids, lengths, context)
    assert (s.numpy()[~context] == MASKED).all() and (e.numpy()[~context] == MASKED).all()


def test_padded_batch_equals_each_example_alone():
    for causal in (False, True):
        model = to_float64(tiny_qa(causal=causal)).eval()
        rows = [np.array([2, 5, 3, 9, 10, 11, 12, 13]), np.array([2, 6, 3, 14]),
                np.array([2, 7, 7, 3, 15, 16])]
        width = max(map(len, rows))
        ids = np.zeros((3, width), np.int64)
        mask = np.zeros((3, width), bool)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            ids[i, len(r):] = 19  # padding that is a real token id: must not matter
            mask[i, list(r).index(3) + 1:len(r)] = True
        s, e, a = model(ids, [len(r) for r in rows], mask)
        for i, r in enumerate(rows):
            s1, e1, a1 = model(r[None], [len(r)], mask[i:i + 1, :len(r)])
            np.testing.assert_allclose(s.numpy()[i, :len(r)], s1.numpy()[0], atol=1e-12)
            np.testing.assert_allclose(e.numpy()[i, :len(r)], e1.numpy()[0], atol=1e-12)
            np.testing.assert_allclose(a.numpy()[i], a1.numpy()[0], atol=1e-12)
