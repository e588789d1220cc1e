"""Pretraining an encoder and fine-tuning it: ELECTRA's losses and sharing, --task mlm and
electra runs (exact resume), --init-from with its tokenizer, layer-wise lr decay, long texts."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

import minigrad_lm as mg
from minigrad_lm.data.labeled import encode_classification, truncate
from minigrad_lm.data.trained_tokenizer import TrainedTokenizer
from minigrad_lm.io.files import load_safetensors
from minigrad_lm.models import GPT, SequenceClassifier
from minigrad_lm.models.electra import (
    ElectraConfig,
    ElectraPretrainer,
    electra_losses,
    encoder_state,
    sample_replacements,
)
from minigrad_lm.nn import functional as F
from minigrad_lm.optim.optimizers import AdamW, layer_decay_groups
from minigrad_lm.optim.schedules import LRScheduler
from minigrad_lm.checkpoints.folder import read_checkpoint
from minigrad_lm.checkpoints.metrics import read_metrics
from minigrad_lm.data.masking import mask_draws, mask_tokens
from tests.cli_support import (
    TINY,
    WORDS,
    assert_one_line_error,
    run_module,
    run_train,
    synthetic_text,
)
from tests.helpers import to_float64

VOCAB, MASK_ID = 30, 4


def _tiny_electra(seed=0) -> ElectraPretrainer:
    mg.manual_seed(seed)
    config = ElectraConfig(vocab_size=VOCAB, context_length=6, n_layer=2, n_head=2, d_model=8,
                           causal=False, generator_layers=1)
    return to_float64(ElectraPretrainer(config))


def _batch(seed=0, b=2, t=6):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, size=(b, t))
    inputs, targets = mask_tokens(ids, mask_draws(rng, b, t, VOCAB), MASK_ID, 0.4)
    return inputs, targets, rng.random((b, t))


@pytest.mark.parametrize("which", [0, 1])
def test_both_electra_losses_pass_gradcheck(which):
    model = _tiny_electra()
    batch = _batch()
    # The generator's samples depend on its logits; a central difference must not change them.
    sampled = electra_losses(model, *batch)[2]

    def loss(*_):
        losses = electra_losses(model, *batch)
        assert (losses[2] == sampled).all()
        return losses[which]

    assert mg.gradcheck(loss, model.parameters(), eps=1e-6, atol=1e-6)


def test_binary_cross_entropy_matches_its_formula_and_torch():
    z = np.random.default_rng(0).standard_normal((5, 7)) * 30  # large: the stable form matters
    y = np.random.default_rng(1).random((5, 7)) < 0.5
    got = F.binary_cross_entropy_with_logits(mg.tensor(z), y).item()
    p = 1 / (1 + np.exp(-z))
    with np.errstate(divide="ignore"):
        naive = -np.mean(np.where(y, np.log(p), np.log1p(-p)))
    finite = np.isfinite(naive)
    if finite:
        assert got == pytest.approx(naive, rel=1e-9)
    torch = pytest.importorskip("torch")
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(z), torch.tensor(y, dtype=torch.float64)).item()
    assert got == pytest.approx(expected, rel=1e-12)
    assert mg.gradcheck(lambda t: F.binary_cross_entropy_with_logits(t, y), [mg.tensor(z / 30)])


def test_generator_and_encoder_share_their_embeddings_by_value():
    model = _tiny_electra()
    gen = model.generator
    assert gen.tok_emb.weight is model.tok_emb.weight and gen.head.weight is model.tok_emb.weight
    assert gen.pos_emb is model.pos_emb
    assert len(gen.layers) == 1 and len(model.layers) == 2
    # one update through the generator's loss alone moves the encoder's embedding table, and
    # the generator reads the moved values
    opt = AdamW(model.parameters(), lr=0.1)
    before = model.tok_emb.weight.numpy().copy()
    inputs, targets, u = _batch()
    gen_loss = electra_losses(model, inputs, targets, u)[0]
    opt.zero_grad()
    gen_loss.backward()
    opt.step()
    after = model.tok_emb.weight.numpy()
    assert not np.allclose(after, before)
    np.testing.assert_array_equal(gen.tok_emb.weight.numpy(), after)
    np.testing.assert_array_equal(gen.head.weight.numpy(), after)
    # a checkpoint holds the shared table once, and the encoder's part loads into a GPT
    state = model.state_dict()
    assert not any(k.startswith("generator.tok_emb") for k in state)
    body = to_float64(GPT(model.config.encoder()))
    body.load_state_dict(encoder_state(state))
    np.testing.assert_array_equal(body.tok_emb.weight.numpy(), after)


def test_replacements_are_drawn_from_the_generator_and_labelled_by_value():
    logits = np.log(np.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.2, 0.3, 0.5]]) + 1e-300)
    got = sample_replacements(logits, np.array([0.3, 0.49, 0.51]))
    np.testing.assert_array_equal(got, [1, 0, 2])  # CDFs (0, 1, 1), (.5, .5, 1), (.2, .5, 1)
    model = _tiny_electra()
    inputs, targets, u = _batch(seed=3)
    _, _, replaced, logits = electra_losses(model, inputs, targets, u)
    assert not replaced[targets == F.IGNORE_INDEX].any()  # only hidden positions can be replaced
    assert logits.shape == inputs.shape
    draws = np.random.default_rng(0).random(20_000)
    probs = np.array([0.1, 0.6, 0.3])
    counts = np.bincount(sample_replacements(np.log(np.tile(probs, (20_000, 1))), draws),
                         minlength=3) / 20_000
    np.testing.assert_allclose(counts, probs, atol=0.015)


def _corpus(tmp_path):
    path = tmp_path / "c.txt.gz"
    path.write_bytes(gzip.compress(synthetic_text(3000).encode()))
    return path


PRETRAIN = [*TINY, "--context", "16", "--eval-every", "3", "--decay-steps", "8"]


@pytest.mark.parametrize("task", ["mlm", "electra"])
def test_pretraining_resumes_exactly_mid_run(tmp_path, task):
    corpus = _corpus(tmp_path)
    common = ["--task", task, "--data", corpus, *PRETRAIN, "--dropout", "0.1"]
    assert run_train(*common, "--max-steps", "8", "--out", tmp_path / "whole") == 0
    assert run_train(*common, "--max-steps", "5", "--out", tmp_path / "split") == 0
    assert run_train(*common, "--max-steps", "8", "--out", tmp_path / "split", "--resume") == 0
    whole = load_safetensors(tmp_path / "whole" / "latest" / "model.safetensors")[0]
    split = load_safetensors(tmp_path / "split" / "latest" / "model.safetensors")[0]
    assert whole.keys() == split.keys()
    assert any(k.startswith("generator.") for k in whole) == (task == "electra")
    for name, value in whole.items():
        np.testing.assert_array_equal(split[name], value, err_msg=name)
    ckpt = read_checkpoint(str(tmp_path / "whole"))
    assert ckpt.task == task and not ckpt.model_config.causal
    last = [r for r in read_metrics(str(tmp_path / "whole")) if r["kind"] == "eval"][-1]
    if task == "electra":
        assert 0.5 < last["val_rtd_acc"] <= 1.0  # most tokens are originals
    # the token cache was built by the first run and reused by the others
    assert len(list((tmp_path / "token_cache").iterdir())) == 1


@pytest.fixture(scope="module")
def electra_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("electra")
    out = folder / "run"
    assert run_train("--task", "electra", "--data", _corpus(folder), *PRETRAIN,
                     "--max-steps", "4", "--out", out) == 0
    return out


def _labelled(tmp_path):
    pos = tmp_path / "pos.txt.gz"
    neg = tmp_path / "neg.txt.gz"
    pos.write_bytes(gzip.compress("".join(f"{w} good film\n" for w in WORDS).encode()))
    neg.write_bytes(gzip.compress("".join(f"{w} bad film\n" for w in WORDS).encode()))
    return [neg, pos]


def test_a_classifier_starts_from_the_electra_encoder_with_its_tokenizer(electra_run, tmp_path):
    clf = tmp_path / "clf"
    assert run_train("--task", "classify", "--data", *_labelled(tmp_path), "--val-every-nth",
                     "4", "--init-from", electra_run, "--out", clf, "--max-steps", "1",
                     "--lr", "1e-12", "--min-lr", "0", "--weight-decay", "0",
                     "--peak-flops", "1e11") == 0
    pretrained = load_safetensors(electra_run / "latest" / "model.safetensors")[0]
    tuned = load_safetensors(clf / "latest" / "model.safetensors")[0]
    assert not any(k.startswith(("body.generator", "body.rtd")) for k in tuned)
    for name, value in encoder_state(pretrained).items():
        np.testing.assert_allclose(tuned["body." + name], value, atol=1e-6, err_msg=name)
    assert read_checkpoint(str(clf)).tokenizer_dict == read_checkpoint(
        str(electra_run)).tokenizer_dict


@pytest.mark.parametrize("argv, named", [
    (["--tokenizer", "bpe"], "--tokenizer bpe"),
    (["--vocab-size", "99"], "--vocab-size 99"),
])
def test_init_from_refuses_another_tokenizer_by_name(electra_run, tmp_path, capsys, argv, named):
    capsys.readouterr()
    out = tmp_path / "clf"
    assert run_train("--task", "classify", "--data", *_labelled(tmp_path), "--val-every-nth",
                     "4", "--init-from", electra_run, "--out", out, *argv) == 2
    assert_one_line_error(capsys.readouterr().err, "its tokenizer is word", named)
    assert not out.exists()


def test_layer_decay_scales_each_depth_and_its_floor():
    mg.manual_seed(0)
    body = GPT(ElectraConfig(vocab_size=VOCAB, context_length=6, n_layer=2, n_head=2,
                             d_model=8, causal=False).encoder())
    model = SequenceClassifier(body, 2)
    groups = layer_decay_groups(model, 0.1, lr=1.0, decay=0.5, n_layer=2)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale_of[id(named["body.tok_emb.weight"])] == 0.125
    assert scale_of[id(named["body.layers.0.attn.qkv.weight"])] == 0.25
    assert scale_of[id(named["body.layers.1.ff.fc.bias"])] == 0.5
    assert scale_of[id(named["classifier.weight"])] == 1.0
    assert scale_of[id(named["body.ln_f.weight"])] == 1.0
    assert len(scale_of) == len(model.parameters())
    decays = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decays[id(named["body.layers.0.attn.qkv.bias"])] == 0.0
    opt = AdamW(groups, lr=1.0)
    schedule = LRScheduler(opt, warmup_steps=0, decay_steps=1, min_lr=0.1)
    opt.step_count = 5  # past the decay: every group at its own floor
    schedule.step()
    np.testing.assert_allclose(sorted({g["lr"] for g in opt.param_groups}),
                               [0.0125, 0.025, 0.05, 0.1])


def test_head_tail_truncation_keeps_both_ends_by_value():
    tokens = np.arange(100, 120)
    np.testing.assert_array_equal(truncate(tokens, 8, 6), [100, 101, 114, 115, 116, 117, 118,
                                                          119])
    np.testing.assert_array_equal(truncate(tokens, 8, 0), np.arange(100, 108))
    np.testing.assert_array_equal(truncate(tokens[:5], 8, 6), tokens[:5])  # short: untouched
    tok = TrainedTokenizer.train("word", ["w%d" % i for i in range(30)], 40)
    text = " ".join("w%d" % i for i in range(30))
    ids, lengths, cut = encode_classification([text, "w1 w2"], tok, 8, prefix=(2,), tail=6)
    words = tok.encode(text)
    np.testing.assert_array_equal(ids[0], np.concatenate([[2], words[:1], words[-6:]]))
    np.testing.assert_array_equal(lengths, [8, 3])
    assert cut == 1


def test_classify_fine_tunes_with_head_tail_and_layer_decay(electra_run, tmp_path):
    clf = tmp_path / "clf"
    assert run_train("--task", "classify", "--data", *_labelled(tmp_path), "--val-every-nth",
                     "4", "--init-from", electra_run, "--out", clf, "--epochs", "1",
                     "--layer-decay", "0.8", "--truncation", "head_tail",
                     "--peak-flops", "1e11") == 0
    ckpt = read_checkpoint(str(clf))
    assert ckpt.truncation == "head_tail"


def test_evaluate_scores_an_electra_checkpoint_by_its_generator(electra_run, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text(synthetic_text(600, seed=3))
    result = run_module("minigrad_lm.evaluate", "--ckpt", electra_run, "--data", corpus,
                        "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["task"] == "electra" and metrics["objective"] == "masked"
    assert 0 < metrics["tokens"] and 0.0 <= metrics["accuracy"] <= 1.0


@pytest.mark.parametrize("argv, message", [
    (["--task", "mlm", "--layer-decay", "0.8"], "--layer-decay applies to --task classify"),
    (["--task", "mlm", "--truncation", "head_tail"], "--truncation applies to --task classify"),
    (["--task", "mlm", "--generator-layers", "2"], "--generator-layers applies to --task "
                                                   "electra"),
])
def test_fine_tuning_and_electra_options_belong_to_their_tasks(tmp_path, capsys, argv, message):
    capsys.readouterr()
    out = tmp_path / "run"
    assert run_train("--data", _corpus(tmp_path), "--out", out, *TINY, *argv) == 2
    assert_one_line_error(capsys.readouterr().err, message)
    assert not out.exists()
