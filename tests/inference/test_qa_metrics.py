"""EM/F1 with SQuAD's normalisation and bAbI's scores, on hand-worked cases."""
import pytest

from minigrad_lm.inference.qa import best_span
from minigrad_lm.inference.qa_metrics import (
    babi_scores,
    exact_match,
    f1,
    normalize_answer,
    squad_scores,
)


def test_normalisation_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The  Denver Broncos! ") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("theatre") == "theatre"  # an article only as a whole word
    assert normalize_answer("U.S.") == "us"


def test_f1_worked_examples():
    # prediction "the Denver Broncos team" -> [denver, broncos, team]; gold [denver, broncos]
    # precision 2/3, recall 2/2: F1 = 2 * (2/3 * 1) / (2/3 + 1) = 0.8
    assert f1("the Denver Broncos team", "Denver Broncos") == pytest.approx(0.8)
    # repeats count once each: pred [a1, a1, b] gold [a1, b, c] -> common 2, P 2/3, R 2/3
    assert f1("a1 a1 b", "a1 b c") == pytest.approx(2 / 3)
    assert f1("Paris", "London") == 0.0
    assert f1("the", "a") == 0.0  # both normalise to nothing: no shared word
    assert exact_match("The Broncos.", "broncos") and not exact_match("Broncos team", "Broncos")


def test_squad_scores_take_the_best_gold_and_count_missing_as_zero():
    gold = {"q1": ["Denver Broncos", "the Broncos"], "q2": ["1990"], "q3": ["Santa Clara"]}
    predictions = {"q1": "Broncos", "q2": "in 1990"}  # q3 unanswered
    scores = squad_scores(predictions, gold)
    # q1: EM 1 ("the Broncos"); q2: EM 0, F1 = 2 * (1/2 * 1) / (1/2 + 1) = 2/3; q3: 0
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert scores["questions"] == 3


def test_babi_scores_per_task_mean_error_and_failures():
    gold = {f"a{i}": "yes" for i in range(20)} | {f"b{i}": "n,w" for i in range(10)}
    tasks = {q: q[0] for q in gold}
    predictions = {q: "yes" for q in gold if q[0] == "a"}  # task a right; task b:
    predictions |= {f"b{i}": "n,w" for i in range(9)} | {"b9": "w,n"}  # order matters
    predictions["a0"] = "Yes"  # exact string: case counts
    scores = babi_scores(predictions, gold, tasks)
    assert scores["task_accuracy"] == {"a": pytest.approx(0.95), "b": pytest.approx(0.9)}
    assert scores["mean_error"] == pytest.approx((0.05 + 0.1) / 2)
    assert scores["failed_tasks"] == 1  # 5% is not failed; 10% is


def test_best_span_respects_order_and_maximum_length():
    start = [0.0, 5.0, 0.0, 0.0, 1.0]
    end = [8.0, 0.0, 1.0, 4.0, 0.0]
    assert best_span(start, end, max_tokens=5)[1:] == (1, 3)  # 5 + 4 = 9 > 8
    # (1, 0) would score 13, but ends before it starts
    assert best_span(start, end, max_tokens=2) == (pytest.approx(8.0), 0, 0)  # (1, 3): 3 long
