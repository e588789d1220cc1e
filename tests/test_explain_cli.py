"""`python -m minigrad_lm.explain` on tiny classifier, language-model and translation
checkpoints: its outputs, and one error line for a wrong-kind checkpoint or bad input."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minigrad_lm import explain as explain_cli
from tests.cli_support import (
    REPO,
    TINY,
    assert_one_line_error,
    run_module,
    run_train,
    write_corpus,
)
from tests.test_classify_cli import sentiment_rows, write_tsv

LM_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tiny_gpt_run"
WORD_MODEL = ["--tokenizer", "word", *TINY, "--max-steps", "2", "--eval-every", "2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("explain")
    tsv = write_tsv(folder / "train.tsv", sentiment_rows(60, seed=0))
    corpus = write_corpus(folder)
    src, tgt = folder / "train.src", folder / "train.tgt"
    src.write_text("a b c\nb c d\nc d a\n" * 10, encoding="utf-8")
    tgt.write_text("A B C\nB C D\nC D A\n" * 10, encoding="utf-8")
    out = {name: folder / name for name in ("classify", "mlm", "translate")}
    assert run_train("--task", "classify", "--data", tsv, "--val-every-nth", "5",
                     *WORD_MODEL, "--out", out["classify"]) == 0
    assert run_train("--task", "lm", "--attention", "bidirectional", "--data", corpus,
                     *WORD_MODEL, "--out", out["mlm"]) == 0
    assert run_train("--task", "translate", "--data", src, tgt, "--val-data", src, tgt,
                     *WORD_MODEL, "--out", out["translate"]) == 0
    return out


def explain(capsys, *argv) -> tuple[int, str, str]:
    status = explain_cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_classifier_is_explained_as_text_json_and_html(runs, capsys, tmp_path):
    status, out, err = explain(capsys, "--ckpt", runs["classify"], "--steps", "8",
                               "good dull", "dull bad <script>")
    assert status == 0, err
    blocks = out.split("\n\n")
    assert len(blocks) == 2 and blocks[0].startswith("good dull\nclass: ")
    assert "completeness gap" in blocks[0] and "steps from [UNK]" in blocks[0]
    assert [line.split("\t")[0] for line in blocks[1].splitlines()[4:]] == [
        "dull", "bad", "[UNK]", "[UNK]", "[UNK]"]  # <, script, > are unseen words

    html, numbers = tmp_path / "r.html", tmp_path / "r.json"
    status, out, err = explain(capsys, "--ckpt", runs["classify"], "--steps", "4",
                               "--method", "grad-x-input", "--target", "1", "--html", html,
                               "--json", numbers, "good dull")
    assert status == 0, err
    record = json.loads(numbers.read_text())[0]
    assert record["target"] == 1 and record["tokens"] == ["good", "dull"]
    assert record["attribution"]["method"] == "grad_x_input"
    assert html.read_text().startswith("<!DOCTYPE html>")


def test_png_heatmaps_go_to_a_new_folder(runs, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    pictures = tmp_path / "new" / "png"
    status, _, err = explain(capsys, "--ckpt", runs["classify"], "--steps", "2", "--png",
                             pictures, "good", "bad")
    assert status == 0, err
    assert sorted(p.name for p in pictures.iterdir()) == [
        "sentence1.png", "sentence1_body_layers_0_attn.png", "sentence2.png",
        "sentence2_body_layers_0_attn.png"]


def test_json_to_stdout_replaces_the_text_and_file_lines_are_read(runs, capsys, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("good\n\nbad dull\n", encoding="utf-8")
    status, out, err = explain(capsys, "--ckpt", runs["classify"], "--steps", "2", "--json",
                               "-", "--file", lines)
    assert status == 0, err
    assert [r["text"] for r in json.loads(out)] == ["good", "bad dull"]


def test_a_language_model_explains_its_next_token(capsys):
    status, out, err = explain(capsys, "--ckpt", LM_FIXTURE, "--steps", "16", "--json", "-",
                               "the fun")
    assert status == 0, err
    record = json.loads(out)[0]
    assert record["explains"] == "next token" and len(record["tokens"]) == 7
    assert abs(record["attribution"]["completeness_gap"]) < 1e-3
    assert record["target_label"] == record["alternatives"][0]["label"]


def test_a_translation_shows_its_cross_attention(runs, capsys):
    status, out, err = explain(capsys, "--ckpt", runs["translate"], "--beam", "1", "a b c")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "a b c" and lines[1].startswith("output: ")
    assert lines[2] == "output token\tmost attended source token\tmean attention"
    assert len(lines[3:]) == len(lines[1].split(" (p ")[0].split()) - 1  # each output token


@pytest.mark.parametrize("argv, fragments", [
    (["--ckpt", "{mlm}", "a"], ("a masked language model, which explain does not read",
                                "a classifier")),
    (["--ckpt", "{classify}", "--target", "2", "good"], ("--target '2'", "0..1")),
    (["--ckpt", "{translate}", "--target", "A", "a b"], ("--target: a translation",)),
    (["--ckpt", str(LM_FIXTURE), "--baseline", "pad", "the"], ("no [PAD] token",)),
    (["--ckpt", "{classify}", "--steps", "0", "good"], ("--steps must be in 1..1000",)),
    (["--ckpt", "{classify}", "--beam", "0", "good"], ("--beam must be >= 1",)),
    (["--ckpt", "{classify}", "--html", "{missing}/r.html", "good"], ("--html",)),
    (["--ckpt", "{classify}", "good", "--file", "x.txt"], ("arguments or --file",)),
    (["--ckpt", "{missing}", "good"], ("{missing}",)),
    (["--ckpt", "{classify}", "--file", "{missing}"], ("{missing}",)),
    (["--ckpt", "{classify}", "--png", "{classify}/best/config.json", "good"],
     ("is not a folder",)),
])
def test_bad_checkpoints_and_options_give_one_error_line(runs, capsys, tmp_path, argv,
                                                         fragments):
    names = {k: str(v) for k, v in runs.items()} | {"missing": str(tmp_path / "missing")}
    status, out, err = explain(capsys, *[a.format(**names) for a in argv])
    assert status == 2 and out == ""
    assert_one_line_error(err, *[f.format(**names) for f in fragments])


def test_an_error_writes_nothing(runs, capsys, tmp_path):
    html, pictures = tmp_path / "r.html", tmp_path / "png"
    # without matplotlib, --png is refused first (its own test): leave it out then
    png = ["--png", pictures] if importlib.util.find_spec("matplotlib") else []
    status, _, err = explain(capsys, "--ckpt", runs["mlm"], "--html", html, *png, "a")
    assert status == 2 and "masked" in err
    assert list(tmp_path.iterdir()) == []


def test_the_module_runs_as_a_program(runs):
    done = run_module("minigrad_lm.explain", "--ckpt", runs["classify"], "--steps", "2", "good")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "good" and "\x1b[" not in done.stdout


def test_a_terminal_gets_coloured_tokens(runs):
    pty = pytest.importorskip("pty")
    master, terminal = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "minigrad_lm.explain", "--ckpt",
                           str(runs["classify"]), "--steps", "2", "good dull"],
                          stdout=terminal, stderr=subprocess.PIPE, env=env, timeout=120)
    os.close(terminal)
    out = os.read(master, 1 << 16).decode()
    os.close(master)
    assert done.returncode == 0, done.stderr
    tokens = out.splitlines()[-1]
    assert tokens.count("\x1b[48;2;") == 2 and "good" in tokens and "dull" in tokens
