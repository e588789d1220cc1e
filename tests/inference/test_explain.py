"""Attributions and attention maps (minigrad_lm.inference.explain): integrated gradients'
completeness, agreement with finite differences, and attention maps that are the probabilities
the layers used."""
from __future__ import annotations

import numpy as np
import pytest

import minigrad_lm as mg
from minigrad_lm.engine.tensor import no_grad
from minigrad_lm.inference.explain import (
    explain_answer,
    explain_classifier,
    explain_next_token,
    explain_translation,
    gradient_x_input,
    integrated_gradients,
)
from minigrad_lm.models import GPT, GPTConfig, Seq2SeqConfig, Seq2SeqTransformer
from minigrad_lm.models.classifier import SequenceClassifier
from minigrad_lm.models.qa import QuestionAnswerer
from minigrad_lm.nn import AttentionRecorder
from minigrad_lm.nn import functional as F
from tests.helpers import to_float64


def tiny_gpt(causal: bool = True, seed: int = 0, **kw) -> GPT:
    mg.manual_seed(seed)
    cfg = dict(vocab_size=23, context_length=12, n_layer=2, n_head=2, d_model=8, causal=causal)
    return GPT(GPTConfig(**{**cfg, **kw}))


def tiny_classifier(seed: int = 0, pooling: str = "mean", device: str = "cpu"
                    ) -> SequenceClassifier:
    model = SequenceClassifier(tiny_gpt(causal=False, seed=seed), 3, pooling)
    # a larger head than training's init, so the logits differ by more than rounding
    model.classifier.weight.data[...] = np.random.default_rng(seed).standard_normal(
        model.classifier.weight.shape)
    return to_float64(model, device).eval()


def linear_output(w: np.ndarray, b: float):
    """f(e) = sum(w * e) + b per row: a linear model of the embeddings."""
    weight = mg.tensor(w)

    def f(e):
        return (e * weight).sum(axis=(1, 2)) + b
    return f


def test_token_embeddings_stand_in_for_the_lookup_of_the_ids():
    model = tiny_classifier()
    ids = np.array([[3, 7, 5], [2, 2, 9]])
    rows = mg.tensor(model.body.tok_emb.weight.numpy()[ids])
    with no_grad():
        np.testing.assert_array_equal(model(ids, np.array([3, 2]), token_embeddings=rows).numpy(),
                                      model(ids, np.array([3, 2])).numpy())
        with pytest.raises(ValueError, match=r"token_embeddings of shape \(2, 3, 4\)"):
            model.body.hidden_states(ids, token_embeddings=mg.tensor(np.zeros((2, 3, 4))))


def test_integrated_gradients_of_a_linear_model_equal_finite_difference_attributions():
    rng = np.random.default_rng(0)
    w, x, base = (rng.standard_normal((5, 4)) for _ in range(3))
    f = linear_output(w, 0.5)
    like = mg.tensor(np.zeros(1))
    values, out, out_base = integrated_gradients(f, x, base, like, steps=3, batch=2)

    def value(e):
        with no_grad():
            return float(f(mg.tensor(e[None])).item())
    # each element's attribution is what moving it alone from baseline to input changes
    occlusion = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        moved = base.copy()
        moved[i] = x[i]
        occlusion[i] = value(moved) - value(base)
    np.testing.assert_allclose(values, occlusion, rtol=1e-12, atol=1e-12)
    assert out == pytest.approx(value(x)) and out_base == pytest.approx(value(base))


def test_gradient_x_input_matches_central_differences_on_a_nonlinear_model():
    model = tiny_classifier()
    ids = np.array([3, 7, 5, 9])
    x = model.body.tok_emb.weight.numpy()[ids]

    def f(e):
        return model(np.repeat(ids[None], e.shape[0], axis=0), token_embeddings=e)[:, 1]
    values, out = gradient_x_input(f, x, model.body.tok_emb.weight)
    h = 1e-6
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += h
        minus[i] -= h
        with no_grad():
            up, down = f(mg.tensor(plus[None])).item(), f(mg.tensor(minus[None])).item()
        numeric[i] = (up - down) / (2 * h)
    np.testing.assert_allclose(values, x * numeric, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("baseline", [None, 1])
def test_integrated_gradients_are_complete_on_a_tiny_classifier(baseline, device):
    model = tiny_classifier(device=device)
    ex = explain_classifier(model, np.array([3, 7, 5, 9, 11]), target=2, steps=32, batch=5,
                            baseline=baseline)
    a = ex.attribution
    assert ex.target == 2 and a.scores.shape == (5,)
    assert abs(a.output - a.baseline_output) > 1e-3  # a gap worth closing
    assert abs(a.completeness_gap) < 1e-6 * abs(a.output - a.baseline_output) + 1e-9
    with no_grad():
        logits = model(np.array([[3, 7, 5, 9, 11]])).numpy()[0]
    assert a.output == pytest.approx(logits[2], rel=1e-12)
    assert ex.probability == pytest.approx(np.exp(logits[2]) / np.exp(logits).sum())


def test_a_max_pooled_classifier_s_gap_shrinks_with_more_steps():
    """Max pooling has kinks along the path, where quadrature is not exact: more points
    close the gap (the README quotes these sizes)."""
    model = tiny_classifier(pooling="max")
    gaps = [abs(explain_classifier(model, np.array([3, 7, 5, 9, 11]), target=2, steps=steps,
                                   batch=5, baseline=None).attribution.completeness_gap)
            for steps in (32, 512)]
    assert gaps[0] > 10 * gaps[1] > 0


def test_a_qa_model_s_span_score_and_class_logit_are_explained_completely(device):
    model = QuestionAnswerer(tiny_gpt(causal=False), 3)
    for head in (model.span, model.answer):  # larger than init, so outputs differ by more
        head.weight.data[...] = np.random.default_rng(1).standard_normal(head.weight.shape)
    model = to_float64(model, device).eval()
    ids, mask = np.array([1, 5, 6, 2, 7, 8, 9, 10, 11]), np.arange(9) >= 4
    ex = explain_answer(model, ids, mask, (5, 7), steps=32, baseline=None)
    a = ex.attribution
    assert ex.explains == "answer span" and ex.answer_tokens == (5, 7)
    assert abs(a.output - a.baseline_output) > 1e-3
    assert abs(a.completeness_gap) < 1e-6 * abs(a.output - a.baseline_output) + 1e-9
    with no_grad():
        start, end, answer = (t.numpy()[0] for t in model(ids[None], [9], mask[None]))
    assert a.output == pytest.approx(start[5] + end[7], rel=1e-12)  # the span's score
    ex = explain_answer(model, ids, mask, None, 2, steps=32, baseline=None)
    assert ex.explains == "answer class" and ex.target == 2 and ex.answer_tokens is None
    assert ex.attribution.output == pytest.approx(answer[2], rel=1e-12)
    assert abs(ex.attribution.completeness_gap) < 1e-6 * abs(
        ex.attribution.output - ex.attribution.baseline_output) + 1e-9
    with pytest.raises(ValueError, match="not within the context"):
        explain_answer(model, ids, mask, (1, 5))


def test_a_question_match_model_is_explained_with_the_word_matches_it_answered_with():
    model = to_float64(QuestionAnswerer(tiny_gpt(causal=False), 3, question_match=True)).eval()
    model.question_match.data[...] = np.random.default_rng(2).standard_normal(
        model.question_match.shape)
    ids, mask = np.array([1, 5, 6, 2, 5, 8, 6, 10, 11]), np.arange(9) >= 4
    matches = np.zeros(9, bool)
    matches[[5, 8]] = True  # not the ids 5 and 6 the question holds: words outside the vocabulary
    with no_grad():
        start, end, _ = (t.numpy()[0] for t in model(ids[None], [9], mask[None],
                                                    matches=matches[None]))
    ex = explain_answer(model, ids, mask, (5, 7), steps=32, baseline=None, matches=matches)
    assert ex.attribution.output == pytest.approx(start[5] + end[7], rel=1e-12)
    assert abs(ex.attribution.completeness_gap) < 1e-6 * abs(
        ex.attribution.output - ex.attribution.baseline_output) + 1e-9
    with pytest.raises(ValueError, match="matches for 8 positions"):
        explain_answer(model, ids, mask, (5, 7), matches=matches[:8])
    with pytest.raises(ValueError, match="pass matches"):
        explain_answer(model, ids, mask, (5, 7))


def test_gradient_x_input_explains_with_one_backward_pass():
    model = tiny_classifier()
    ex = explain_classifier(model, np.array([3, 7, 5]), method="grad_x_input")
    a = ex.attribution
    assert a.method == "grad_x_input" and a.completeness_gap is None and a.scores.shape == (3,)
    with no_grad():
        assert a.output == pytest.approx(model(np.array([[3, 7, 5]])).numpy()[0, ex.target])


def test_too_few_steps_leave_a_completeness_gap_that_more_steps_close():
    model = tiny_classifier()
    gaps = [abs(explain_classifier(model, np.array([3, 7, 5, 9]), steps=s).attribution
                .completeness_gap) for s in (1, 4, 32)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-8


def test_next_token_attributions_are_complete_and_the_prediction_is_the_argmax(device):
    model = to_float64(tiny_gpt(), device).eval()
    ids = np.array([4, 8, 15, 16])
    ex = explain_next_token(model, ids, steps=32, vocab_limit=20)
    with no_grad():
        logits = model(ids[None]).numpy()[0, -1, :20]
    assert ex.target == int(logits.argmax())
    assert abs(ex.attribution.completeness_gap) < 1e-8
    assert [p for _, p in ex.alternatives] == sorted((p for _, p in ex.alternatives),
                                                      reverse=True)


def test_explaining_leaves_the_model_as_it_was():
    model = tiny_classifier().train()
    model.body.tok_emb.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.copy() for k, v in model.state_dict().items()}
    explain_classifier(model, np.array([3, 4]), steps=2)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_targets_and_inputs_are_refused():
    model = tiny_classifier()
    with pytest.raises(ValueError, match="target class 3 is out of range"):
        explain_classifier(model, np.array([3, 4]), target=3)
    with pytest.raises(ValueError, match="longer than the model's context"):
        explain_classifier(model, np.arange(13))
    with pytest.raises(ValueError, match="does not predict the next token"):
        explain_next_token(tiny_gpt(causal=False), np.array([1, 2]))
    with pytest.raises(ValueError, match="method must be one of"):
        explain_classifier(model, np.array([3, 4]), method="saliency")


# --------------------------------------------------------------------------------------------
# attention maps


@pytest.mark.parametrize("tiled", [False, True])
def test_recorded_attention_is_what_the_layer_used(tiled):
    """Layer 0's recorded probabilities, times its values, give its attention output, from
    the blocked core and from the tiled one (which never forms the probabilities)."""
    model = to_float64(tiny_gpt()).eval()
    for layer in model.layers:
        layer.attn.tiled = tiled
    ids = np.array([[1, 5, 9, 2, 7, 3]])
    with no_grad(), AttentionRecorder() as rec:
        model(ids)
    layer = model.layers[0]
    with no_grad():
        x = model.tok_emb.weight.numpy()[ids] + model.pos_emb.embedding.weight.numpy()[:6]
        qkv = layer.attn.qkv(layer.norm1(mg.tensor(x)))
        used = F.multi_head_attention(qkv, 2, causal=True, tiled=tiled).numpy()  # (1, T, C)
    module, probs = rec.maps[0]
    assert module is layer.attn and probs.shape == (1, 2, 6, 6)
    v = qkv.numpy().reshape(1, 6, 3, 2, 4)[:, :, 2].transpose(0, 2, 1, 3)  # (1, H, T, D)
    np.testing.assert_allclose((probs @ v).transpose(0, 2, 1, 3).reshape(1, 6, 8), used,
                               rtol=1e-10, atol=1e-12)


def test_causal_maps_are_lower_triangular_rows_of_probabilities():
    ex = explain_next_token(tiny_gpt(), np.array([1, 5, 9, 2, 7]), steps=2)
    assert [m.name for m in ex.attention] == ["layers.0.attn", "layers.1.attn"]
    for m in ex.attention:
        assert m.probs.shape == (2, 5, 5) and m.kind == "self"
        np.testing.assert_allclose(m.probs.sum(axis=-1), 1.0, rtol=1e-6)
        below = np.tril(np.ones((5, 5), dtype=bool))
        assert np.all(m.probs[:, ~below] == 0) and np.all(m.probs[:, below] > 0)


def test_padding_keys_get_no_attention(device):
    model = tiny_classifier(device=device)
    ids = np.array([[3, 4, 5, 6], [7, 8, 0, 0]])
    with no_grad(), AttentionRecorder() as rec:
        model(ids, np.array([4, 2]))
    assert len(rec.maps) == 2
    for _, probs in rec.maps:
        np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=1e-12)
        assert np.all(probs[1, :, :, 2:] == 0) and np.all(probs[0] > 0)


def test_recording_changes_no_output_and_stops_with_the_block():
    model = tiny_classifier()
    ids = np.array([[3, 4, 5]])
    with no_grad():
        plain = model(ids).numpy()
        with AttentionRecorder() as rec:
            recorded = model(ids).numpy()
        model(ids)
    np.testing.assert_array_equal(plain, recorded)
    assert len(rec.maps) == 2 and not AttentionRecorder.active


def test_translation_cross_attention_covers_each_output_token_over_the_source(device):
    mg.manual_seed(0)
    model = Seq2SeqTransformer(Seq2SeqConfig(vocab_size=20, context_length=10, n_layer=2,
                                             n_head=2, d_model=8, d_ff=16, dropout=0.0))
    model.to(device)
    src = np.array([5, 6, 7, 2])
    ex = explain_translation(model, src, [8, 9], token_text=lambda i: f"w{i}")
    cross = ex.cross_attention()
    assert cross.shape == (2, 2, 3, 4)  # layers, heads, output tokens (eos last), source
    np.testing.assert_allclose(cross.sum(axis=-1), 1.0, rtol=1e-6)
    assert ex.output_tokens == ["w8", "w9", "w2"] and ex.decoder_tokens == ["w1", "w8", "w9"]
    selfs = [m for m in ex.attention if m.name.endswith("self_attn")]
    assert all(np.all(np.triu(m.probs, 1) == 0) for m in selfs)
    with no_grad():
        logits = model(src[None], np.array([[1, 8, 9]])).numpy()[0]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(ex.output_probs, p[np.arange(3), [8, 9, 2]], rtol=1e-5)


def test_options_are_checked_and_baselines_found_in_the_vocabulary():
    from minigrad_lm.data.tokenizer import CharTokenizer
    from minigrad_lm.data.trained_tokenizer import TrainedTokenizer
    from minigrad_lm.inference.explain import ExplainOptions, baseline_id, token_text

    for bad, message in (({"method": "saliency"}, "method must be one of"),
                         ({"baseline": "none"}, "baseline must be one of"),
                         ({"steps": 1001}, "--steps must be in 1..1000"),
                         ({"batch": 0}, "--batch must be >= 1")):
        with pytest.raises(ValueError, match=message):
            ExplainOptions(**bad)
    chars = CharTokenizer.from_text("abc")
    assert baseline_id(chars, "auto") is None and baseline_id(chars, "zeros") is None
    with pytest.raises(ValueError, match=r"no \[PAD\] token"):
        baseline_id(chars, "pad")
    words = TrainedTokenizer.train("word", ["good film", "bad film"])
    assert baseline_id(words, "auto") == words.token_id("[UNK]") == baseline_id(words, "unk")
    text = token_text(words)
    assert [text(i) for i in (words.cls_id, words.token_id("film"))] == ["[CLS]", "film"]
