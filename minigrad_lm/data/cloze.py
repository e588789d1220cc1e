"""Cloze questions from unlabelled text, in SQuAD's format: span-extraction pretraining.

A passage of a document keeps all its sentences; one of them becomes a question: a name or a
number in it (the answer) is replaced by a question word ("when" for a year, "how many" for
another number, "what" otherwise), the question keeps up to :data:`REACH` words on each side,
and each of those is dropped with probability :data:`DROP`, so that the question is a noisy
paraphrase of its sentence rather than a copy. Answering means finding the sentence the
question paraphrases and reading off what stands where the question word is: the skill SQuAD
asks for, learned from text alone (the "noisy cloze" questions of Lewis et al. 2019,
Unsupervised Question Answering by Cloze Translation, without their parser). A reader
pretrained on them is fine-tuned on real questions with ``--init-from``.

Sentences are cut after ".", "!" or "?" followed by a capital or a digit; a passage is the
fewest consecutive sentences of at least :data:`PASSAGE_WORDS` words (SQuAD's paragraphs run
about 120). Names are runs of capitalised words that do not open the sentence; numbers are
digits, possibly with "," or "." inside. A question longer than :data:`MAX_QUESTION_CHARS` is
not asked (markup, not prose). Which sentences and answers are taken is drawn from
``seed``: the same text and seed give the same questions.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import numpy as np

PASSAGE_WORDS = 100
QUESTIONS_PER_PASSAGE = 2
MIN_SENTENCE_WORDS = 8
REACH = 7  # words of the sentence kept on each side of the question word
DROP = 0.15  # each kept word is dropped with this probability
MAX_ANSWER_CHARS = 40
# A longer question holds markup rather than words (a table row, a run of symbols without
# spaces); SQuAD's questions average about 60 characters.
MAX_QUESTION_CHARS = 150

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_NUMBER = r"\d(?:[\d,.]*\d)?"
_NAME = r"[A-Z][\w'-]*(?:\s+(?:of\s+)?(?:the\s+)?[A-Z][\w'-]*){0,3}"
_ANSWER = re.compile(rf"\b(?:{_NUMBER}|{_NAME})\b")
_YEAR = re.compile(r"1\d{3}|20\d{2}")


def sentences(document: str) -> list[str]:
    """The document's sentences, cut after ".", "!" or "?" before a capital or a digit."""
    return [s for s in _SENTENCE_END.split(document.strip()) if s]


def passages(document: str, words: int = PASSAGE_WORDS) -> list[list[str]]:
    """Consecutive sentences grouped until each group holds at least ``words`` words; a short
    remainder is left out."""
    groups, current, count = [], [], 0
    for sentence in sentences(document):
        current.append(sentence)
        count += len(sentence.split())
        if count >= words:
            groups.append(current)
            current, count = [], 0
    return groups


def question_word(answer: str) -> str:
    if _YEAR.fullmatch(answer):
        return "when"
    return "how many" if answer[0].isdigit() else "what"


def answer_candidates(sentence: str) -> list[re.Match]:
    """Names and numbers of the sentence that may be asked for: not its first word, and
    shorter than MAX_ANSWER_CHARS."""
    return [m for m in _ANSWER.finditer(sentence)
            if m.start() > 0 and len(m.group()) < MAX_ANSWER_CHARS]


def cloze_question(sentence: str, answer: re.Match, rng: np.random.Generator) -> str:
    """The sentence around ``answer``, REACH words a side each dropped with probability DROP,
    the answer replaced by its question word."""
    before = sentence[:answer.start()].split()[-REACH:]
    after = sentence[answer.end():].rstrip(".!?").split()[:REACH]
    kept = lambda ws: [w for w in ws if rng.random() >= DROP]
    return " ".join([*kept(before), question_word(answer.group()), *kept(after)]) + "?"


# Word n-grams this long shared with the evaluation text mark a document as holding it (GPT-3's
# contamination check used 13; shorter ones match stock phrases such as "takes place in a
# framework of a").
SHINGLE_WORDS = 13


def shingles(text: str) -> set[int]:
    """Hashes of the text's runs of SHINGLE_WORDS lower-cased words."""
    words = text.lower().split()
    return {hash(tuple(words[i:i + SHINGLE_WORDS]))
            for i in range(len(words) - SHINGLE_WORDS + 1)}


def cloze_articles(documents: Iterable[str], questions: int, seed: int = 0,
                   exclude: set[int] | None = None) -> Iterator[dict]:
    """SQuAD v1.1 articles (``{"title", "paragraphs"}``) of cloze questions about
    ``documents``, one article a document that yields a question, until ``questions`` are
    made; a document sharing one of the ``exclude`` :func:`shingles` (text that will be
    evaluated on) is skipped whole."""
    rng = np.random.default_rng(seed)
    made = 0
    for d, document in enumerate(documents):
        if exclude and not exclude.isdisjoint(shingles(document)):
            continue
        paragraphs = []
        for p, group in enumerate(passages(document)):
            context = " ".join(group)
            qas = []
            for s in rng.permutation(len(group))[:QUESTIONS_PER_PASSAGE]:
                sentence = group[s]
                candidates = answer_candidates(sentence)
                if len(sentence.split()) < MIN_SENTENCE_WORDS or not candidates:
                    continue
                answer = candidates[rng.integers(len(candidates))]
                question = cloze_question(sentence, answer, rng)
                if len(question) > MAX_QUESTION_CHARS:
                    continue
                start = len(" ".join(group[:s])) + (s > 0) + answer.start()
                qas.append({"id": f"cloze-{d}-{p}-{s}", "question": question,
                            "answers": [{"text": answer.group(), "answer_start": start}]})
                made += 1
                if made == questions:
                    break
            if qas:
                paragraphs.append({"context": context, "qas": qas})
            if made == questions:
                break
        if paragraphs:
            yield {"title": f"document {d + 1}", "paragraphs": paragraphs}
        if made == questions:
            return
