"""Cloze questions from text: sentences, passages, answers, questions and the CLI's file."""
import gzip
import json

import numpy as np
import pytest

from minigrad_lm import cloze
from minigrad_lm.data import cloze as data_cloze
from minigrad_lm.data.cloze import (
    answer_candidates,
    cloze_articles,
    cloze_question,
    passages,
    question_word,
    sentences,
)
from minigrad_lm.data.qa import read_qa
from tests.cli_support import assert_one_line_error

DOCUMENT = ("The river Rhine rises in the Alps. It flows past Basel and Strasbourg for 1,233 "
            "kilometres. In 1815 the Congress of Vienna made it a free waterway. Ships carry "
            "coal! Why? 3 locks were built near Mainz in the end.")


def test_sentences_end_before_a_capital_or_digit_and_passages_reach_a_word_count():
    assert sentences(DOCUMENT) == [
        "The river Rhine rises in the Alps.",
        "It flows past Basel and Strasbourg for 1,233 kilometres.",
        "In 1815 the Congress of Vienna made it a free waterway.",
        "Ships carry coal!", "Why?", "3 locks were built near Mainz in the end."]
    assert sentences("Dr. smith arrived. then left") == ["Dr. smith arrived. then left"]
    groups = passages(DOCUMENT, words=12)
    assert [len(g) for g in groups] == [2, 2]  # 7 + 9 words, 11 + 3; 1 + 9 left out
    assert passages(DOCUMENT, words=1000) == []  # too short a document: no passage


def test_candidates_are_names_and_numbers_after_the_first_word():
    got = [m.group() for m in answer_candidates(
        "In 1815 the Congress of Vienna met, and Ships of the Line sailed 1,233.5 km.")]
    assert got == ["1815", "Congress of Vienna", "Ships of the Line", "1,233.5"]
    assert answer_candidates("Basel is here.") == []
    assert [question_word(a) for a in ("1815", "2024", "1,233", "3", "Vienna")] == [
        "when", "when", "how many", "how many", "what"]


def test_a_question_keeps_the_reach_drops_words_and_asks_for_the_answer(monkeypatch):
    sentence = "a b c d e f g h i j Vienna k l m n o p q r s."
    answer = answer_candidates(sentence)[0]
    monkeypatch.setattr(data_cloze, "DROP", 0.0)
    assert cloze_question(sentence, answer, np.random.default_rng(0)) == (
        "d e f g h i j what k l m n o p q?")
    monkeypatch.setattr(data_cloze, "DROP", 0.5)
    words = [cloze_question(sentence, answer, np.random.default_rng(s)).split()
             for s in range(200)]
    assert all("what" in " ".join(w) and "Vienna" not in " ".join(w) for w in words)
    kept = np.mean([len(w) - 1 for w in words]) / 14
    assert 0.4 < kept < 0.6


def test_articles_point_at_their_answers_and_are_drawn_from_the_seed():
    long = " ".join([DOCUMENT] * 4)
    documents = [long, "no capitals here at all. none at all here. " * 20, long]
    articles = list(cloze_articles(documents, questions=100, seed=3))
    assert [a["title"] for a in articles] == ["document 1", "document 3"]
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                (answer,) = qa["answers"]
                start, text = answer["answer_start"], answer["text"]
                assert paragraph["context"][start:start + len(text)] == text
                assert qa["question"].split()[-1].endswith("?")
    assert articles == list(cloze_articles(documents, questions=100, seed=3))
    assert articles != list(cloze_articles(documents, questions=100, seed=4))
    counted = list(cloze_articles(documents * 50, questions=7, seed=3))
    assert sum(len(p["qas"]) for a in counted for p in a["paragraphs"]) == 7


def test_the_cli_writes_a_squad_file_that_qa_reads(tmp_path, capsys):
    text = tmp_path / "wiki.txt.gz"
    with gzip.open(text, "wt", encoding="utf-8") as f:
        f.write("\n".join([DOCUMENT * 6] * 5) + "\n")
    out = tmp_path / "new" / "cloze.json"  # a missing folder is made
    assert cloze.main([str(text), "--out", str(out), "--questions", "9"]) == 0
    assert "9 cloze questions about" in capsys.readouterr().out
    examples = read_qa([str(out)]).examples
    assert len(examples) == 9 and all(e.kind == "span" for e in examples)
    assert cloze.main([str(text), "--out", str(out), "--questions", "1000000",
                       "--overwrite"]) == 0
    assert "(all the text yields)" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["missing.txt", "--out", "c.json"], "missing.txt: no such file"),
    (["text.txt", "--out", "c.json", "--questions", "0"], "--questions must be >= 1"),
    (["text.txt", "--out", "text.txt/c.json"], "text.txt is not a folder"),
    (["text.txt", "--out", "old.json"], "exists (give --overwrite to replace it)"),
    (["plain.txt", "--out", "c.json"], "no sentence yields a question"),
])
def test_bad_input_is_one_line_and_nothing_is_written(tmp_path, capsys, monkeypatch, argv,
                                                      message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.txt").write_text(DOCUMENT * 6)
    (tmp_path / "plain.txt").write_text("no names or numbers here at all, none. " * 40)
    (tmp_path / "old.json").write_text("{}")
    assert cloze.main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, message)
    assert not (tmp_path / "c.json").exists()
    assert (tmp_path / "old.json").read_text() == "{}"
    assert json.loads((tmp_path / "old.json").read_text()) == {}


def test_documents_holding_excluded_text_make_no_questions(tmp_path, capsys):
    other = ("The river Danube rises in the Black Forest. It flows past Vienna and Budapest "
             "for 2,850 kilometres. In 1856 the Treaty of Paris made it a free waterway. Barges "
             "carry grain! Why? 5 bridges were built near Ulm in the end.")
    text = tmp_path / "text.txt"
    text.write_text(f"{DOCUMENT * 6}\n{other * 6}\n")
    held = tmp_path / "held.json"
    context = "Intro words here. " + " ".join(sentences(DOCUMENT)[1:3]) + " Outro."
    held.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": context, "qas": [{"id": "q1", "question": "Which?", "answers": [
            {"text": "Basel", "answer_start": context.index("Basel")}]}]}]}]}))
    out = tmp_path / "cloze.json"
    assert cloze.main([str(text), "--out", str(out), "--exclude", str(held)]) == 0
    contexts = {e.context for e in read_qa([str(out)]).examples}
    assert contexts and all("Danube" in c and "Rhine" not in c for c in contexts)


def test_a_question_of_markup_is_not_asked():
    markup = "|style=" + "width:1.0em;padding:0;" * 12
    document = " ".join([f"The table {markup} shows Paris and 1815 in one long row."] * 12)
    assert list(cloze_articles([document], questions=5)) == []
    assert list(cloze_articles([document.replace(markup, "wide")], questions=5))
