"""word2vec's continuous bag of words: the objective gradient-checked and checked on values,
the sampler's draws (subsampling, reach, special tokens, rows without neighbours), the
pretrainer's frozen layers, and --task word2vec through the CLI: it learns which words keep
company, resumes exactly, is scored by evaluate, and starts a classifier and a masked LM."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm.checkpoints.folder import read_checkpoint
from minigrad_lm.data.trained_tokenizer import FIRST_WORD_ID
from minigrad_lm.data.word2vec import (
    CONTEXT,
    NEGATIVES,
    SPAN,
    SUBSAMPLE,
    CBOWSampler,
    token_counts,
)
from minigrad_lm.io.files import load_safetensors
from minigrad_lm.models import GPTConfig
from minigrad_lm.models.gpt import INIT_STD
from minigrad_lm.models.word2vec import (
    Word2VecPretrainer,
    cbow_loss,
    cbow_scores,
    encoder_state,
)
from tests.cli_support import (
    TINY,
    assert_exact_resume,
    assert_one_line_error,
    run_module,
    run_train,
)
from tests.helpers import to_float64

VOCAB = 12


def _model(seed: int = 0, context_scale: float = 0.5) -> Word2VecPretrainer:
    mg.manual_seed(seed)
    model = Word2VecPretrainer(GPTConfig(vocab_size=VOCAB, context_length=4, n_layer=1,
                                         n_head=2, d_model=6, causal=False))
    rng = np.random.default_rng(seed)
    model.context_vectors.weight.data[...] = context_scale * rng.standard_normal((VOCAB, 6))
    return to_float64(model)


def _examples(rng: np.random.Generator, b: int, w: int, c: int):
    context = rng.integers(0, VOCAB, size=(b, w))
    kept = rng.random((b, w)) < 0.6
    kept[:, 0] = True
    weights = kept / kept.sum(axis=1, keepdims=True)
    return context, weights, rng.integers(0, VOCAB, size=(b, c))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), b=st.integers(1, 4), w=st.integers(1, 4),
       c=st.integers(1, 4))
def test_cbow_loss_gradcheck(seed, b, w, c):
    model = _model(seed)
    batch = _examples(np.random.default_rng(seed), b, w, c)
    trained = [model.tok_emb.weight, model.context_vectors.weight]
    assert mg.gradcheck(lambda *_: cbow_loss(model, *batch), trained, eps=1e-6, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), b=st.integers(1, 4), w=st.integers(1, 4),
       c=st.integers(1, 4))
def test_scores_and_loss_are_word2vecs_formulas_by_value(seed, b, w, c):
    model = _model(seed)
    context, weights, candidates = _examples(np.random.default_rng(seed), b, w, c)
    emb, vec = model.tok_emb.weight.data, model.context_vectors.weight.data
    mean = np.einsum("bw,bwd->bd", weights, emb[context])  # the kept neighbours' mean
    want = np.einsum("bd,bcd->bc", mean, vec[candidates])
    got = cbow_scores(model, context, weights, candidates).data
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # log sigma(s_true) + sum log sigma(-s_noise), averaged over the examples
    per_example = np.logaddexp(0, -want[:, 0]) + np.logaddexp(0, want[:, 1:]).sum(axis=1)
    loss = cbow_loss(model, context, weights, candidates).item()
    assert loss == pytest.approx(per_example.mean(), rel=1e-12)


def test_a_dropped_neighbour_changes_nothing():
    model = _model()
    context, weights, candidates = _examples(np.random.default_rng(3), 3, 4, 2)
    weights[:, 3] = 0
    weights /= weights.sum(axis=1, keepdims=True)
    other = context.copy()
    other[:, 3] = (other[:, 3] + 1) % VOCAB
    np.testing.assert_array_equal(cbow_scores(model, context, weights, candidates).data,
                                  cbow_scores(model, other, weights, candidates).data)


def test_only_the_embeddings_and_context_vectors_train_and_the_encoder_keeps_its_names():
    model = _model()
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"tok_emb.weight", "context_vectors.weight"}
    state = model.state_dict()
    encoder = encoder_state(state, 5)
    assert set(state) - set(encoder) == {"context_vectors.weight"}
    assert "layers.0.attn.qkv.weight" in encoder and "tok_emb.weight" in encoder


def test_the_encoder_gets_the_word_vectors_at_its_initial_spread_by_value():
    model = _model()
    model.tok_emb.weight.data[...] *= 15
    state = model.state_dict()
    got = encoder_state(state, 5)["tok_emb.weight"]
    want = np.array(state["tok_emb.weight"])
    np.testing.assert_array_equal(got[:5], want[:5])  # special tokens stay as initialised
    assert got[5:].std() == pytest.approx(INIT_STD)
    np.testing.assert_allclose(got[5:] * (want[5:].std() / INIT_STD), want[5:], rtol=1e-12)


def _zipf_corpus(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, VOCAB - 4)
    return rng.choice(np.arange(5, VOCAB), size=n, p=p / p.sum())


def test_token_counts_read_in_chunks_match_bincount(monkeypatch):
    ids = _zipf_corpus(5000).astype(np.uint16)
    monkeypatch.setattr("minigrad_lm.data.word2vec.COUNT_CHUNK", 7)
    np.testing.assert_array_equal(token_counts(ids, VOCAB), np.bincount(ids, minlength=VOCAB))


def test_keep_probabilities_and_noise_follow_word2vec_and_skip_special_tokens():
    ids = np.concatenate([_zipf_corpus(20_000), np.full(500, 3)])  # id 3 is [SEP]
    sampler = CBOWSampler.of(ids, VOCAB, specials := [0, 1, 2, 3, 4])
    counts = np.bincount(ids, minlength=VOCAB).astype(float)
    counts[specials] = 0
    f = counts[5:] / counts.sum()
    np.testing.assert_allclose(sampler.keep[5:], np.minimum(1, np.sqrt(SUBSAMPLE / f)
                                                            + SUBSAMPLE / f), rtol=1e-6)
    assert (sampler.keep[specials] == 0).all()
    noise = np.diff(sampler.noise_cdf, prepend=0)
    np.testing.assert_allclose(noise[5:], counts[5:] ** 0.75 / (counts[5:] ** 0.75).sum())
    assert (noise[specials] == 0).all()


def _neighbours(ids, pick, keep, line_end):
    """The example's neighbours as word2vec takes them, one token at a time: on each side the
    ``reach`` nearest tokens kept by their draws, within SPAN, not past a line's end."""
    chosen = []
    for step in (-1, 1):
        found = []
        for distance in range(1, SPAN + 1):
            at = pick["centre"] + step * distance
            token = ids[at]
            if token == line_end:
                break
            draw = pick["keep"][SPAN - distance if step < 0 else SPAN + distance - 1]
            if draw < keep[token]:
                found.append(at)
            if len(found) == pick["reach"]:
                break
        chosen += found
    return [ids[at] for at in sorted(chosen)]


def test_a_batch_takes_word2vecs_neighbours_by_value():
    ids = np.concatenate([_zipf_corpus(3000), [3], _zipf_corpus(3000, seed=1)])
    sampler = CBOWSampler.of(ids, VOCAB, [0, 1, 2, 3, 4], line_end=3)
    rng = np.random.default_rng(0)
    picks = sampler.draw(rng, ids, 800)
    assert ((picks["centre"] >= SPAN) & (picks["centre"] < len(ids) - SPAN)).all()
    near_the_line_end = np.abs(picks["centre"] - 3000) <= SPAN
    assert near_the_line_end.any()
    context, weights, candidates = sampler.batch(ids, picks)
    want = [_neighbours(ids, p, sampler.keep, 3) for p in picks]
    rows = [i for i, w in enumerate(want) if w]
    assert len(context) == len(rows) < 800  # an example without neighbours is left out
    for got_ctx, got_w, got_c, i in zip(context, weights, candidates, rows):
        n = len(want[i])
        assert list(got_ctx[:n]) == want[i] and (got_ctx[n:] == 0).all()
        np.testing.assert_allclose(got_w, np.r_[np.full(n, 1 / n), np.zeros(CONTEXT - n)])
        assert got_c[0] == ids[picks[i]["centre"]] and (got_c[1:] == picks[i]["noise"]).all()
    assert candidates.shape[1] == 1 + NEGATIVES and (candidates[:, 1:] >= 5).all()
    again = sampler.draw(np.random.default_rng(0), ids, 800)
    assert (again == picks).all()  # a function of the draws alone


def test_a_corpus_of_special_tokens_alone_is_refused():
    with pytest.raises(ValueError, match="no words besides special tokens"):
        CBOWSampler.of(np.full(100, 3), VOCAB, [0, 1, 2, 3, 4])


# ---- through the CLI -------------------------------------------------------------------------

TOPICS = (("cat", "dog", "horse", "cow", "sheep", "goat"),
          ("red", "blue", "green", "yellow", "pink", "grey"))
W2V = [*TINY, "--task", "word2vec", "--d-model", "16", "--batch-size", "256",
       "--val-every-nth", "10"]


def _topic_corpus(path, lines: int = 1200, seed: int = 0):
    """Lines of one topic's words each: a word's neighbours are its topic's, in no order."""
    rng = np.random.default_rng(seed)
    path.write_text("".join(" ".join(rng.choice(TOPICS[i % 2], size=12)) + "\n"
                            for i in range(lines)))
    return path


@pytest.fixture(scope="module")
def w2v_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("w2v")
    out = folder / "run"
    assert run_train(*W2V, "--data", _topic_corpus(folder / "topics.txt"), "--epochs", "40",
                     "--lr", "3e-2", "--out", out) == 0
    return out


def test_word2vec_learns_which_words_keep_company(w2v_run):
    ckpt = read_checkpoint(str(w2v_run))
    assert ckpt.task == "word2vec"
    emb = load_safetensors(w2v_run / "latest" / "model.safetensors")[0]["tok_emb.weight"]
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [[ckpt.tokenizer.token_id(w) for w in topic] for topic in TOPICS]
    sim = unit[ids[0] + ids[1]] @ unit[ids[0] + ids[1]].T
    n = len(TOPICS[0])
    within = np.concatenate([sim[:n, :n][~np.eye(n, dtype=bool)],
                             sim[n:, n:][~np.eye(n, dtype=bool)]])
    across = sim[:n, n:].ravel()
    assert within.min() > across.max()
    evals = [json.loads(line) for line in (w2v_run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "eval"]
    # at the start every score is 0: the loss is 6 log 2; a noise word of the other topic is
    # told from the true word, one of its own topic cannot be
    assert evals[-1]["val_loss"] < 0.6 * (1 + NEGATIVES) * np.log(2)


def test_word2vec_resumes_exactly_mid_run(tmp_path):
    corpus = _topic_corpus(tmp_path / "topics.txt")
    whole = assert_exact_resume([*W2V, "--data", corpus, "--eval-every", "3", "--decay-steps", "8"],
                                tmp_path)
    assert "context_vectors.weight" in whole
    fresh = load_safetensors(tmp_path / "whole" / "latest" / "model.safetensors")[0]
    assert np.abs(fresh["context_vectors.weight"]).max() > 0


def test_evaluate_scores_a_word2vec_checkpoint_on_a_file(w2v_run, tmp_path):
    other = _topic_corpus(tmp_path / "other.txt", lines=200, seed=5)
    result = run_module("minigrad_lm.evaluate", "--ckpt", w2v_run, "--data", other, "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["task"] == "word2vec" and metrics["words"] > 0
    assert metrics["loss"] < 0.7 * (1 + NEGATIVES) * np.log(2)
    again = json.loads(run_module("minigrad_lm.evaluate", "--ckpt", w2v_run, "--data", other,
                                  "--json").stdout)
    assert again == metrics  # the same words and noise every time
    text = run_module("minigrad_lm.evaluate", "--ckpt", w2v_run, "--data", other).stdout
    assert "continuous bag of words loss" in text


@pytest.mark.parametrize("task, extra", [
    ("classify", ["--epochs", "1"]),
    ("mlm", ["--max-steps", "1"]),
])
def test_a_classifier_or_masked_lm_starts_from_the_word_vectors(w2v_run, tmp_path, task,
                                                                 extra):
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    if task == "classify":
        pos.write_text("cat dog horse\ncow sheep goat\n" * 20)
        neg.write_text("red blue green\nyellow pink grey\n" * 20)
        data = ["--data", neg, pos, "--val-every-nth", "4"]
    else:
        data = ["--data", _topic_corpus(tmp_path / "t.txt", lines=100), "--val-every-nth", "10"]
    out = tmp_path / "tuned"
    assert run_train("--task", task, *data, "--init-from", w2v_run, "--out", out,
                     "--lr", "1e-12", "--min-lr", "0", "--weight-decay", "0", "--warmup-steps",
                     "1", "--batch-size", "4", "--peak-flops", "1e11", *extra) == 0
    pretrained = encoder_state(load_safetensors(w2v_run / "latest" / "model.safetensors")[0],
                               FIRST_WORD_ID)
    tuned = load_safetensors(out / "latest" / "model.safetensors")[0]
    prefix = "body." if task == "classify" else ""
    assert not any("context_vectors" in k for k in tuned)
    for name, value in pretrained.items():
        np.testing.assert_allclose(tuned[prefix + name], value, atol=1e-6, err_msg=name)
    assert (read_checkpoint(str(out)).tokenizer_dict
            == read_checkpoint(str(w2v_run)).tokenizer_dict)


@pytest.mark.parametrize("given, layer_decay, pooling", [
    ([], 0.5, "mean"), (["--layer-decay", "1"], 1.0, "mean"),
    (["--pooling", "max"], 0.5, "max")])
def test_a_classifier_from_word_vectors_is_fine_tuned_with_its_options_unless_told(
        w2v_run, tmp_path, capsys, given, layer_decay, pooling):
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("cat dog horse\n" * 12)
    neg.write_text("red blue green\n" * 12)
    out = tmp_path / "tuned"
    assert run_train("--task", "classify", "--data", neg, pos, "--val-every-nth", "4",
                     "--init-from", w2v_run, "--out", out, "--max-steps", "1", *given) == 0
    saved = json.loads((out / "train_config.json").read_text())
    assert (saved["layer_decay"], saved["pooling"]) == (layer_decay, pooling)
    assert (f"fine-tuning with --layer-decay {layer_decay} (a word2vec checkpoint's defaults "
            "where not given)") in capsys.readouterr().out
    assert read_checkpoint(str(out)).extras["pooling"] == pooling


def test_word2vec_needs_a_word_or_bpe_vocabulary(tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "run"
    assert run_train(*W2V, "--data", _topic_corpus(tmp_path / "t.txt"), "--tokenizer", "char",
                     "--out", out) == 2
    assert_one_line_error(capsys.readouterr().err, "--task word2vec learns a vector for each "
                          "word: --tokenizer word or bpe, not char")
    assert not out.exists()


def test_the_memory_estimate_counts_the_scored_candidates_not_the_vocabulary():
    """The recipe's shape with the word tokenizer's default vocabulary (30,000) fits in a few
    GiB: a word is scored against 1 + NEGATIVES context vectors, never the whole vocabulary."""
    from minigrad_lm.backend import memory
    from minigrad_lm.checkpoints.kinds import Word2VecKind
    from minigrad_lm.train.config import TrainConfig
    from minigrad_lm.train.tasks.word2vec import Word2VecTask

    cfg = TrainConfig(task="word2vec", batch_size=4096, context=256)
    config = GPTConfig(vocab_size=30000, context_length=256, n_layer=2, n_head=4, d_model=128,
                       causal=False)
    head = Word2VecKind.head(config, {})
    rows = Word2VecTask.batch_rows(type("Task", (), {"cfg": cfg})())
    nbytes, _ = memory.training_bytes(config, rows, 256, head)
    vectors = 2 * 30000 * 128 * 4  # token embeddings and context vectors, float32
    assert 4 * vectors <= nbytes < 4 << 30
