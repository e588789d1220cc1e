"""Question answering data: SQuAD v1.1 JSON and bAbI stories read into one example type, and
their encoding as ``[CLS] question [SEP] context`` windows with character offsets.

Two kinds of answer:

- a **span** of the context (SQuAD): the model points at its first and last context tokens,
  and the answer printed is the context's own substring between their character offsets
  (never re-joined tokens);
- a **class** from the answers seen in training (bAbI): "yes", "two", "apple,football", "n,w"
  are often not words of the story, so an answer head picks one. bAbI's answer set is closed
  (56 answers over the 20 tasks), as the memory networks and the Universal Transformer treat it.

The answer head's class 0 is :data:`SPAN_ANSWER`, "the answer is a span", so one model can be
trained on both formats at once.

Two ways to read a context (:data:`READINGS`):

- ``tokens``: ``[CLS] question [SEP] context`` windows of tokens (:func:`encode_qa`), BERT's
  reading, which span answers need;
- ``facts``: one unit per statement (:func:`encode_facts`), the question first and then the
  facts from the latest back, the reading of the memory networks and of the Universal
  Transformer on bAbI. A unit's position is then how recent the fact is, and the model
  attends over facts, not words: on bAbI's 1k training stories this is what a small model
  learns from (benchmarks/qa.py measures both readings).

Decisions on awkward input (each a documented rule, not a silent fix):

- SQuAD v2.0's unanswerable questions (``is_impossible: true``) are refused with an error naming
  the question: the span head has no "no answer" output.
- An answer whose ``answer_start`` does not point at its text stays a gold answer for scoring
  but is not a training target; a question left with no target is not trained on. The count and
  the first such question id are reported (:attr:`QAData.notes`).
- A context longer than the window is read in overlapping windows ``stride`` tokens apart;
  a training span is taken from every window that holds it whole. A class answer is read from
  the window that ends with the context (a bAbI story's latest state), as training saw it.
- A question so long that no context token fits beside it is an error naming it.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.untrusted import MAX_JSON_BYTES, parse_json, read_regular_bytes, short
from ..models.qa import IGNORE
from .text import decode_text

SPAN_ANSWER = "[SPAN]"  # class 0 of the answer head: the answer is a span of the context
NO_POSITION = IGNORE  # an answer that is not a span of this window (or of the context)
_BABI_LINE = re.compile(r"(\d+) (.*)")
_BABI_TASK = re.compile(r"qa(\d+)_")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")
_WORD = re.compile(r"\w+")
READINGS = ("tokens", "facts")


@dataclass
class QAExample:
    """One question about one context, with its gold answers.

    ``starts[i]`` is the character offset of ``answers[i]`` in the context, or NO_POSITION
    where the answer is not a (checked) span of it; ``kind`` says which head answers it.
    """

    qid: str
    question: str
    context: str
    answers: list[str]
    starts: list[int]
    kind: str  # "span" or "class"
    group: str  # SQuAD: the article's title; bAbI: the task ("qa3")
    source: str  # "file: question ID" or "file:line", for errors
    supporting: tuple[int, ...] = ()  # bAbI: the line numbers of the supporting facts
    facts: tuple[str, ...] = ()  # bAbI: the story's statements, in order

    def statements(self) -> list[str]:
        """The context as facts: a bAbI story's statements, or the context's sentences."""
        return list(self.facts) if self.facts else split_facts(self.context)


@dataclass
class QAData:
    """Examples read from files, what was not used and why (:attr:`notes`)."""

    examples: list[QAExample]
    files: list[str]
    notes: list[str] = field(default_factory=list)

    def groups(self) -> list[str]:
        return list(dict.fromkeys(e.group for e in self.examples))

    def split_groups(self, nth: int) -> tuple[QAData, QAData]:
        """(training, held out): the groups (SQuAD articles, in file order) numbered nth,
        2 nth, ... are held out, so no article is on both sides."""
        groups = self.groups()
        held = {g for i, g in enumerate(groups, 1) if i % nth == 0}
        if not held or len(held) == len(groups):
            raise ValueError(f"--val-every-nth {nth}: {len(groups)} articles/tasks in "
                             f"{', '.join(self.files)} leave no "
                             f"{'validation' if not held else 'training'} questions")
        train = [e for e in self.examples if e.group not in held]
        val = [e for e in self.examples if e.group in held]
        return QAData(train, self.files, self.notes), QAData(val, self.files, [])


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


def read_qa(paths: str | Sequence[str]) -> QAData:
    """SQuAD JSON or bAbI text files (told apart by content: JSON opens with ``{``), read
    together; several bAbI tasks train one joint model. Every problem is one line naming the
    file and the question (id or line)."""
    files = [paths] if isinstance(paths, str) else list(paths)
    examples: list[QAExample] = []
    notes: list[str] = []
    for path in files:
        raw = read_regular_bytes(path, MAX_JSON_BYTES)
        if raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
            found, note = _read_squad(raw, str(path))
            notes += [note] if note else []
        else:
            found = _read_babi(decode_text(raw, "utf-8", str(path)), str(path))
        if not found:
            raise ValueError(f"{path}: no questions")
        examples += found
    seen: dict[str, str] = {}
    for e in examples:
        if e.qid in seen:
            raise ValueError(f"{e.source}: question id {short(e.qid)} also names a question of "
                             f"{seen[e.qid]} (ids key the predictions)")
        seen[e.qid] = e.source
    return QAData(examples, [str(p) for p in files], notes)


def _field(obj, key: str, kind: type, where: str):
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object, got {short(obj)}")
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{where}: '{key}' must be a {kind.__name__}, got {short(value)}")
    return value


def _read_squad(raw: bytes, path: str) -> tuple[list[QAExample], str | None]:
    """SQuAD v1.1's ``data[].paragraphs[].qas[]``; see the module docstring for the rules."""
    doc = parse_json(raw, path)
    articles = _field(doc, "data", list, path)
    examples: list[QAExample] = []
    mismatched: list[str] = []
    for a, article in enumerate(articles):
        where = f"{path}: data[{a}]"
        title = article.get("title") if isinstance(article, dict) else None
        group = title if isinstance(title, str) and title else f"article {a}"
        for p, paragraph in enumerate(_field(article, "paragraphs", list, where)):
            pwhere = f"{where}.paragraphs[{p}]"
            context = _field(paragraph, "context", str, pwhere)
            if not context.strip():
                raise ValueError(f"{pwhere}: empty context")
            for q, qa in enumerate(_field(paragraph, "qas", list, pwhere)):
                qid = _field(qa, "id", str, f"{pwhere}.qas[{q}]")
                source = f"{path}: question {short(qid)}"
                example = _squad_question(qa, context, qid, group, source)
                if example.answers and all(s == NO_POSITION for s in example.starts):
                    mismatched.append(qid)
                examples.append(example)
    note = None
    if mismatched:
        note = (f"{path}: {len(mismatched):,} questions have no answer whose answer_start "
                f"points at its text (first: {short(mismatched[0])}); they are scored but not "
                "trained on")
    return examples, note


def _squad_question(qa: dict, context: str, qid: str, group: str, source: str) -> QAExample:
    if qa.get("is_impossible") is True:
        raise ValueError(f"{source}: an unanswerable SQuAD v2.0 question; only answerable "
                         "questions (SQuAD v1.1) are supported: leave these out")
    question = _field(qa, "question", str, source)
    if not question.strip():
        raise ValueError(f"{source}: empty question")
    answers, starts = [], []
    for n, answer in enumerate(_field(qa, "answers", list, source)):
        text = _field(answer, "text", str, f"{source} answers[{n}]")
        start = _field(answer, "answer_start", int, f"{source} answers[{n}]")
        if not text.strip():
            raise ValueError(f"{source} answers[{n}]: empty answer text")
        answers.append(text)
        starts.append(start if context[start:start + len(text)] == text and start >= 0
                      else NO_POSITION)
    if not answers:
        raise ValueError(f"{source}: no answers (SQuAD v1.1 questions have at least one)")
    return QAExample(qid, question, context, answers, starts, "span", group, source)


def babi_task(path: str) -> str:
    """The task a bAbI file holds, from its name (``qa3_train.txt`` -> ``qa3``)."""
    found = _BABI_TASK.search(Path(path).name)
    return f"qa{found.group(1)}" if found else Path(path).stem


def _read_babi(text: str, path: str) -> list[QAExample]:
    """bAbI's numbered lines: a story restarts at 1; a question line holds
    ``question<TAB>answer<TAB>supporting line numbers`` and is asked of the story's
    statements before it (earlier questions are not part of the context)."""
    task = babi_task(path)
    examples: list[QAExample] = []
    story: dict[int, str] = {}
    last = 0
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        found = _BABI_LINE.fullmatch(line.strip("\r"))
        if found is None:
            raise ValueError(f"{where}: expected 'NUMBER text', got {short(line[:60])}")
        number, body = int(found.group(1)), found.group(2)
        if number == 1:
            story, last = {}, 0
        elif number != last + 1:
            raise ValueError(f"{where}: line number {number} after {last} (a story numbers "
                             "its lines 1, 2, 3, ...)")
        last = number
        if "\t" not in body:
            story[number] = body.strip()
            continue
        fields = body.split("\t")
        question, answer = fields[0].strip(), fields[1].strip()
        if not answer:
            raise ValueError(f"{where}: question without an answer (expected "
                             "question<TAB>answer<TAB>supporting fact numbers)")
        support = fields[2].split() if len(fields) > 2 else []
        bad = [s for s in support if not s.isdigit() or int(s) not in story]
        if bad:
            raise ValueError(f"{where}: supporting fact {short(bad[0])} is not a statement "
                             "of this story before the question")
        if not story:
            raise ValueError(f"{where}: a question with no story before it")
        examples.append(QAExample(
            f"{task}:{Path(path).name}:{lineno}", question, " ".join(story.values()), [answer],
            [NO_POSITION], "class", task, where, tuple(int(s) for s in support),
            tuple(story.values())))
    return examples


# --------------------------------------------------------------------------------------------
# Tokens, offsets and windows
# --------------------------------------------------------------------------------------------


@dataclass
class QATokens:
    """How a tokenizer frames a question: ``prefix`` ids before the question ([CLS], or none
    for GPT-2's vocabulary, whose causal model reads the answer from the last token) and the
    separator between question and context."""

    tokenizer: object
    cls_id: int | None
    sep_id: int

    @classmethod
    def of(cls, tokenizer) -> QATokens:
        if not hasattr(tokenizer, "hf"):
            raise ValueError("question answering needs a word or bpe tokenizer (or GPT-2's), "
                             "which give each token's character offsets; not "
                             f"{type(tokenizer).__name__}")
        sep = tokenizer.sep_id if tokenizer.sep_id is not None else tokenizer.eos_token_id
        if sep is None:
            raise ValueError("the tokenizer has neither [SEP] nor <|endoftext|> to put between "
                             "question and context")
        return cls(tokenizer, tokenizer.cls_id, sep)

    def encode(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(ids, character offsets (n, 2) into the text) of each text."""
        encodings = self.tokenizer.hf.encode_batch(list(texts), add_special_tokens=False)
        return [(np.asarray(e.ids, np.int64), np.asarray(e.offsets, np.int64).reshape(-1, 2))
                for e in encodings]


def token_span(offsets: np.ndarray, start: int, end: int) -> tuple[int, int]:
    """The first and last tokens overlapping characters [start, end) (NO_POSITION, NO_POSITION
    if none does)."""
    inside = (offsets[:, 1] > start) & (offsets[:, 0] < end)
    hits = np.flatnonzero(inside)
    return (int(hits[0]), int(hits[-1])) if hits.size else (NO_POSITION, NO_POSITION)


def word_keys(text: str, offsets: np.ndarray, index: dict[str, int]) -> np.ndarray:
    """(n,) for each token of ``text`` (character ``offsets`` (n, 2)), the key in ``index`` of
    the lower-cased word it belongs to (a new word gets the next key), or -1 for a token of no
    word (punctuation); a token that spans two words takes the later."""
    keys = np.full(len(offsets), -1, np.int64)
    found = list(_WORD.finditer(text))
    if not found or len(offsets) == 0:
        return keys
    starts = np.array([m.start() for m in found])
    ends = np.array([m.end() for m in found])
    words = np.array([index.setdefault(m.group().lower(), len(index)) for m in found])
    word = np.maximum(np.searchsorted(starts, offsets[:, 1], side="left") - 1, 0)
    inside = (starts[word] < offsets[:, 1]) & (ends[word] > offsets[:, 0])
    keys[inside] = words[word[inside]]
    return keys


def question_word_matches(question: str, context: str, offsets: np.ndarray) -> np.ndarray:
    """(n,) True at the context tokens (character ``offsets`` (n, 2)) that belong to a word
    of the question, compared as lower-cased text: DrQA's exact-match feature (Chen et al.
    2017). Words, not token ids: every word outside the vocabulary has the [UNK] id, and a
    subword vocabulary shares pieces between words, while the names a question asks about
    are often such words."""
    index: dict[str, int] = {}
    asked = [index.setdefault(w.lower(), len(index)) for w in _WORD.findall(question)]
    return np.isin(word_keys(context, offsets, index), asked)


def window_starts(n: int, capacity: int, stride: int) -> list[int]:
    """Where the windows of ``capacity`` tokens over ``n`` context tokens begin: every
    ``stride`` tokens, and the last one ends with the context."""
    if n <= capacity:
        return [0]
    step = max(1, min(stride, capacity))
    starts = list(range(0, n - capacity, step))
    return starts + [n - capacity]


@dataclass
class QAFeatures:
    """Model inputs, one row a window: ids (N, T) right-padded, lengths (N,), the window's
    first context position ``ctx_lo`` (N,) and its context tokens' character offsets
    ``offsets`` (N, T, 2) (-1 outside the context), the ``example`` each row is from, the
    targets ``start``/``end`` (N,) (NO_POSITION: no span here) and ``answer`` (N,),
    whether the row is its example's last window (``last``), where class answers are read,
    and ``matches`` (N, T): the context tokens of a word the question holds
    (:func:`question_word_matches`)."""

    ids: np.ndarray
    lengths: np.ndarray
    ctx_lo: np.ndarray
    offsets: np.ndarray
    example: np.ndarray
    start: np.ndarray
    end: np.ndarray
    answer: np.ndarray
    last: np.ndarray
    matches: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def take(self, rows: np.ndarray, width: int | None = None) -> QAFeatures:
        """The rows, their ids and offsets cut to ``width`` columns."""
        w = slice(None, width)
        return QAFeatures(self.ids[rows, w], self.lengths[rows], self.ctx_lo[rows],
                          self.offsets[rows, w], self.example[rows], self.start[rows],
                          self.end[rows], self.answer[rows], self.last[rows],
                          self.matches[rows, w])

    def context_mask(self) -> np.ndarray:
        """(N, T) True where a span may start or end: the window's context tokens."""
        return self.offsets[:, :, 0] >= 0


def encode_qa(examples: Sequence[QAExample], framing: QATokens, context: int, stride: int,
              answers: dict[str, int], training: bool) -> tuple[QAFeatures, int]:
    """The windows of ``examples`` and how many examples have no training target.

    ``answers`` maps an answer text to its class (class 0 is SPAN_ANSWER); a class answer
    not in it gets -1 (it can never be predicted; scoring counts it wrong). ``training``
    keeps only the windows with a target: the ones holding a span answer whole, and a class
    answer's last window; otherwise every window of a span question is kept.
    """
    questions = framing.encode([e.question for e in examples])
    contexts = framing.encode([e.context for e in examples])
    rows: list[tuple] = []
    untrained = 0
    prefix = [] if framing.cls_id is None else [framing.cls_id]
    for i, (e, (q_ids, _), (c_ids, c_off)) in enumerate(zip(examples, questions, contexts)):
        if len(c_ids) == 0:
            raise ValueError(f"{e.source}: the context encodes to no tokens")
        if len(q_ids) == 0:
            raise ValueError(f"{e.source}: the question encodes to no tokens")
        head = np.asarray(prefix + q_ids.tolist() + [framing.sep_id], np.int64)
        capacity = context - len(head)
        if capacity < 1:
            raise ValueError(f"{e.source}: the question has {len(q_ids)} tokens, which leave "
                             f"no room for the context in --context {context}")
        targets = [token_span(c_off, s, s + len(a)) for a, s in zip(e.answers, e.starts)
                   if s != NO_POSITION]
        answer = 0 if e.kind == "span" else answers.get(e.answers[0], NO_POSITION)
        matches = question_word_matches(e.question, e.context, c_off)
        starts = window_starts(len(c_ids), capacity, stride)
        kept = 0
        for w, lo in enumerate(starts):
            hi = min(lo + capacity, len(c_ids))
            last = w == len(starts) - 1
            first, final = _target_in(targets, lo, hi)
            if e.kind == "span":
                if training and first == NO_POSITION:
                    continue
            elif training and not last:
                continue
            if training and answer == NO_POSITION:
                continue
            shift = len(head) - lo
            rows.append((i, np.concatenate([head, c_ids[lo:hi]]), c_off[lo:hi], len(head),
                         first + shift if first != NO_POSITION else NO_POSITION,
                         final + shift if final != NO_POSITION else NO_POSITION, answer, last,
                         matches[lo:hi]))
            kept += 1
        untrained += training and not kept
    return _stack(rows, context), untrained


def _target_in(targets: list[tuple[int, int]], lo: int, hi: int) -> tuple[int, int]:
    """The first gold span lying whole in context tokens [lo, hi)."""
    for first, last in targets:
        if first != NO_POSITION and lo <= first and last < hi:
            return first, last
    return NO_POSITION, NO_POSITION


def _stack(rows: list[tuple], context: int) -> QAFeatures:
    n = len(rows)
    ids = np.zeros((n, context), np.int64)
    offsets = np.full((n, context, 2), -1, np.int64)
    matches = np.zeros((n, context), bool)
    lengths, ctx_lo = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for r, (_, row_ids, row_off, lo, *_rest, row_matches) in enumerate(rows):
        ids[r, :len(row_ids)] = row_ids
        offsets[r, lo:len(row_ids)] = row_off
        matches[r, lo:len(row_ids)] = row_matches
        lengths[r], ctx_lo[r] = len(row_ids), lo
    column = lambda k, dtype=np.int64: np.array([row[k] for row in rows], dtype).reshape(n)
    return QAFeatures(ids, lengths, ctx_lo, offsets, column(0), column(4), column(5), column(6),
                      column(7, bool), matches)


def answer_vocabulary(examples: Sequence[QAExample]) -> list[str]:
    """The answer head's classes: SPAN_ANSWER, then the class answers of ``examples`` sorted."""
    return [SPAN_ANSWER] + sorted({e.answers[0] for e in examples if e.kind == "class"})


# --------------------------------------------------------------------------------------------
# Facts
# --------------------------------------------------------------------------------------------


def split_facts(text: str) -> list[str]:
    """A context's statements: its lines, each cut after a sentence's ``.``, ``!`` or ``?``."""
    return [f.strip() for f in _SENTENCE_END.split(text) if f.strip()]


@dataclass
class FactFeatures:
    """Inputs of a fact-reading model, one row a question: ``ids`` (N, U, J), unit 0 the
    question and unit k the k-th latest fact, each unit's tokens right-padded; ``counts``
    (N, U) the real tokens of each unit (0: a padding unit); ``lengths`` (N,) the units; the
    ``answer`` class (N,) and the ``example`` each row is from; ``matches`` (N, U, J) the
    facts' tokens of a word the question holds (as :func:`question_word_matches` marks a
    context's)."""

    ids: np.ndarray
    counts: np.ndarray
    lengths: np.ndarray
    answer: np.ndarray
    example: np.ndarray
    matches: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def take(self, rows: np.ndarray, width: int | None = None) -> FactFeatures:
        """The rows, cut to ``width`` units."""
        u = slice(None, width)
        return FactFeatures(self.ids[rows, u], self.counts[rows, u], self.lengths[rows],
                            self.answer[rows], self.example[rows], self.matches[rows, u])


def _encode_unique(framing: QATokens, texts: Sequence[str]
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """text -> (ids, the key of each token's word (:func:`word_keys`, one index for all)),
    each text encoded once (a bAbI story's facts recur in all its questions)."""
    unique = list(dict.fromkeys(texts))
    index: dict[str, int] = {}
    return {t: (ids, word_keys(t, offsets, index))
            for t, (ids, offsets) in zip(unique, framing.encode(unique))}


def fact_tokens_needed(examples: Sequence[QAExample], framing: QATokens) -> int:
    """The most tokens of any question or fact of ``examples``: a fact-reading model's J."""
    texts = [t for e in examples for t in (e.question, *e.statements())]
    return max(len(ids) for ids, _ in _encode_unique(framing, texts).values())


def encode_facts(examples: Sequence[QAExample], framing: QATokens, units: int,
                 fact_tokens: int, answers: dict[str, int], training: bool,
                 question_match: bool = True) -> FactFeatures:
    """One row per question: the question and its story's latest ``units - 1`` facts.

    A question or fact longer than ``fact_tokens`` is an error naming it (the model has no
    weights for further words); a class answer not in ``answers`` gets NO_POSITION, and
    ``training`` leaves such questions out. Without ``question_match`` the facts' words are
    not compared with the question's (``matches`` is all False, and holds no memory).
    """
    rows = []
    for i, e in enumerate(examples):
        if e.kind == "span" and e.answers:
            raise ValueError(f"{e.source}: a span answer cannot be read from facts (SQuAD "
                             "needs the token reading, --qa-input tokens)")
        answer = answers.get(e.answers[0], NO_POSITION) if e.answers else NO_POSITION
        if training and answer == NO_POSITION:
            continue
        facts = e.statements()
        if not facts:
            raise ValueError(f"{e.source}: the context holds no statement")
        rows.append((i, e.source, len(facts), [e.question, *facts[::-1][:units - 1]], answer))
    encoded = _encode_unique(framing, [t for row in rows for t in row[3]])
    n, width = len(rows), max((len(row[3]) for row in rows), default=1)
    ids = np.zeros((n, width, fact_tokens), np.int32)  # int32: bAbI's stories run long
    counts = np.zeros((n, width), np.int32)
    matches = (np.zeros((n, width, fact_tokens), bool) if question_match
               else np.broadcast_to(np.False_, (n, width, fact_tokens)))
    for r, (_, source, n_facts, texts, _) in enumerate(rows):
        keys = np.full((len(texts), fact_tokens), -1, np.int64)
        for k, text in enumerate(texts):
            unit, unit_keys = encoded[text]
            what = "the question" if k == 0 else f"fact {n_facts + 1 - k} of the context"
            if len(unit) == 0:
                raise ValueError(f"{source}: {what} encodes to no tokens")
            if len(unit) > fact_tokens:
                raise ValueError(f"{source}: {what} has {len(unit)} tokens; this model reads "
                                 f"questions and facts of up to {fact_tokens}")
            ids[r, k, :len(unit)], keys[k, :len(unit)] = unit, unit_keys
            counts[r, k] = len(unit)
        if question_match:
            matches[r, 1:len(texts)] = np.isin(keys[1:], keys[0][keys[0] >= 0])
    column = lambda k: np.array([row[k] for row in rows], np.int64).reshape(n)
    return FactFeatures(ids, counts, (counts > 0).sum(axis=1).astype(np.int64), column(4),
                        column(0), matches)
