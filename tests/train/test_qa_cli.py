"""--task qa end to end on tiny synthetic data: learning, answer, evaluate, resume, bad input."""
import json
import shutil

import numpy as np
import pytest

from minigrad_lm import answer, evaluate, explain
from minigrad_lm.io.files import load_safetensors
from tests.cli_support import (
    assert_exact_resume,
    assert_one_line_error,
    run_train,
    set_file,
    snapshot,
)

WORDS = "alpha beta gamma delta kappa omega sigma tau rho zeta theta lambda".split()
FILL = "the river runs past old town under a grey sky while birds sing".split()
QA = ["--task", "qa", "--n-layer", "1", "--n-head", "2", "--d-model", "32", "--context", "32",
      "--batch-size", "16", "--warmup-steps", "5", "--peak-flops", "1e11", "--log-every", "1000"]


def copy_task(path, articles: int, seed: int):
    """'What is the code?' about 'The code is X.' among a varying number of filler words: the
    answer's position moves, so the model must find it."""
    rng = np.random.default_rng(seed)
    data = []
    for a in range(articles):
        paragraphs = []
        for p in range(5):
            code = str(rng.choice(WORDS))
            pre = " ".join(rng.choice(FILL, rng.integers(2, 9)))
            post = " ".join(rng.choice(FILL, rng.integers(2, 9)))
            context = f"{pre.capitalize()}. The code is {code}. {post}."
            start = context.index(f"is {code}.") + 3
            paragraphs.append({"context": context, "qas": [{
                "id": f"s{seed}-{a}-{p}", "question": "What is the code?",
                "answers": [{"text": code, "answer_start": start}]}]})
        data.append({"title": f"article {seed}-{a}", "paragraphs": paragraphs})
    path.write_text(json.dumps({"version": "1.1", "data": data}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qa")
    train, val = copy_task(tmp / "train.json", 30, 0), copy_task(tmp / "val.json", 4, 1)
    assert run_train(*QA, "--data", train, "--val-data", val, "--max-steps", "40",
                     "--eval-every", "20", "--out", tmp / "run") == 0
    return tmp


def test_copy_the_answer_is_learned_to_high_exact_match(trained, capsys):
    capsys.readouterr()
    assert evaluate.main(["--ckpt", str(trained / "run"), "--data", str(trained / "val.json"),
                          "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["task"] == "qa" and scores["questions"] == 20
    assert scores["exact_match"] >= 90 and scores["f1"] >= 90


def test_answer_prints_the_substring_and_writes_squad_predictions(trained, capsys):
    context = "Birds sing. The code is omega. The river runs past."
    capsys.readouterr()
    assert answer.main(["--ckpt", str(trained / "run"), "--context", context,
                        "What is the code?"]) == 0
    text, prob = capsys.readouterr().out.strip().split("\t")
    assert text == "omega" and 0 < float(prob) <= 1
    out = trained / "predictions.json"
    assert answer.main(["--ckpt", str(trained / "run"), "--file", str(trained / "val.json"),
                        "--out", str(out)]) == 0
    predictions = json.loads(out.read_text())
    gold = json.loads((trained / "val.json").read_text())
    ids = [q["id"] for a in gold["data"] for p in a["paragraphs"] for q in p["qas"]]
    assert sorted(predictions) == sorted(ids)
    assert all(isinstance(v, str) for v in predictions.values())


def test_answer_reads_a_long_context_in_windows(trained, capsys):
    """The context is far longer than the 32-token window: the answer comes from a later
    window, printed as written in the context."""
    filler = " ".join(["The river runs past old town."] * 12)
    path = trained / "long.txt"
    path.write_text(f"{filler} The code is Lambda. {filler}", encoding="utf-8")
    capsys.readouterr()
    assert answer.main(["--ckpt", str(trained / "run"), "--context-file", str(path),
                        "--stride", "8", "What is the code?"]) == 0
    assert capsys.readouterr().out.split("\t")[0] == "Lambda"


def _positional(run) -> str:
    return json.loads((run / "latest" / "config.json").read_text())["model"]["positional"]


def test_exact_resume_and_the_question_match_kept(tmp_path, capsys):
    train, val = copy_task(tmp_path / "t.json", 6, 2), copy_task(tmp_path / "v.json", 2, 3)
    common = [*QA, "--data", train, "--val-data", val, "--decay-steps", "8", "--eval-every", "4"]
    whole = assert_exact_resume(common, tmp_path)
    assert "question_match" in whole
    # token windows read positions by distance by default, and the resumed run keeps them
    assert not any(name.startswith("body.pos_emb") for name in whole)
    assert _positional(tmp_path / "split") == "alibi"
    before = snapshot(tmp_path / "split")
    capsys.readouterr()
    assert run_train(*common, "--max-steps", "12", "--out", tmp_path / "split", "--resume",
                     "--no-question-match") == 2
    assert_one_line_error(capsys.readouterr().err, "--no-question-match: the resumed run was "
                          "trained with it")
    assert run_train(*common, "--max-steps", "12", "--out", tmp_path / "split", "--resume",
                     "--positional", "learned") == 2
    assert_one_line_error(capsys.readouterr().err, "was trained with --positional alibi, not "
                          "learned")
    assert snapshot(tmp_path / "split") == before


def test_the_position_encoding_is_chosen_by_the_reading_unless_given(tmp_path):
    squad = copy_task(tmp_path / "s.json", 4, 0)
    babi = where_task(tmp_path / "qa1_train.txt", 20, 0)
    runs = {"windows": [*QA, "--data", squad, "--val-every-nth", "2"],
            "facts": [*FACTS, "--data", babi, "--val-data", babi],
            "windows_learned": [*QA, "--data", squad, "--val-every-nth", "2",
                                "--positional", "learned"],
            "facts_alibi": [*FACTS, "--data", babi, "--val-data", babi, "--positional", "alibi"]}
    for name, argv in runs.items():
        assert run_train(*argv, "--max-steps", "2", "--out", tmp_path / name) == 0
    assert {name: _positional(tmp_path / name) for name in runs} == {
        "windows": "alibi", "facts": "learned", "windows_learned": "learned",
        "facts_alibi": "alibi"}


BABI_TRAIN = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Is John in the hallway? \tyes\t2
1 Sandra went to the garden.
2 Where is Sandra? \tgarden\t1
"""
BABI_VALID = """1 John moved to the garden.
2 Where is John? \tgarden\t1
3 Is John in the bathroom? \tno\t1
"""


@pytest.mark.parametrize("reading", [[], ["--qa-input", "tokens"]])
def test_babi_trains_jointly_and_evaluate_prints_task_scores(tmp_path, capsys, reading):
    for task in (1, 6):
        (tmp_path / f"qa{task}_train.txt").write_text(BABI_TRAIN * 4, encoding="utf-8")
        (tmp_path / f"qa{task}_valid.txt").write_text(BABI_VALID, encoding="utf-8")
    files = {split: [str(tmp_path / f"qa{t}_{split}.txt") for t in (1, 6)]
             for split in ("train", "valid")}
    assert run_train(*QA, "--data", *files["train"], "--val-data", *files["valid"],
                     *reading, "--max-steps", "4", "--out", tmp_path / "run") == 0
    config = json.loads((tmp_path / "run" / "latest" / "config.json").read_text())
    assert config["task"] == "qa" and config["answers"] == ["[SPAN]", "bathroom", "garden",
                                                            "yes"]
    # bAbI is read as facts by default; "Is John in the hallway?" is the longest unit
    assert config["fact_tokens"] == (0 if reading else 6)
    capsys.readouterr()
    assert evaluate.main(["--ckpt", str(tmp_path / "run"), "--data", *files["valid"]]) == 0
    out = capsys.readouterr().out
    assert "4 questions | exact match" in out and "bAbI error per task: qa1 " in out
    assert "qa6 " in out and "failed (error > 5%): " in out
    capsys.readouterr()
    assert answer.main(["--ckpt", str(tmp_path / "run"), "--context",
                        "Mary moved to the bathroom.", "Where is Mary?"]) == 0
    text = capsys.readouterr().out.split("\t")[0]
    assert text in ("bathroom", "garden", "yes") or text in "Mary moved to the bathroom."


PEOPLE = ["mary", "john", "sandra", "daniel"]
PLACES = ["kitchen", "garden", "office", "hallway", "bathroom"]


def where_task(path, stories: int, seed: int) -> list[str]:
    """bAbI task 1's shape: people move, "Where is X?" asks for X's latest place, so the
    answer depends on which fact is the most recent."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(stories):
        n, seen = 0, {}
        for _ in range(3):
            for _ in range(int(rng.integers(1, 4))):
                who, where = str(rng.choice(PEOPLE)), str(rng.choice(PLACES))
                n += 1
                lines.append(f"{n} {who.capitalize()} went to the {where}.")
                seen[who] = (where, n)
            who = str(rng.choice(list(seen)))
            n += 1
            lines.append(f"{n} Where is {who.capitalize()}? \t{seen[who][0]}\t{seen[who][1]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


FACTS = [*QA, "--lr", "3e-3", "--dropout", "0", "--context", "12"]


def test_facts_learn_which_statement_is_the_latest(tmp_path, capsys):
    train = where_task(tmp_path / "qa1_train.txt", 300, 0)
    valid = where_task(tmp_path / "qa1_valid.txt", 30, 1)
    assert run_train(*FACTS, "--data", train, "--val-data", valid, "--max-steps", "300",
                     "--eval-every", "300", "--out", tmp_path / "run") == 0
    config = json.loads((tmp_path / "run" / "latest" / "config.json").read_text())
    assert config["question_match"] is False  # the default for facts
    capsys.readouterr()
    assert evaluate.main(["--ckpt", str(tmp_path / "run"), "--data", str(valid)]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("exact match ")[1].split()[0])
    assert accuracy >= 90, out
    assert answer.main(["--ckpt", str(tmp_path / "run"), "--context",
                        "Mary went to the office. John went to the garden.\n"
                        "Mary went to the kitchen.", "Where is Mary?", "Where is John?"]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == [
        "kitchen", "garden"]


def test_facts_exact_resume_and_refusals(tmp_path, capsys):
    train = where_task(tmp_path / "qa1_train.txt", 20, 0)
    valid = where_task(tmp_path / "qa1_valid.txt", 4, 1)
    common = [*FACTS, "--data", train, "--val-data", valid, "--decay-steps", "8",
              "--eval-every", "4", "--question-match"]
    whole = assert_exact_resume(common, tmp_path)
    assert "word_weights" in whole and "question_match" in whole
    assert not any(name.startswith("span.") for name in whole)
    before = snapshot(tmp_path / "split")
    capsys.readouterr()
    assert run_train(*common, "--max-steps", "12", "--out", tmp_path / "split", "--resume",
                     "--qa-input", "tokens") == 2
    assert_one_line_error(capsys.readouterr().err, "--qa-input tokens: the resumed run reads "
                          "facts")
    assert run_train(*common, "--max-steps", "12", "--out", tmp_path / "split", "--resume",
                     "--no-question-match") == 2
    assert_one_line_error(capsys.readouterr().err, "--no-question-match: the resumed run was "
                          "trained with it")
    assert snapshot(tmp_path / "split") == before
    assert explain.main(["--ckpt", str(tmp_path / "whole"), "--context", "Mary went home.",
                         "Where is Mary?"]) == 2
    assert_one_line_error(capsys.readouterr().err, "reads facts, and attributions are "
                          "computed for token windows only")
    squad = copy_task(tmp_path / "s.json", 2, 0)
    assert evaluate.main(["--ckpt", str(tmp_path / "whole"), "--data", str(squad)]) == 2
    assert_one_line_error(capsys.readouterr().err, "a span answer cannot be read from facts")
    assert run_train(*FACTS, "--data", squad, "--val-every-nth", "2", "--qa-input", "facts",
                     "--out", tmp_path / "bad") == 2
    assert_one_line_error(capsys.readouterr().err, "a span answer cannot be read from facts")
    assert not (tmp_path / "bad").exists()
    long_fact = "Mary went to the very very very very very very very long kitchen."
    assert answer.main(["--ckpt", str(tmp_path / "whole"), "--context", long_fact,
                        "Where is Mary?"]) == 2
    assert_one_line_error(capsys.readouterr().err, "question 1: fact 1 of the context has",
                          "this model reads questions and facts of up to")


def test_a_qa_checkpoint_from_before_fact_reading_and_question_match_still_loads(
        trained, tmp_path, capsys):
    run = tmp_path / "plain"
    assert run_train(*QA, "--data", trained / "train.json", "--val-data",
                     trained / "val.json", "--max-steps", "6", "--no-question-match",
                     "--out", run) == 0
    folder = tmp_path / "old"
    shutil.copytree(run / "latest", folder)
    config = json.loads((folder / "config.json").read_text())
    assert config.pop("fact_tokens") == 0 and config.pop("question_match") is False
    set_file(folder, "config.json", json.dumps(config).encode())
    question = ["--context", "Rain falls. The code is tau. Sun.", "What is the code?"]
    capsys.readouterr()
    assert answer.main(["--ckpt", str(run / "latest"), *question]) == 0
    want = capsys.readouterr().out
    assert answer.main(["--ckpt", str(folder), *question]) == 0
    assert capsys.readouterr().out == want


def test_init_from_a_masked_language_model_uses_its_encoder_and_tokenizer(tmp_path):
    train, val = copy_task(tmp_path / "t.json", 6, 4), copy_task(tmp_path / "v.json", 2, 5)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(p["context"] for a in json.loads(train.read_text())["data"]
                                for p in a["paragraphs"]) * 3, encoding="utf-8")
    assert run_train("--task", "lm", "--attention", "bidirectional", "--tokenizer", "word",
                     "--data", corpus, "--n-layer", "1", "--n-head", "2", "--d-model", "32",
                     "--context", "32", "--batch-size", "4", "--max-steps", "3",
                     "--peak-flops", "1e11", "--eval-batches", "1",
                     "--out", tmp_path / "mlm") == 0
    assert run_train("--task", "qa", "--data", train, "--val-data", val, "--init-from",
                     tmp_path / "mlm", "--max-steps", "3", "--batch-size", "4",
                     "--peak-flops", "1e11", "--out", tmp_path / "qa") == 0
    mlm = load_safetensors(tmp_path / "mlm" / "latest" / "model.safetensors")[0]
    tok = json.loads((tmp_path / "mlm" / "latest" / "tokenizer.json").read_text())
    assert json.loads((tmp_path / "qa" / "latest" / "tokenizer.json").read_text()) == tok
    config = json.loads((tmp_path / "qa" / "latest" / "config.json").read_text())
    assert config["model"]["causal"] is False and config["model"]["d_model"] == 32
    qa = load_safetensors(tmp_path / "qa" / "latest" / "model.safetensors")[0]
    assert set(qa) >= {f"body.{k}" for k in mlm} | {"span.weight", "answer.weight"}


SQUAD_ERRORS = [
    ('{"data": [', "malformed JSON"),
    ('{"data": [{"title": "t", "paragraphs": [{"context": "", "qas": []}]}]}', "empty context"),
    ('{"data": [{"paragraphs": [{"context": "c d", "qas": [{"id": "x", "question": "q?", '
     '"answers": [], "is_impossible": true}]}]}]}', "unanswerable SQuAD v2.0"),
]


@pytest.mark.parametrize("content, message", SQUAD_ERRORS)
def test_bad_data_is_one_line_and_nothing_written(tmp_path, capsys, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content, encoding="utf-8")
    val = copy_task(tmp_path / "v.json", 1, 1)
    before = snapshot(tmp_path)
    assert run_train(*QA, "--data", bad, "--val-data", val, "--out", tmp_path / "run") == 2
    assert_one_line_error(capsys.readouterr().err, str(bad), message)
    assert snapshot(tmp_path) == before


def test_babi_question_without_answer_is_one_line(tmp_path, capsys):
    bad = tmp_path / "qa1_train.txt"
    bad.write_text("1 Mary moved.\n2 Where is Mary?\t\t1\n", encoding="utf-8")
    assert run_train(*QA, "--data", bad, "--val-data", bad, "--out", tmp_path / "run") == 2
    assert_one_line_error(capsys.readouterr().err, f"{bad}:2", "question without an answer")


def test_a_mismatched_answer_start_is_reported_not_fatal(tmp_path, capsys):
    train = copy_task(tmp_path / "t.json", 3, 6)
    doc = json.loads(train.read_text())
    first = doc["data"][0]["paragraphs"][0]["qas"][0]
    first["answers"][0]["answer_start"] += 1
    train.write_text(json.dumps(doc), encoding="utf-8")
    assert run_train(*QA, "--data", train, "--val-data", copy_task(tmp_path / "v.json", 1, 7),
                     "--max-steps", "1", "--out", tmp_path / "run") == 0
    out = capsys.readouterr().out
    assert (f"1 questions have no answer whose answer_start points at its text (first: "
            f"'{first['id']}')") in out


def test_question_longer_than_the_window_is_one_line(tmp_path, capsys):
    train = copy_task(tmp_path / "t.json", 2, 8)
    doc = json.loads(train.read_text())
    doc["data"][1]["paragraphs"][2]["qas"][0]["question"] = "What " * 40 + "is the code?"
    train.write_text(json.dumps(doc), encoding="utf-8")
    assert run_train(*QA, "--data", train, "--val-data", copy_task(tmp_path / "v.json", 1, 9),
                     "--out", tmp_path / "run") == 2
    assert_one_line_error(capsys.readouterr().err, "question 's8-1-2': the question has 44 "
                          "tokens, which leave no room for the context in --context 32")


@pytest.mark.parametrize("flags, message", [
    (["--tokenizer", "char", "--val-every-nth", "2"],
     "--task qa reads answers off character offsets"),
    (["--stride", "64", "--val-every-nth", "2"], "--stride 64 is longer than --context 32"),
    ([], "--task qa needs --val-data"),
])
def test_bad_options_are_one_line(tmp_path, capsys, flags, message):
    train = copy_task(tmp_path / "t.json", 1, 1)
    assert run_train(*QA, "--data", train, *flags, "--out", tmp_path / "run") == 2
    assert_one_line_error(capsys.readouterr().err, message)


@pytest.mark.parametrize("argv, message", [
    (["--context", "  ", "Why?"], "the context is empty"),
    (["Why?"], "no such file"),
    (["--context", "c"], "no question"),
    (["What?"], "no context: give --context TEXT or --context-file FILE"),
    (["--context", "a b", "--context-file", "x", "Why?"], "not both"),
    (["--context", "a b", "--stride", "0", "Why?"], "--stride must be >= 1"),
])
def test_bad_answer_input_is_one_line(trained, capsys, argv, message):
    if argv == ["Why?"]:
        argv = ["--context-file", str(trained / "missing.txt"), "Why?"]
    capsys.readouterr()
    assert answer.main(["--ckpt", str(trained / "run"), *argv]) == 2
    assert_one_line_error(capsys.readouterr().err, message)


def test_answer_refuses_a_checkpoint_of_another_task(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("some text to model. " * 50, encoding="utf-8")
    assert run_train("--data", corpus, "--n-layer", "1", "--d-model", "16", "--context", "16",
                     "--max-steps", "1", "--sample-tokens", "0", "--peak-flops", "1e11",
                     "--out", tmp_path / "lm") == 0
    capsys.readouterr()
    assert answer.main(["--ckpt", str(tmp_path / "lm"), "--context", "a", "b?"]) == 2
    assert_one_line_error(capsys.readouterr().err, "not a question-answering model")


def test_init_from_a_gpt2_folder_reads_the_answer_off_a_causal_body(tmp_path, capsys):
    """A Hugging Face GPT-2 folder (here a tiny one with the fixture's byte-level BPE, which has
    <|endoftext|> but no [CLS] or [SEP]): the question and context are joined by
    <|endoftext|>, spans still map back to the context's characters."""
    from minigrad_lm.data.tokenizer import tokenizer_from_dict
    from minigrad_lm.data.trained_tokenizer import write_gpt2_tokenizer
    from minigrad_lm.models import GPT, GPTConfig
    from tests.cli_support import REPO

    fixture = REPO / "tests" / "fixtures" / "gpt2_bpe_tokenizer.json"
    tok = tokenizer_from_dict(json.loads(fixture.read_text(encoding="utf-8")))
    folder = tmp_path / "gpt2"
    GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=64, n_layer=1, n_head=2,
                  d_model=16)).save_pretrained(str(folder), eos_token_id=tok.eos_token_id)
    write_gpt2_tokenizer(tok, folder)
    train, val = copy_task(tmp_path / "t.json", 4, 10), copy_task(tmp_path / "v.json", 1, 11)
    assert run_train("--task", "qa", "--data", train, "--val-data", val, "--init-from", folder,
                     "--attention", "causal", "--max-steps", "2", "--batch-size", "4",
                     "--peak-flops", "1e11", "--out", tmp_path / "qa") == 0
    config = json.loads((tmp_path / "qa" / "latest" / "config.json").read_text())
    assert config["model"]["causal"] is True and config["model"]["context_length"] == 64
    capsys.readouterr()
    context = "Birds sing. The code is Tau. The river runs."
    assert answer.main(["--ckpt", str(tmp_path / "qa"), "--context", context,
                        "What is the code?"]) == 0
    text = capsys.readouterr().out.split("\t")[0]
    assert text and text in context  # an untrained model's guess, but the context's own text


def test_init_from_a_qa_model_carries_its_reader_but_not_its_answer_head(trained, tmp_path,
                                                                          capsys):
    """A span reader (say one pretrained on cloze questions) starts another QA run: the body,
    span head and question-match vector as trained, a fresh answer head for the new data's
    classes; options its weights need are taken from it, and contradicting ones refused."""
    babi_like = tmp_path / "qa1_train.txt"
    babi_like.write_text(BABI_TRAIN)
    source = trained / "run" / "best"
    assert run_train(*QA, "--init-from", source, "--data", trained / "train.json", babi_like,
                     "--val-data", trained / "val.json", "--max-steps", "1", "--lr", "1e-12",
                     "--min-lr", "1e-12", "--out", tmp_path / "started") == 0
    before = load_safetensors(source / "model.safetensors")[0]
    after = load_safetensors(tmp_path / "started" / "latest" / "model.safetensors")[0]
    assert before.keys() == after.keys()
    for name, value in before.items():
        if name.startswith("answer."):
            assert after[name].shape != value.shape  # the new data's classes
        else:  # one step at lr 1e-12
            np.testing.assert_allclose(after[name], value, rtol=0, atol=1e-9, err_msg=name)
    config = json.loads((tmp_path / "started" / "latest" / "config.json").read_text())
    assert config["question_match"] is True and config["fact_tokens"] == 0
    capsys.readouterr()
    assert run_train(*QA, "--init-from", source, "--data", trained / "train.json",
                     "--val-data", trained / "val.json", "--no-question-match",
                     "--out", tmp_path / "bad") == 2
    assert_one_line_error(capsys.readouterr().err, "its model was trained with "
                          "--question-match, not --no-question-match")
    assert not (tmp_path / "bad").exists()


def test_init_from_a_fact_reading_qa_model_is_refused(tmp_path, capsys):
    train = where_task(tmp_path / "qa1_train.txt", 6, 0)
    valid = where_task(tmp_path / "qa1_valid.txt", 2, 1)
    assert run_train(*FACTS, "--data", train, "--val-data", valid, "--max-steps", "2",
                     "--out", tmp_path / "facts") == 0
    capsys.readouterr()
    assert run_train(*FACTS, "--init-from", tmp_path / "facts" / "latest", "--data", train,
                     "--val-data", valid, "--out", tmp_path / "bad") == 2
    assert_one_line_error(capsys.readouterr().err, "this question-answering model reads facts; "
                          "only one that reads token windows (--qa-input tokens) starts another")
