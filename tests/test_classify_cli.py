"""`python -m minigrad_lm.train --task classify` and `python -m minigrad_lm.classify` on a small
synthetic sentiment task, with and without a pretrained body, and their bad-input errors."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigrad_lm import classify as classify_cli
from minigrad_lm.cli import read_sentences
from minigrad_lm.testing import line_files
from minigrad_lm.io.files import load_safetensors
from minigrad_lm.checkpoints.folder import read_checkpoint
from minigrad_lm.checkpoints.metrics import read_metrics
from tests.cli_support import (
    TINY,
    WORDS,
    assert_one_line_error,
    run_module,
    run_train,
    snapshot,
    synthetic_text,
)

POSITIVE = ("good", "great", "superb", "lovely")
NEGATIVE = ("bad", "awful", "poor", "dull")


def sentiment_rows(n: int, seed: int) -> list[tuple[str, int]]:
    """Filler words around two sentiment words of one side: separable, but only by reading
    the words."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(WORDS, size=int(rng.integers(2, 6))))
        for _ in range(2):
            word = rng.choice(POSITIVE if label else NEGATIVE)
            words.insert(int(rng.integers(len(words) + 1)), word)
        rows.append((" ".join(words), label))
    return rows


def write_tsv(path: Path, rows, header: str = "sentence\tlabel") -> Path:
    path.write_text(header + "\n" + "".join(f"{s}\t{y}\n" for s, y in rows), encoding="utf-8")
    return path


CLASSIFY = [
    "--task", "classify", "--n-layer", "1", "--n-head", "2", "--d-model", "32", "--context", "48",
    "--batch-size", "16", "--lr", "3e-3", "--warmup-steps", "10", "--log-every", "1000",
    "--peak-flops", "1e11",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sst")
    write_tsv(folder / "train.tsv", sentiment_rows(300, seed=0))
    write_tsv(folder / "dev.tsv", sentiment_rows(80, seed=1))
    return folder


@pytest.fixture(scope="module")
def clf_run(data) -> Path:
    out = data / "clf"
    assert run_train(*CLASSIFY, "--data", data / "train.tsv", "--val-data", data / "dev.tsv",
                     "--out", out, "--max-steps", "150", "--eval-every", "50") == 0
    return out


def test_classifier_learns_a_separable_task(clf_run, capsys):
    evals = [r for r in read_metrics(str(clf_run)) if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [50, 100, 150]
    assert {"val_loss", "val_acc", "train_loss", "train_acc"} <= set(evals[-1])
    assert max(r["val_acc"] for r in evals) >= 0.9
    best = read_checkpoint(str(clf_run / "best"))
    assert best.task == "classify" and best.extras["num_classes"] == 2
    assert best.state["best_metric"] == "val_acc"
    assert best.state["best_score"] == max(r["val_acc"] for r in evals)
    assert best.state["step"] == next(r["step"] for r in evals
                                      if r["val_acc"] == best.state["best_score"])


def test_classify_cli_prints_label_and_probability(clf_run, capsys):
    code = classify_cli.main(["--ckpt", str(clf_run), "the value is great", "a dull list",
                              "name of file is superb"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == 3
    labels = [int(line.split("\t")[0]) for line in out]
    probs = [float(line.split("\t")[1]) for line in out]
    assert labels == [1, 0, 1]
    assert all(0.5 <= p <= 1.0 for p in probs)


def test_classify_reads_stdin_through_python_dash_m(clf_run):
    result = run_module("minigrad_lm.classify", "--ckpt", clf_run,
                        input="a good object\nthe awful default\n")
    assert result.returncode == 0, result.stderr
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["1", "0"]


@pytest.mark.parametrize("lm_options", [[], ["--tokenizer", "word", "--val-every-nth", "10"]],
                         ids=["char", "word"])
def test_init_from_a_language_model_reuses_its_body_and_tokenizer(tmp_path, data, lm_options):
    lines = [s for s, _ in sentiment_rows(200, seed=10)]
    (tmp_path / "lm.txt").write_text("\n".join(lines) + "\n")
    lm = tmp_path / "lm"
    assert run_train("--data", tmp_path / "lm.txt", "--out", lm, "--max-steps", "3",
                     *TINY, "--context", "48", *lm_options) == 0
    clf = tmp_path / "clf"
    # A near-zero learning rate leaves the body where --init-from put it.
    assert run_train("--task", "classify", "--data", data / "train.tsv", "--val-data",
                     data / "dev.tsv", "--init-from", lm, "--out", clf, "--max-steps", "1",
                     "--lr", "1e-12", "--min-lr", "0", "--weight-decay", "0",
                     "--peak-flops", "1e11") == 0
    ckpt = read_checkpoint(str(clf))
    assert ckpt.tokenizer_dict == read_checkpoint(str(lm)).tokenizer_dict
    assert ckpt.model_config.d_model == 16 and ckpt.model_config.context_length == 48
    assert not ckpt.model_config.causal  # a causal language model starts an encoder
    lm_weights = load_safetensors(lm / "latest" / "model.safetensors")[0]
    clf_weights = load_safetensors(clf / "latest" / "model.safetensors")[0]
    for name, value in lm_weights.items():
        assert np.allclose(clf_weights["body." + name], value, atol=1e-6), name
    assert {"classifier.weight", "classifier.bias"} <= set(clf_weights)


def test_csv_with_text_label_header(tmp_path):
    rows = sentiment_rows(40, seed=2)
    csv_text = "text,label\n" + "".join(f'"{s}",{y}\n' for s, y in rows)
    (tmp_path / "train.csv").write_text(csv_text)
    (tmp_path / "dev.csv").write_text(csv_text)
    out = tmp_path / "run"
    assert run_train(*CLASSIFY, "--data", tmp_path / "train.csv", "--val-data",
                     tmp_path / "dev.csv", "--out", out, "--max-steps", "2") == 0
    assert read_checkpoint(str(out)).extras["num_classes"] == 2


BAD = {
    "malformed row": ("train.tsv", "sentence\tlabel\nfine words\t1\nno label here\n",
                      "train.tsv:3: expected 2 fields, found 1"),
    "label not an integer": ("train.tsv", "sentence\tlabel\nfine words\tpositive\n",
                             "train.tsv:2: label 'positive' is not an integer"),
    "missing header column": ("dev.tsv", "text\tlabel\nfine words\t1\n",
                              "dev.tsv:1: header lacks column(s) 'sentence'"),
    "missing file": (None, None, "dev.tsv: no such file"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_classification_files(case, tmp_path, capsys):
    name, content, message = BAD[case]
    write_tsv(tmp_path / "train.tsv", sentiment_rows(10, seed=3))
    if name is not None:
        write_tsv(tmp_path / "dev.tsv", sentiment_rows(10, seed=4))
        (tmp_path / name).write_text(content)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert run_train(*CLASSIFY, "--data", tmp_path / "train.tsv", "--val-data",
                     tmp_path / "dev.tsv", "--out", tmp_path / "run") == 2
    assert_one_line_error(capsys.readouterr().err, message)
    assert snapshot(tmp_path) == before


def test_text_a_pretrained_tokenizer_never_saw_is_read_as_unknown(tmp_path, clf_run, data,
                                                                  capsys):
    rows = sentiment_rows(5, seed=5) + [("a great café", 1)]
    write_tsv(tmp_path / "dev.tsv", rows)
    capsys.readouterr()
    assert run_train("--task", "classify", "--data", data / "train.tsv", "--val-data",
                     tmp_path / "dev.tsv", "--init-from", clf_run, "--out",
                     tmp_path / "run") == 2
    # clf_run is a classifier: refused before its tokenizer is even used.
    assert_one_line_error(capsys.readouterr().err, "a classify checkpoint")

    lm = tmp_path / "lm"
    (tmp_path / "lm.txt").write_text(synthetic_text() + " ".join(POSITIVE + NEGATIVE) + "\n")
    assert run_train("--data", tmp_path / "lm.txt", "--out", lm, "--max-steps", "1", *TINY,
                     "--context", "48") == 0
    assert run_train("--task", "classify", "--data", data / "train.tsv", "--val-data",
                     tmp_path / "dev.tsv", "--init-from", lm, "--out", tmp_path / "run",
                     "--max-steps", "1", "--peak-flops", "1e11") == 0
    tokenizer = read_checkpoint(str(tmp_path / "run")).tokenizer
    assert tokenizer.decode(tokenizer.encode("café")) == "caf\ufffd"


def test_classify_reads_a_file_in_its_encoding(clf_run, tmp_path, capsys):
    (tmp_path / "reviews.txt").write_bytes("a great café\n\nthe awful default\n".encode("latin-1"))
    assert classify_cli.main(["--ckpt", str(clf_run), "--file", str(tmp_path / "reviews.txt"),
                              "--encoding", "latin-1"]) == 0
    labels = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert labels == ["1", "", "0"]  # the blank line keeps its place


def test_classify_cli_errors(clf_run, tmp_path, capsys):
    (tmp_path / "latin.txt").write_bytes("fine\ncafé\n".encode("latin-1"))
    lm = tmp_path / "lm"
    (tmp_path / "lm.txt").write_text(synthetic_text())
    assert run_train("--data", tmp_path / "lm.txt", "--out", lm, "--max-steps", "1", *TINY) == 0
    for argv, message in [
        (["--ckpt", str(lm), "some sentence"], "not a classifier"),
        (["--ckpt", str(tmp_path / "nothing"), "x"], "no checkpoint at"),
        (["--ckpt", str(clf_run), "--file", str(tmp_path / "latin.txt")],
         "latin.txt:2: not valid utf-8 (byte 0xe9); give the file's encoding with --encoding"),
        (["--ckpt", str(clf_run), "--file", str(tmp_path / "latin.txt"), "x"],
         "give sentences as arguments or --file, not both"),
    ]:
        capsys.readouterr()
        assert classify_cli.main(argv) == 2
        assert_one_line_error(capsys.readouterr().err, message)


# --------------------------------------------------------------------------------------------
# Real-data features: files per class, encodings, learned tokenizers, epochs, evaluation
# --------------------------------------------------------------------------------------------


def write_class_files(folder: Path, n: int = 60, seed: int = 6) -> list[Path]:
    """Movie-Review layout: one Latin-1 file of sentences per class."""
    rows = sentiment_rows(n, seed)
    paths = [folder / "neg.txt", folder / "pos.txt"]
    for label, path in enumerate(paths):
        lines = [s + (" café" if i % 3 == 0 else "") for i, (s, y) in enumerate(rows)
                 if y == label]
        path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return paths


def test_class_files_encoding_word_tokenizer_and_epochs(tmp_path, capsys):
    import tokenizers

    neg, pos = write_class_files(tmp_path)
    out = tmp_path / "run"
    capsys.readouterr()
    assert run_train(*CLASSIFY, "--data", neg, pos, "--val-every-nth", "5", "--encoding",
                     "latin-1", "--tokenizer", "word", "--epochs", "3", "--out", out) == 0
    printed = capsys.readouterr().out
    rows = sum(1 for p in (neg, pos) for n, _ in enumerate(p.read_bytes().splitlines(), 1)
               if n % 5)
    per_epoch = -(-rows // 16)
    assert f"training {3 * per_epoch} steps (3 epochs of {per_epoch})" in printed
    assert "val (every 5th line held out)" in printed
    evals = [r for r in read_metrics(str(out)) if r["kind"] == "eval"]
    assert evals[-1]["step"] == 3 * per_epoch and len(evals) >= 3  # at least once an epoch
    opened = tokenizers.Tokenizer.from_file(str(out / "best" / "tokenizer.json"))
    assert opened.token_to_id("café") is not None and opened.token_to_id("[CLS]") == 2
    ckpt = read_checkpoint(str(out))
    assert ckpt.tokenizer.kind == "word" and not ckpt.model_config.causal


def test_an_epoch_visits_every_row_once_in_a_seeded_order(tmp_path):
    from minigrad_lm.train.config import TrainConfig
    from minigrad_lm.train.tasks.classify import ClassifyTask

    neg, pos = write_class_files(tmp_path, n=40)
    cfg = TrainConfig(task="classify", data=[str(neg), str(pos)], val_every_nth=4,
                      encoding="latin-1", context=48)
    task = ClassifyTask(cfg, None, None)
    n, size = task.train_rows, 7
    picks = np.concatenate([task.draw(None, size, step) for step in range(3 * n // size + 1)])
    for epoch in range(3):
        assert sorted(picks[epoch * n:(epoch + 1) * n].tolist()) == list(range(n))
    assert picks[:n].tolist() != picks[n:2 * n].tolist()  # a new order each epoch
    again = ClassifyTask(cfg, None, None)
    assert again.draw(None, size, 5).tolist() == task.draw(None, size, 5).tolist()


def test_resuming_mid_epoch_ends_where_the_uninterrupted_run_does(tmp_path):
    train, dev = write_tsv(tmp_path / "train.tsv", sentiment_rows(70, 7)), \
        write_tsv(tmp_path / "dev.tsv", sentiment_rows(20, 8))
    common = [*CLASSIFY, "--data", train, "--val-data", dev, "--decay-steps", "15",
              "--dropout", "0.2", "--eval-every", "4"]
    assert run_train(*common, "--epochs", "3", "--out", tmp_path / "whole") == 0
    assert run_train(*common, "--max-steps", "7", "--out", tmp_path / "split") == 0  # epoch 2
    assert run_train(*common, "--epochs", "3", "--out", tmp_path / "split", "--resume") == 0
    whole = load_safetensors(tmp_path / "whole" / "latest" / "model.safetensors")[0]
    split = load_safetensors(tmp_path / "split" / "latest" / "model.safetensors")[0]
    for name, value in whole.items():
        np.testing.assert_array_equal(split[name], value, err_msg=name)


def test_word_dropout_hides_words_only_at_its_rate():
    from minigrad_lm.train.tasks.classify import drop_words

    ids = np.random.default_rng(0).integers(5, 100, size=(200, 50))
    ids[:, 0], ids[:, -10:] = 2, 0  # a [CLS] first, padding last
    dropped = drop_words(ids, 0.25, 1, np.random.default_rng(1))
    np.testing.assert_array_equal(dropped[:, 0], 2)
    np.testing.assert_array_equal(dropped[:, -10:], 0)
    words = dropped[:, 1:-10]
    changed = words != ids[:, 1:-10]
    assert (words[changed] == 1).all() and changed.mean() == pytest.approx(0.25, abs=0.01)
    np.testing.assert_array_equal(drop_words(ids, 0.0, 1, np.random.default_rng(1)), ids)


def test_word_dropout_run_resumes_exactly(tmp_path):
    train, dev = write_tsv(tmp_path / "train.tsv", sentiment_rows(40, 7)), \
        write_tsv(tmp_path / "dev.tsv", sentiment_rows(10, 8))
    plain = [*CLASSIFY, "--data", train, "--val-data", dev, "--decay-steps", "6",
             "--tokenizer", "word", "--eval-every", "3", "--max-steps", "6"]
    common = [*plain, "--word-dropout", "0.5"]
    assert run_train(*common, "--max-steps", "6", "--out", tmp_path / "whole") == 0
    assert run_train(*common, "--max-steps", "3", "--out", tmp_path / "split") == 0
    assert run_train(*common, "--max-steps", "6", "--out", tmp_path / "split", "--resume") == 0
    whole = load_safetensors(tmp_path / "whole" / "latest" / "model.safetensors")[0]
    split = load_safetensors(tmp_path / "split" / "latest" / "model.safetensors")[0]
    assert run_train(*plain, "--word-dropout", "0", "--out", tmp_path / "plain") == 0
    without = load_safetensors(tmp_path / "plain" / "latest" / "model.safetensors")[0]
    for name, value in whole.items():
        np.testing.assert_array_equal(split[name], value, err_msg=name)
    assert not np.array_equal(without["classifier.weight"], whole["classifier.weight"])


def test_a_run_saved_before_word_dropout_resumes_without_it(tmp_path):
    import hashlib
    import json

    train, dev = write_tsv(tmp_path / "train.tsv", sentiment_rows(40, 7)), \
        write_tsv(tmp_path / "dev.tsv", sentiment_rows(10, 8))
    common = [*CLASSIFY, "--data", train, "--val-data", dev, "--decay-steps", "6",
              "--tokenizer", "word", "--eval-every", "3"]
    assert run_train(*common, "--word-dropout", "0", "--max-steps", "6",
                     "--out", tmp_path / "whole") == 0
    old = tmp_path / "old"
    assert run_train(*common, "--word-dropout", "0", "--max-steps", "3", "--out", old) == 0
    for folder in (old / "latest", old / "best"):  # as a run of format 1 saved it then
        state = json.loads((folder / "state.json").read_text())
        del state["train_config"]["word_dropout"]
        (folder / "state.json").write_text(json.dumps(state))
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "version": 1}))
        sums = json.loads((folder / "checksums.json").read_text())
        for name in ("state.json", "config.json"):
            sums[name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        (folder / "checksums.json").write_text(json.dumps(sums))
    assert run_train("--out", old, "--resume", "--max-steps", "6") == 0
    whole = load_safetensors(tmp_path / "whole" / "latest" / "model.safetensors")[0]
    resumed = load_safetensors(old / "latest" / "model.safetensors")[0]
    for name, value in whole.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_a_classifier_stuck_at_the_majority_class_is_warned_about(tmp_path, capsys):
    rows = sentiment_rows(40, 9)
    train = write_tsv(tmp_path / "train.tsv", [(s, 1) for s, _ in rows[:30]] + rows[30:])
    dev = write_tsv(tmp_path / "dev.tsv", [(s, 1) for s, _ in rows[:10]])
    capsys.readouterr()
    assert run_train(*CLASSIFY, "--data", train, "--val-data", dev, "--max-steps", "2",
                     "--out", tmp_path / "run") == 0
    out = capsys.readouterr().out
    assert "majority-class baseline: val accuracy 100.0%" in out
    assert "warning: the best val accuracy, " in out and "has not learned the task" in out


def test_cls_pooling_on_a_bpe_vocabulary(tmp_path, data):
    out = tmp_path / "run"
    assert run_train(*CLASSIFY, "--data", data / "train.tsv", "--val-data", data / "dev.tsv",
                     "--tokenizer", "bpe", "--vocab-size", "300", "--pooling", "cls",
                     "--max-steps", "3", "--out", out) == 0
    ckpt = read_checkpoint(str(out))
    assert ckpt.extras["pooling"] == "cls" and ckpt.tokenizer.kind == "bpe"
    model = ckpt.build_model()
    labels, _ = classify_cli.predict(model, ckpt.tokenizer, ["a good film", "an awful one"])
    assert labels.shape == (2,)


@pytest.mark.parametrize("argv, message", [
    (["--pooling", "cls", "--tokenizer", "char"], "--pooling cls needs a [CLS] token"),
    (["--pooling", "cls", "--attention", "causal"], "--pooling cls needs --attention "
     "bidirectional"),
    (["--val-every-nth", "3"], "--val-data and --val-every-nth both say"),
    (["--epochs", "2", "--max-steps", "5"], "--epochs 2 and --max-steps 5 both set"),
    (["--encoding", "latin-9000"], "--encoding 'latin-9000': not an encoding"),
    (["--word-dropout", "0.1", "--tokenizer", "char"], "--word-dropout replaces words by [UNK]"),
    (["--word-dropout", "1"], "--word-dropout must be"),
])
def test_bad_classification_options(data, tmp_path, capsys, argv, message):
    capsys.readouterr()
    assert run_train(*CLASSIFY, "--data", data / "train.tsv", "--val-data", data / "dev.tsv",
                     "--out", tmp_path / "run", *argv) == 2
    assert_one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "run").exists()


def test_lm_options_that_only_classification_has(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text(synthetic_text())
    for argv, message in [(["--epochs", "2"], "--epochs applies to --task word2vec or classify"),
                          (["--word-dropout", "0.1"], "--word-dropout applies to --task classify")]:
        capsys.readouterr()
        assert run_train("--data", corpus, "--out", tmp_path / "run", *TINY, *argv) == 2
        assert_one_line_error(capsys.readouterr().err, message)


def test_evaluate_a_classifier_and_a_language_model(clf_run, data, tmp_path):
    import json

    result = run_module("minigrad_lm.evaluate", "--ckpt", clf_run, "--data", data / "dev.tsv",
                        "--json")
    assert result.returncode == 0, result.stderr
    m = json.loads(result.stdout)
    assert m["task"] == "classify" and m["rows"] == 80
    best = [r for r in read_metrics(str(clf_run)) if r["kind"] == "eval"
            and r["step"] == read_checkpoint(str(clf_run)).state["step"]][0]
    assert m["accuracy"] == best["val_acc"] and m["loss"] == pytest.approx(best["val_loss"],
                                                                         rel=1e-5)
    line = run_module("minigrad_lm.evaluate", "--ckpt", clf_run, "--data", data / "dev.tsv")
    assert line.stdout.startswith(f"{data / 'dev.tsv'}: 80 rows | loss ") and "accuracy" in \
        line.stdout

    corpus = tmp_path / "c.txt"
    corpus.write_text(synthetic_text())
    lm = tmp_path / "lm"
    assert run_train("--data", corpus, "--out", lm, "--max-steps", "2", *TINY,
                     "--tokenizer", "word") == 0
    result = run_module("minigrad_lm.evaluate", "--ckpt", lm, "--data", corpus, "--json")
    assert result.returncode == 0, result.stderr
    m = json.loads(result.stdout)
    assert m["task"] == "lm" and m["tokens"] % 16 == 0
    assert m["perplexity"] == pytest.approx(np.exp(m["loss"])) and 0 <= m["accuracy"] <= 1
    bad = run_module("minigrad_lm.evaluate", "--ckpt", clf_run, "--data", tmp_path / "none.tsv")
    assert bad.returncode == 2
    assert_one_line_error(bad.stderr, "none.tsv: no such file")


def test_classify_into_a_closed_pipe_stops_quietly(clf_run, tmp_path):
    import subprocess
    import sys

    (tmp_path / "many.txt").write_text("a good film\n" * 20000)
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    shell = (f"{sys.executable} -m minigrad_lm.classify --ckpt {clf_run} --file "
             f"{tmp_path / 'many.txt'} | head -1")
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env,
                            timeout=300, check=False)
    assert result.stdout.count("\n") == 1 and result.stderr == ""


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(case=line_files(WORDS + POSITIVE + NEGATIVE), stdin=st.booleans())
def test_classify_prints_one_line_per_input_line(clf_run, tmp_path_factory, monkeypatch, capsys,
                                                 case, stdin):
    """Whatever the line endings, BOM, blank lines or gzip, from a file or stdin: line n of the
    output is the label of line n of the input, or empty for a blank line."""
    lines, raw = case
    path = tmp_path_factory.mktemp("lines") / "in.txt"
    path.write_bytes(raw)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    capsys.readouterr()
    status = classify_cli.main(["--ckpt", str(clf_run), "--file", "-" if stdin else str(path)])
    out, err = capsys.readouterr()
    if not any(line.strip() for line in lines):
        assert status == 2
        assert_one_line_error(err, "no sentences")
        return
    assert status == 0, err
    printed = out.split("\n")
    assert printed[-1] == "" and len(printed) - 1 == len(lines), (lines, out)
    texts = [line for line in lines if line.strip()]
    assert classify_cli.main(["--ckpt", str(clf_run), *texts]) == 0
    alone = iter(capsys.readouterr().out.splitlines())
    for line, result in zip(lines, printed, strict=False):
        assert result == (next(alone) if line.strip() else "")


def test_read_sentences_keeps_blank_lines_in_place_and_names_each(tmp_path):
    """One reader for classify, translate and explain: line n of the input is item n."""
    path = tmp_path / "lines.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\n\r\n  \nfour")
    lines, names = read_sentences([], str(path), "utf-8")
    assert lines == ["one", "", "  ", "four"]
    assert names == [f"{path}:{n}" for n in range(1, 5)]
    assert read_sentences(["a", "b"], None, "utf-8") == (["a", "b"], ["argument 1",
                                                                       "argument 2"])
    with pytest.raises(ValueError, match="arguments or --file, not both"):
        read_sentences(["a"], str(path), "utf-8")
