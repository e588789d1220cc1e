"""`python -m minigrad_lm.train --task classify` and `python -m minigrad_lm.classify` on a small
synthetic sentiment task, with and without a pretrained body, and their bad-input errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minigrad_lm import classify as classify_cli
from minigrad_lm.checkpoint import load_safetensors
from minigrad_lm.run_state import read_checkpoint, read_metrics
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
    assert best.task == "classify" and best.num_classes == 2
    assert best.state["best_val_loss"] == min(r["val_loss"] for r in evals)


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


def test_init_from_a_language_model_reuses_its_body_and_tokenizer(tmp_path, data):
    text = synthetic_text() + " ".join(POSITIVE + NEGATIVE) + "\n"
    (tmp_path / "lm.txt").write_text(text)
    lm = tmp_path / "lm"
    assert run_train("--data", tmp_path / "lm.txt", "--out", lm, "--max-steps", "3",
                     *TINY, "--context", "48") == 0
    clf = tmp_path / "clf"
    # A near-zero learning rate leaves the body where --init-from put it.
    assert run_train("--task", "classify", "--data", data / "train.tsv", "--val-data",
                     data / "dev.tsv", "--init-from", lm, "--out", clf, "--max-steps", "1",
                     "--lr", "1e-12", "--min-lr", "0", "--weight-decay", "0",
                     "--peak-flops", "1e11") == 0
    ckpt = read_checkpoint(str(clf))
    assert ckpt.tokenizer_dict == read_checkpoint(str(lm)).tokenizer_dict
    assert ckpt.model_config.d_model == 16 and ckpt.model_config.context_length == 48
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
    assert read_checkpoint(str(out)).num_classes == 2


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


def test_unknown_character_with_a_pretrained_tokenizer_names_the_line(tmp_path, clf_run, data,
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
    capsys.readouterr()
    assert run_train("--task", "classify", "--data", data / "train.tsv", "--val-data",
                     tmp_path / "dev.tsv", "--init-from", lm, "--out", tmp_path / "run") == 2
    assert_one_line_error(capsys.readouterr().err, "dev.tsv:7: character 'é'")


def test_classify_cli_errors(clf_run, tmp_path, capsys):
    lm = tmp_path / "lm"
    (tmp_path / "lm.txt").write_text(synthetic_text())
    assert run_train("--data", tmp_path / "lm.txt", "--out", lm, "--max-steps", "1", *TINY) == 0
    for argv, message in [
        (["--ckpt", str(lm), "some sentence"], "not a classifier"),
        (["--ckpt", str(clf_run), "a café"], "sentence 1: character 'é'"),
        (["--ckpt", str(tmp_path / "nothing"), "x"], "no checkpoint at"),
    ]:
        capsys.readouterr()
        assert classify_cli.main(argv) == 2
        assert_one_line_error(capsys.readouterr().err, message)
