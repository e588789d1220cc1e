"""Masked language modelling (`--task mlm`, or `--task lm --attention bidirectional`): the
masking, the run, its checkpoint and what the other commands do with it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigrad_lm as mg
from minigrad_lm.checkpoints.folder import read_checkpoint
from minigrad_lm.checkpoints.metrics import read_metrics
from minigrad_lm.data.masking import mask_draws, mask_tokens
from minigrad_lm.data.trained_tokenizer import FIRST_WORD_ID
from minigrad_lm.inference import scoring
from minigrad_lm.inference.scoring import masked_logits
from minigrad_lm.io.files import load_safetensors
from minigrad_lm.models import GPT, GPTConfig
from minigrad_lm.nn import functional as F
from minigrad_lm.nn.functional import IGNORE_INDEX as IGNORE
from tests.cli_support import (
    TINY,
    WORDS,
    assert_exact_resume,
    assert_one_line_error,
    run_module,
    run_train,
)
from tests.helpers import to_float64

MASK_ID, VOCAB = 4, 60
MASKED = ["--attention", "bidirectional", "--tokenizer", "word"]


def _ids(shape, seed, specials=0.2):
    rng = np.random.default_rng(seed)
    ids = rng.integers(FIRST_WORD_ID, VOCAB, size=shape)
    return np.where(rng.random(shape) < specials, rng.integers(0, FIRST_WORD_ID, size=shape), ids)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 20), st.floats(0.01, 0.99), st.integers(0, 2**32 - 1))
def test_masking_hides_words_only_and_scores_exactly_the_hidden(b, t, prob, seed):
    ids = _ids((b, t), seed)
    inputs, targets = mask_tokens(ids, mask_draws(np.random.default_rng(seed), b, t, VOCAB),
                                  MASK_ID, prob)
    picked = targets != IGNORE
    np.testing.assert_array_equal(targets[picked], ids[picked])
    assert (ids[picked] >= FIRST_WORD_ID).all()  # special tokens are never picked
    np.testing.assert_array_equal(inputs[~picked], ids[~picked])  # the rest is untouched
    changed = inputs[picked]
    assert ((changed == MASK_ID) | (changed >= FIRST_WORD_ID)).all()
    assert picked.any() == (ids >= FIRST_WORD_ID).any()  # a batch with a word scores one


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(1, 700), st.integers(2, 12), st.integers(1, 300), st.integers(1, 300),
       st.floats(0.01, 0.5), st.integers(0, 2**32 - 1))
def test_masked_scoring_hides_the_same_tokens_whatever_the_batch_size(n, context, b1, b2, prob,
                                                                     seed):
    """A window's masking comes from its own draws: the tokens hidden, and so every score,
    are the same for any --batch-size (and any split of the windows into batches)."""
    ids = _ids((n * context,), seed)
    hidden = []

    def model_scores(model, inputs, targets):  # stands in for score_masked: records the masks
        assert (targets != IGNORE).any()
        hidden.append((inputs.copy(), targets.copy()))
        return 0.0, 0, int((targets != IGNORE).sum())

    tokenizer = type("Tok", (), {"mask_id": MASK_ID, "vocab_size": VOCAB})()
    results = []
    for batch in (b1, b2):
        hidden.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(scoring, "score_masked", model_scores)
            results.append(scoring.score_masked_lm(None, ids, context, batch, tokenizer, prob,
                                                   seed))
        inputs, targets = (np.concatenate([h[i] for h in hidden]) for i in (0, 1))
        scored = (targets != IGNORE).any(axis=1)  # the windows with a hidden token
        results.append((inputs[scored], targets[scored]))
    assert results[0] == results[2]
    for a, b in zip(results[1], results[3], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    return _cyclic_corpus(tmp_path_factory.mktemp("mlm_eval") / "c.txt", lines=60)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(st.integers(1, 40), st.integers(1, 40))
def test_training_evaluation_hides_the_same_tokens_whatever_the_batch_size(small_corpus, b1, b2):
    """The val loss and accuracy of --task mlm's evaluation during training are a function of
    the weights and the seed: --batch-size, a speed knob, changes neither."""
    from minigrad_lm.train.config import TrainConfig
    from minigrad_lm.train.tasks import make_task

    def metrics(batch_size):
        cfg = TrainConfig(task="mlm", data=str(small_corpus), batch_size=batch_size,
                          eval_batches=2, context=8, n_layer=1, d_model=8, n_head=2)
        task = make_task(cfg)
        mg.manual_seed(0)
        return task.evaluate(GPT(task.model_config(None)))

    one, other = metrics(b1), metrics(b2)
    assert one.keys() == other.keys()
    for key in one:
        assert one[key] == pytest.approx(other[key], rel=1e-5), key


def test_masking_follows_berts_shares():
    ids = _ids((400, 64), seed=1, specials=0.0)
    inputs, targets = mask_tokens(ids, mask_draws(np.random.default_rng(2), 400, 64, VOCAB),
                                  MASK_ID, 0.15)
    picked = targets != IGNORE
    assert picked.mean() == pytest.approx(0.15, abs=0.01)
    hidden, kept = inputs[picked] == MASK_ID, inputs[picked] == ids[picked]
    assert hidden.mean() == pytest.approx(0.8, abs=0.02)
    # kept: the 10% left alone, and the 1/56 of the 10% whose random draw is the same token
    assert kept.mean() == pytest.approx(0.1 + 0.1 / (VOCAB - FIRST_WORD_ID), abs=0.015)


def test_masked_logits_are_the_full_logits_of_the_hidden_tokens(device):
    """Values (which rows reach the output layer) and float64 gradients of the masked loss."""
    mg.manual_seed(2)
    model = to_float64(GPT(GPTConfig(vocab_size=VOCAB, context_length=6, n_layer=1, n_head=2,
                                     d_model=4, causal=False)), device)
    ids = _ids((2, 6), seed=3)
    inputs, targets = mask_tokens(ids, mask_draws(np.random.default_rng(4), 2, 6, VOCAB),
                                  MASK_ID, 0.5)
    picked = targets != IGNORE
    assert 0 < picked.sum() < picked.size
    logits, scored = masked_logits(model, inputs, targets)
    np.testing.assert_allclose(logits.numpy(), model(inputs).numpy()[picked], rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_array_equal(scored, targets[picked])
    assert mg.gradcheck(lambda *ps: F.cross_entropy(*masked_logits(model, inputs, targets)),
                        model.parameters())


def _cyclic_corpus(path, lines=150):
    """Each word follows one word and precedes one: a hidden word is told by its neighbours."""
    words = [WORDS[i % len(WORDS)] for i in range(lines * 8)]
    path.write_text("\n".join(" ".join(words[i:i + 8]) for i in range(0, len(words), 8)) + "\n")
    return path


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlm")
    corpus = _cyclic_corpus(folder / "c.txt")
    out = folder / "run"
    assert run_train("--data", corpus, "--out", out, *TINY, *MASKED, "--max-steps", "400",
                     "--eval-every", "200", "--lr", "1e-2", "--batch-size", "16",
                     "--d-model", "32") == 0
    return corpus, out


def test_a_masked_language_model_learns_to_fill_in_words(mlm_run):
    _, out = mlm_run
    evals = [r for r in read_metrics(str(out)) if r["kind"] == "eval"]
    assert evals[-1]["val_acc"] > 0.4, evals  # chance: 1 in 20 words
    ckpt = read_checkpoint(str(out))
    assert ckpt.task == "mlm" and not ckpt.model_config.causal
    assert ckpt.tokenizer.mask_id == MASK_ID


def test_evaluate_scores_the_hidden_tokens_generate_and_export_refuse(mlm_run, tmp_path):
    corpus, out = mlm_run
    result = run_module("minigrad_lm.evaluate", "--ckpt", out, "--data", corpus, "--json")
    assert result.returncode == 0, result.stderr
    m = json.loads(result.stdout)
    assert m["objective"] == "masked" and 0 < m["tokens"] < 0.3 * 150 * 9
    assert m["accuracy"] > 0.4 and m["perplexity"] == pytest.approx(np.exp(m["loss"]))
    again = json.loads(run_module("minigrad_lm.evaluate", "--ckpt", out, "--data", corpus,
                                  "--json").stdout)
    assert again == m  # the same tokens are hidden each time
    gen = run_module("minigrad_lm.generate", "--ckpt", out, "--prompt", "the")
    assert gen.returncode != 0 and gen.stdout == ""
    assert_one_line_error(gen.stderr, "a masked language model", "cannot continue a prompt")
    export = run_module("minigrad_lm.export", "--ckpt", out, "--to-hf", tmp_path / "hf")
    assert export.returncode != 0 and not (tmp_path / "hf").exists()
    assert_one_line_error(export.stderr, "causal=False")


def test_a_masked_language_model_starts_a_classifier(mlm_run, tmp_path):
    _, out = mlm_run
    rows = [(f"{' '.join(WORDS[i:i + 4])} good", 1) for i in range(10)] + \
        [(f"{' '.join(WORDS[i:i + 4])} bad", 0) for i in range(10)]
    tsv = tmp_path / "t.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    clf = tmp_path / "clf"
    assert run_train("--task", "classify", "--data", tsv, "--val-data", tsv, "--init-from", out,
                     "--out", clf, "--max-steps", "1", "--lr", "1e-12", "--min-lr", "0",
                     "--weight-decay", "0", "--peak-flops", "1e11") == 0
    lm_weights = load_safetensors(out / "latest" / "model.safetensors")[0]
    clf_weights = load_safetensors(clf / "latest" / "model.safetensors")[0]
    for name, value in lm_weights.items():
        assert np.allclose(clf_weights["body." + name], value, atol=1e-6), name


def test_resuming_a_masked_language_model_is_exact(tmp_path):
    corpus = _cyclic_corpus(tmp_path / "c.txt", lines=60)
    common = ["--data", corpus, *TINY, *MASKED, "--dropout", "0.1", "--eval-every", "3",
              "--decay-steps", "8"]
    assert_exact_resume(common, tmp_path, stop=5)


@pytest.mark.parametrize("argv, message", [
    (["--attention", "bidirectional", "--tokenizer", "char"],
     "needs a [MASK] token: --tokenizer word or bpe, not char"),
    ([*MASKED, "--mask-prob", "1"], "--mask-prob must be"),
])
def test_bad_masked_language_model_options(tmp_path, capsys, argv, message):
    corpus = _cyclic_corpus(tmp_path / "c.txt", lines=20)
    capsys.readouterr()
    assert run_train("--data", corpus, "--out", tmp_path / "run", *TINY, *argv) == 2
    assert_one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "run").exists()
