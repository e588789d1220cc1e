"""The question-answering head: loss and masking gradient-checked, padding-invariance."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm.models import GPT, GPTConfig
from minigrad_lm.models.qa import IGNORE, MASKED, QuestionAnswerer, qa_loss
from minigrad_lm.nn import functional as F
from tests.helpers import to_float64


def tiny_qa(causal=False, answers=3, seed=0, question_match=False):
    mg.manual_seed(seed)
    body = GPT(GPTConfig(vocab_size=20, context_length=12, n_layer=2, n_head=2, d_model=8,
                         causal=causal))
    return QuestionAnswerer(body, answers, question_match=question_match)


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


@pytest.mark.parametrize("question_match", [False, True])
def test_whole_model_gradcheck_through_the_masked_heads(question_match):
    model = to_float64(tiny_qa(question_match=question_match))
    ids = np.array([[2, 7, 3, 7, 10, 11, 0], [2, 8, 8, 3, 12, 0, 0]])
    lengths = np.array([6, 5])
    context = np.zeros_like(ids, bool)
    context[0, 3:6] = context[1, 4:5] = True
    matches = np.zeros_like(context)
    matches[0, 3] = True  # row 0's context token 7 is a question word
    params = model.parameters()

    def loss(*_):
        s, e, a = model(ids, lengths, context, matches=matches)
        return qa_loss(s, e, a, [4, IGNORE], [5, IGNORE], [0, 2])

    assert mg.gradcheck(loss, params)
    s, e, _ = model(ids, lengths, context, matches=matches)
    assert (s.numpy()[~context] == MASKED).all() and (e.numpy()[~context] == MASKED).all()
    if question_match:
        model.zero_grad()
        loss().backward()
        assert np.abs(model.question_match.grad.numpy()).sum() > 0


def test_the_match_vector_is_added_to_the_marked_tokens_embeddings():
    """The marks are the data's (words, data.qa.question_word_matches), not a rule on ids:
    here the question's token 9 is marked at position 6 and not at position 4."""
    model = to_float64(tiny_qa(question_match=True)).eval()
    ids = np.array([[2, 7, 9, 3, 9, 10, 9, 11]])
    context = np.arange(8)[None, :] >= 4
    marked = np.array([[0, 0, 0, 0, 0, 1, 1, 0]], np.float64)[..., None]
    got = model(ids, [8], context, matches=marked[..., 0] > 0)
    emb = model.body.tok_emb.weight.numpy()[ids] + marked * model.question_match.numpy()
    plain = QuestionAnswerer(model.body, 3)
    plain.span, plain.answer = model.span, model.answer
    want = plain(ids, [8], context, token_embeddings=mg.tensor(emb))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="pass matches"):
        model(ids, [8], context)
    with pytest.raises(ValueError, match=r"matches of shape \(1, 7\)"):
        model(ids, [8], context, matches=marked[:, :7, 0] > 0)


@pytest.mark.parametrize("question_match", [False, True])
def test_padded_batch_equals_each_example_alone(question_match):
    for causal in (False, True):
        model = to_float64(tiny_qa(causal=causal, question_match=question_match)).eval()
        rows = [np.array([2, 5, 3, 9, 10, 11, 12, 13]), np.array([2, 6, 3, 14]),
                np.array([2, 7, 7, 3, 15, 16])]
        width = max(map(len, rows))
        ids = np.zeros((3, width), np.int64)
        mask = np.zeros((3, width), bool)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            ids[i, len(r):] = 19  # padding that is a real token id: must not matter
            mask[i, list(r).index(3) + 1:len(r)] = True
        matches = mask & np.isin(ids, [5, 7, 15])  # padding is never marked
        s, e, a = model(ids, [len(r) for r in rows], mask, matches=matches)
        for i, r in enumerate(rows):
            s1, e1, a1 = model(r[None], [len(r)], mask[i:i + 1, :len(r)],
                               matches=matches[i:i + 1, :len(r)])
            np.testing.assert_allclose(s.numpy()[i, :len(r)], s1.numpy()[0], atol=1e-12)
            np.testing.assert_allclose(e.numpy()[i, :len(r)], e1.numpy()[0], atol=1e-12)
            np.testing.assert_allclose(a.numpy()[i], a1.numpy()[0], atol=1e-12)


def tiny_fact_reader(fact_tokens=4, seed=0, n_layer=2, question_match=True):
    mg.manual_seed(seed)
    body = GPT(GPTConfig(vocab_size=20, context_length=6, n_layer=n_layer, n_head=2, d_model=8,
                         causal=False))
    model = QuestionAnswerer(body, 3, fact_tokens=fact_tokens, question_match=question_match)
    rng = np.random.default_rng(seed)  # weights away from 1, so a word's place shows
    model.word_weights.data[...] = rng.uniform(0.5, 1.5, model.word_weights.shape)
    return model


def fact_batch(rng, b, u, j, vocab=20):
    """Ids (b, u, j), token counts (b, u) and question-word marks (b, u, j): each row's real
    units first (the question and at least one more where u allows), then padding units;
    padded places hold real token ids and marks, which must not matter."""
    ids = rng.integers(0, vocab, (b, u, j))
    counts = rng.integers(1, j + 1, (b, u))
    real = rng.integers(min(2, u), u + 1, b)
    counts[np.arange(u)[None, :] >= real[:, None]] = 0
    return ids, counts, rng.random((b, u, j)) < 0.4


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31), b=st.integers(1, 3), u=st.integers(1, 4),
       j=st.integers(1, 4))
def test_fact_reading_gradcheck(seed, b, u, j):
    model = to_float64(tiny_fact_reader(seed=seed, n_layer=1))
    rng = np.random.default_rng(seed)
    ids, counts, matches = fact_batch(rng, b, u, j)
    targets = rng.integers(0, 3, b)
    emb, weights, match = model.body.tok_emb.weight, model.word_weights, model.question_match

    def loss(*_):
        return F.cross_entropy(model.read_facts(ids, counts, matches), targets)

    assert mg.gradcheck(loss, [emb, weights, match])


@pytest.mark.parametrize("question_match", [False, True])
def test_whole_fact_reader_gradcheck(question_match):
    model = to_float64(tiny_fact_reader(fact_tokens=3, n_layer=1,
                                        question_match=question_match))
    ids, counts, matches = fact_batch(np.random.default_rng(1), 2, 3, 3)
    assert mg.gradcheck(
        lambda *_: F.cross_entropy(model.read_facts(ids, counts, matches), [1, 2]),
        model.parameters())


def test_a_unit_is_its_words_weighted_by_place_and_padding_is_ignored():
    """A unit sums its words' embeddings, the question-match vector added to the marked
    ones, each times its place's weights; padded places and units count for nothing."""
    model = to_float64(tiny_fact_reader()).eval()
    ids, counts, matches = fact_batch(np.random.default_rng(2), 3, 4, 4)
    got = model.read_facts(ids, counts, matches).numpy()
    emb, weights = model.body.tok_emb.weight.numpy(), model.word_weights.numpy()
    vector = model.question_match.numpy()
    for i in range(3):
        n = u_real(counts[i])
        units = np.stack([((emb[ids[i, k, :counts[i, k]]]
                            + matches[i, k, :counts[i, k], None] * vector)
                           * weights[:counts[i, k]]).sum(0) for k in range(n)])
        h = model.body.hidden_states(np.zeros((1, len(units)), np.int64),
                                     token_embeddings=mg.tensor(units[None]))
        np.testing.assert_allclose(got[i], model.answer(h[:, 0]).numpy()[0], atol=1e-12)
        # each question alone, cut to its real units: the same answer logits
        alone = model.read_facts(ids[i:i + 1, :n], counts[i:i + 1, :n],
                                 matches[i:i + 1, :n]).numpy()
        np.testing.assert_allclose(got[i], alone[0], atol=1e-12)
    with pytest.raises(ValueError, match="pass matches"):
        model.read_facts(ids, counts)


def u_real(counts):
    """The real units of a row."""
    return int((counts > 0).sum())


def test_word_order_changes_a_unit_and_a_token_model_refuses_facts():
    model = to_float64(tiny_fact_reader(question_match=False)).eval()
    ids = np.array([[[3, 4, 5, 0], [6, 7, 0, 0]]])
    swapped = ids[:, :, [1, 0, 2, 3]]
    counts = np.array([[3, 2]])
    assert not np.allclose(model.read_facts(ids, counts).numpy(),
                           model.read_facts(swapped, counts).numpy())
    try:
        tiny_qa().read_facts(ids, counts)
    except ValueError as e:
        assert "reads token windows" in str(e)
    else:
        raise AssertionError("a token-window model read facts")
