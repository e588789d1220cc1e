"""Scores of question answering: SQuAD's exact match and F1, bAbI's accuracy per task.

The normalisation is the official SQuAD v1.1 evaluation script's: lower case, punctuation
removed, the articles a/an/the removed, white space collapsed; each score is the best over a
question's gold answers, averaged over the questions and given in percent.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ..data.qa import QAExample

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
BABI_FAILED_ERROR = 0.05  # a bAbI task counts as failed above 5% error (Weston et al., 2015)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(gold)


def f1(prediction: str, gold: str) -> float:
    """Harmonic mean of the precision and recall of the normalised words (counted with
    repeats); 0 when nothing is shared."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Mapping[str, str], gold: Mapping[str, Sequence[str]]) -> dict:
    """``exact_match`` and ``f1`` (percent) of ``predictions`` (question id -> answer) against
    ``gold`` (question id -> answers); a question without a prediction scores 0."""
    if not gold:
        raise ValueError("no questions to score")
    em = f = 0.0
    for qid, answers in gold.items():
        pred = predictions.get(qid)
        if pred is None:
            continue
        em += max(exact_match(pred, a) for a in answers)
        f += max(f1(pred, a) for a in answers)
    return {"questions": len(gold), "exact_match": 100 * em / len(gold),
            "f1": 100 * f / len(gold)}


def babi_scores(predictions: Mapping[str, str], gold: Mapping[str, str],
                tasks: Mapping[str, str]) -> dict:
    """Accuracy per task (an answer is right when it is the gold string exactly), the mean
    error over the tasks and the tasks failed (error > 5%), as bAbI results are reported."""
    right: Counter = Counter()
    total: Counter = Counter()
    for qid, answer in gold.items():
        total[tasks[qid]] += 1
        right[tasks[qid]] += predictions.get(qid) == answer
    if not total:
        raise ValueError("no questions to score")
    accuracy = {t: right[t] / total[t] for t in sorted(total, key=_task_order)}
    errors = [1 - a for a in accuracy.values()]
    return {"questions": sum(total.values()), "task_accuracy": accuracy,
            "mean_error": sum(errors) / len(errors),
            "failed_tasks": sum(round(e, 9) > BABI_FAILED_ERROR for e in errors)}


def _task_order(task: str) -> tuple:
    """qa2 before qa10: the number, then the name."""
    digits = "".join(ch for ch in task if ch.isdigit())
    return (int(digits) if digits else 1 << 30, task)


def qa_metrics(examples: Sequence[QAExample], predictions: Sequence[str]) -> dict[str, Any]:
    """EM and F1 (percent) over all the questions; with bAbI questions, their accuracy per
    task, mean error and failed tasks too."""
    by_id = {e.qid: p for e, p in zip(examples, predictions)}
    metrics: dict[str, Any] = squad_scores(by_id, {e.qid: e.answers for e in examples})
    babi = [e for e in examples if e.kind == "class"]
    if babi:
        metrics["babi"] = babi_scores(by_id, {e.qid: e.answers[0] for e in babi},
                                      {e.qid: e.group for e in babi})
    return metrics
