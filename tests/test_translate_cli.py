"""`python -m minigrad_lm.train --task translate` and `python -m minigrad_lm.translate` on a tiny
copy task: learning, BLEU, checkpoints, exact resume, and the bad-input errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("sacrebleu")

from minigrad_lm import translate as translate_cli  # noqa: E402
from minigrad_lm.checkpoints.folder import read_checkpoint  # noqa: E402
from minigrad_lm.checkpoints.metrics import read_metrics  # noqa: E402
from minigrad_lm.data.text import read_lines  # noqa: E402
from minigrad_lm.data.trained_tokenizer import TrainedTokenizer  # noqa: E402
from minigrad_lm.inference.scoring import bleu  # noqa: E402
from minigrad_lm.testing import line_files  # noqa: E402
from minigrad_lm.train.config import TrainConfig  # noqa: E402
from minigrad_lm.train.tasks.translate import TranslateTask  # noqa: E402
from tests.cli_support import assert_one_line_error, run_module, run_train, snapshot  # noqa: E402

WORDS = ("alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta")
MODEL = ["--tokenizer", "word", "--n-layer", "1", "--n-head", "2", "--d-model", "32",
         "--context", "12", "--batch-tokens", "300", "--positional", "sinusoidal",
         "--warmup-steps", "10", "--lr", "5e-3", "--label-smoothing", "0", "--beam-size", "1",
         "--dropout", "0", "--log-every", "1000", "--peak-flops", "1e11", "--eval-batches", "2"]


def sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 6)))) for _ in range(n)]


def write_pair(folder: Path, name: str, src: list[str], tgt: list[str], gz: bool = False):
    paths = (folder / f"{name}.src", folder / (f"{name}.tgt.gz" if gz else f"{name}.tgt"))
    paths[0].write_text("\n".join(src) + "\n", encoding="utf-8")
    data = ("\n".join(tgt) + "\n").encode()
    paths[1].write_bytes(gzip.compress(data) if gz else data)
    return paths


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("copy")
    train, val = sentences(400, 1), sentences(30, 2)
    return write_pair(folder, "train", train, train, gz=True), write_pair(folder, "val", val, val)


def args(data, out, *extra):
    (train_src, train_tgt), (val_src, val_tgt) = data
    return ["--task", "translate", "--data", train_src, train_tgt, "--val-data", val_src,
            val_tgt, "--out", out, *MODEL, *extra]


@pytest.fixture(scope="module")
def copy_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "copy"
    assert run_train(*args(data, out, "--max-steps", "200", "--decay-steps", "200",
                           "--eval-every", "100")) == 0
    return out


def test_a_tiny_copy_task_is_learned_to_high_bleu(copy_run, data):
    evals = [r for r in read_metrics(copy_run) if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [100, 200]
    assert evals[-1]["val_bleu"] >= 80, evals
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    train = [r for r in read_metrics(copy_run) if r["kind"] == "train"]
    assert all(r["tokens"] > 0 and r["tokens_per_s"] > 0 for r in train)
    state = json.loads((copy_run / "best" / "state.json").read_text())
    assert state["best_metric"] == "val_bleu"
    assert state["best_score"] == max(r["val_bleu"] for r in evals)
    assert read_checkpoint(copy_run).task == "translate"


def test_translate_cli_from_arguments_file_and_stdin(copy_run, data, capsys, tmp_path):
    val_src = data[1][0]
    assert translate_cli.main(["--ckpt", str(copy_run), "--beam-size", "3",
                               "beta gamma delta"]) == 0
    assert capsys.readouterr().out == "beta gamma delta\n"
    assert translate_cli.main(["--ckpt", str(copy_run), "--file", str(val_src)]) == 0
    hyps = capsys.readouterr().out.splitlines()
    refs = read_lines(val_src)
    assert len(hyps) == len(refs) and bleu(hyps, refs) >= 80
    done = run_module("minigrad_lm.translate", "--ckpt", copy_run, "--beam", "1",  # old name
                      input="eta eta\n\nzeta alpha\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1] == ""  # empty lines stay, so the output stays aligned
    assert len(done.stdout.splitlines()) == 3


def test_bleu_of_identical_text_is_100_and_of_other_text_less():
    refs = ["A man rides a horse on the beach.", "Two dogs play in the snow."]
    assert bleu(refs, refs) == pytest.approx(100.0)
    assert bleu(["A man rides a bike.", "Two cats play."], refs) < 50


def test_resume_continues_bit_identically(data, tmp_path):
    extra = ["--dropout", "0.1", "--eval-every", "6", "--decay-steps", "12"]
    assert run_train(*args(data, tmp_path / "a", "--max-steps", "6", *extra)) == 0
    assert run_train("--out", tmp_path / "a", "--resume", "--max-steps", "12") == 0
    assert run_train(*args(data, tmp_path / "b", "--max-steps", "12", *extra)) == 0
    a, b = snapshot(tmp_path / "a" / "latest"), snapshot(tmp_path / "b" / "latest")
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert a[name] == b[name], name
    la = [r["loss"] for r in read_metrics(tmp_path / "a") if r["kind"] == "train"]
    lb = [r["loss"] for r in read_metrics(tmp_path / "b") if r["kind"] == "train"]
    assert la == lb and len(la) == 12


def test_an_epoch_visits_every_token_batch_once(data, tmp_path, capsys):
    (train_src, train_tgt), (val_src, val_tgt) = data
    cfg = TrainConfig(task="translate", data=[str(train_src), str(train_tgt)],
                      val_data=[str(val_src), str(val_tgt)], tokenizer="word", context=12,
                      batch_tokens=300, epochs=2)
    task = TranslateTask(cfg, None)
    n = len(task.batches)
    assert n == task.train_rows > 5
    first = np.concatenate([task.draw(None, 1, step) for step in range(n)])
    second = np.concatenate([task.draw(None, 1, step) for step in range(n, 2 * n)])
    assert sorted(first) == sorted(second) == list(range(n)) and list(first) != list(second)
    assert list(task.draw(None, 3, 1)) == list(np.concatenate([first, second])[3:6])
    rows = np.concatenate(task.batches)
    assert sorted(rows) == list(range(len(task.src)))  # every pair in exactly one batch
    assert run_train(*args(data, tmp_path / "e", "--epochs", "1")) == 0
    assert f"training {n} steps (1 epochs of {n})" in capsys.readouterr().out


def test_parallel_files_empty_lines_are_skipped_and_counted(tmp_path, capsys, data):
    src = ["alpha beta", "", "gamma", "delta eps"] * 30
    tgt = ["alpha beta", "beta", "", "delta eps"] * 30
    train = write_pair(tmp_path, "train", src, tgt)
    assert run_train(*args((train, data[1]), tmp_path / "out", "--max-steps", "2")) == 0
    out = capsys.readouterr().out
    assert f"skipped 60 train pairs with an empty side (first: {train[0]}:2)" in out


@pytest.mark.parametrize("case", ["line_counts", "one_path", "long_val", "char_tokenizer",
                                  "not_utf8", "missing"])
def test_bad_translation_input(case, data, tmp_path, capsys):
    (train_src, train_tgt), (val_src, val_tgt) = data
    argv = args(data, tmp_path / "out", "--max-steps", "2")
    if case == "line_counts":
        short = tmp_path / "short.tgt"
        short.write_text("alpha\nbeta\n", encoding="utf-8")
        argv = args(((train_src, train_tgt), (val_src, short)), tmp_path / "out")
        expect = (f"{val_src} has 30 lines but {short} has 2", "line-aligned")
    elif case == "one_path":
        argv[argv.index("--data") + 2] = "--seed"
        argv.insert(argv.index("--seed") + 1, "1")
        expect = ("--task translate needs --data SOURCE_FILE TARGET_FILE",)
    elif case == "long_val":
        long = write_pair(tmp_path, "long", ["alpha " * 20], ["beta"])
        argv = args(((train_src, train_tgt), long), tmp_path / "out")
        expect = (f"{long[0]}:1: the pair has 21 and 2 tokens, more than --context 12",)
    elif case == "char_tokenizer":
        argv += ["--tokenizer", "char"]
        expect = ("--task translate learns its vocabulary: --tokenizer word or bpe",)
    elif case == "not_utf8":
        bad = tmp_path / "bad.src"
        bad.write_bytes(b"alpha\n\xff beta\n")
        argv = args(((bad, train_tgt), (val_src, val_tgt)), tmp_path / "out")
        expect = (f"{bad}:2: not valid utf-8",)
    else:
        argv = args(((tmp_path / "nope.src", train_tgt), (val_src, val_tgt)), tmp_path / "out")
        expect = (f"{tmp_path / 'nope.src'}: no such file",)
    assert run_train(*argv) == 2
    assert_one_line_error(capsys.readouterr().err, *expect)
    assert not (tmp_path / "out").exists()


def test_translate_cli_errors(copy_run, tmp_path, capsys):
    assert translate_cli.main(["--ckpt", str(copy_run), " ".join(["alpha"] * 12)]) == 2
    assert_one_line_error(capsys.readouterr().err,
                          "argument 1: 13 tokens, longer than the model's maximum of 12")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text for a language model\n" * 40, encoding="utf-8")
    assert run_train("--data", corpus, "--out", tmp_path / "lm", "--max-steps", "1",
                     "--context", "8", "--n-layer", "1", "--d-model", "8", "--n-head", "2",
                     "--batch-size", "2", "--eval-batches", "1", "--sample-tokens", "0",
                     "--peak-flops", "1e11") == 0
    capsys.readouterr()
    assert translate_cli.main(["--ckpt", str(tmp_path / "lm"), "hallo"]) == 2
    assert_one_line_error(capsys.readouterr().err, "a lm checkpoint, not a translation model")
    folder = tmp_path / "lm" / "latest"
    text = (folder / "config.json").read_text().replace('"task": "lm"', '"task": "summarize"')
    (folder / "config.json").write_text(text)
    sums = json.loads((folder / "checksums.json").read_text())
    sums["config.json"] = hashlib.sha256(text.encode()).hexdigest()
    (folder / "checksums.json").write_text(json.dumps(sums))
    assert translate_cli.main(["--ckpt", str(tmp_path / "lm" / "latest"), "hallo"]) == 2
    assert_one_line_error(capsys.readouterr().err, "key 'task': expected one of 'lm', 'mlm', ",
                          "'translate', ", "got 'summarize'")


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(case=line_files(WORDS), stdin=st.booleans(),
       breaks=st.sampled_from(["", "\n", "\r", "\r\n", "\u2028", "\x0b\x85", "\n\n"]))
def test_translate_prints_one_line_per_input_line(copy_run, tmp_path_factory, monkeypatch,
                                                  capsys, case, stdin, breaks):
    """Line n of the output translates line n of the input (empty for a blank line), from a
    file or stdin alike, even when the decoded text holds line breaks."""
    lines, raw = case
    decode = TrainedTokenizer.decode
    monkeypatch.setattr(TrainedTokenizer, "decode",
                        lambda self, ids: decode(self, ids).replace(" ", breaks or " ", 1))
    path = tmp_path_factory.mktemp("lines") / "in.txt"
    path.write_bytes(raw)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(raw)))
    capsys.readouterr()
    status = translate_cli.main(["--ckpt", str(copy_run), "--beam", "1",
                                 "--file", "-" if stdin else str(path)])
    out, err = capsys.readouterr()
    if not any(line.strip() for line in lines):
        assert status == 2
        assert_one_line_error(err, "no sentences")
        return
    assert status == 0, err
    printed = out.splitlines()  # every line break Python knows
    assert len(printed) == len(lines) and out.count("\n") == len(lines), (lines, out)
    for line, result in zip(lines, printed, strict=True):
        assert line.strip() or result == "", (line, result)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(a=st.floats(0, 1e300), b=st.integers(0, 10**15), context=st.integers(3, 4096))
def test_a_max_length_beyond_the_context_is_one_note_and_decodes_within_it(a, b, context):
    from minigrad_lm.inference.decoding import DecodeOptions, max_target_length

    if a + b == 0:
        return
    options = DecodeOptions(max_len_a=a, max_len_b=b)
    note = translate_cli.length_note(options, context)
    assert max_target_length(context, options, context) <= context - 1  # the cap holds
    assert (note is not None) == (a + b + 1 > context - 1)
    if note:
        assert "\n" not in note and f"context of {context} tokens" in note
