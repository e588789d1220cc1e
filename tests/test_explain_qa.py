"""python -m minigrad_lm.explain on a question-answering checkpoint: the chosen answer's
attributions, the same answer as ``answer`` prints, long contexts and the flags only QA
reads (explain_answer's completeness: tests/inference/test_explain.py)."""
from __future__ import annotations

import json

import pytest

from minigrad_lm import answer
from tests.cli_support import assert_one_line_error
from tests.test_explain_cli import explain, runs  # noqa: F401 (the classifier run fixture)
from tests.train.test_qa_cli import trained  # noqa: F401 (a trained QA run)

CONTEXT = "Birds sing. The code is omega. The river runs past."


@pytest.fixture(scope="module")
def qa_run(trained):  # noqa: F811
    return trained / "run"


def _answer(capsys, run, *argv) -> str:
    capsys.readouterr()
    assert answer.main(["--ckpt", str(run), *map(str, argv)]) == 0
    return capsys.readouterr().out.strip().split("\t")[0]


def test_the_explained_answer_is_the_one_answer_prints(qa_run, capsys, tmp_path):
    printed = _answer(capsys, qa_run, "--context", CONTEXT, "What is the code?")
    html = tmp_path / "r.html"
    status, out, err = explain(capsys, "--ckpt", qa_run, "--context", CONTEXT, "--steps", "32",
                               "--json", "-", "--html", html, "What is the code?")
    assert status == 0, err
    record = json.loads(out)[0]
    assert printed == "omega" and record["explains"] == "answer span"
    assert record["target_label"] == printed
    assert " ".join(record["tokens"]) == ("[CLS] What is the code ? [SEP] Birds sing . The code "
                                          "is omega . The river runs past .")
    first, last = record["answer_tokens"]
    assert record["tokens"][first:last + 1] == ["omega"]
    gap = record["attribution"]["completeness_gap"]
    assert abs(gap) < 1e-2 * max(1.0, abs(record["attribution"]["output"]))
    assert "answer" in html.read_text()

    status, out, err = explain(capsys, "--ckpt", qa_run, "--context", CONTEXT, "--steps", "8",
                               "What is the code?")
    assert status == 0, err
    assert "completeness gap" in out and printed in out.splitlines()[1]


def test_a_long_context_explains_the_window_holding_the_answer(qa_run, capsys, tmp_path):
    filler = " ".join(["The river runs past old town."] * 12)
    path = tmp_path / "long.txt"
    path.write_text(f"{filler} The code is Lambda. {filler}", encoding="utf-8")
    printed = _answer(capsys, qa_run, "--context-file", path, "What is the code?")
    status, out, err = explain(capsys, "--ckpt", qa_run, "--context-file", path,
                               "--method", "grad-x-input", "--json", "-", "What is the code?")
    assert status == 0, err
    record = json.loads(out)[0]
    assert printed == "Lambda" and record["target_label"] == printed
    first, last = record["answer_tokens"]
    assert record["tokens"][first:last + 1] == ["[UNK]"]  # a word training never saw
    assert "windows; explained: window" in record["note"]
    assert len(record["tokens"]) <= 32


@pytest.mark.parametrize("argv, fragments", [
    (["--ckpt", "{qa}", "What?"], ("--context TEXT or --context-file FILE",)),
    (["--ckpt", "{qa}", "--context", "a b", "--context-file", "x", "What?"],
     ("--context or --context-file, not both",)),
    (["--ckpt", "{qa}", "--context", "  ", "What?"], ("the context is empty",)),
    (["--ckpt", "{qa}", "--context", "a b", "--target", "1", "What?"], ("--target",)),
    (["--ckpt", "{classify}", "--context", "a b", "good"],
     ("--context/--context-file", "a classifier")),
    (["--ckpt", "{classify}", "--context-file", "{missing}", "good"], ("{missing}",)),
])
def test_wrong_context_flags_give_one_error_line(qa_run, runs, capsys, tmp_path,  # noqa: F811
                                                 argv, fragments):
    names = {"qa": str(qa_run), "classify": str(runs["classify"]),
             "missing": str(tmp_path / "missing")}
    status, out, err = explain(capsys, *[a.format(**names) for a in argv])
    assert status == 2 and out == ""
    assert_one_line_error(err, *[f.format(**names) for f in fragments])
