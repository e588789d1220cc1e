"""QA data: SQuAD and bAbI readers, character offsets, windows (value checks on tiny data)."""
import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigrad_lm.data.qa import (
    NO_POSITION,
    SPAN_ANSWER,
    QAExample,
    QATokens,
    answer_vocabulary,
    encode_facts,
    encode_qa,
    fact_tokens_needed,
    question_word_matches,
    read_qa,
    split_facts,
    token_span,
    window_starts,
)
from minigrad_lm.data.trained_tokenizer import TrainedTokenizer
from minigrad_lm.inference.qa import span_text

PIECES = ["Café", "ﬁnale", "naïve", "—", "“quoted”", "1990s", "U.S.", "e-mail", "日本語",
          "Zürich,", "(a)", "the", "river", "!", "O'Neil", "x²", "Ωmega", "résumé."]


def tokenizer(kind: str, texts) -> TrainedTokenizer:
    return TrainedTokenizer.train(kind, texts, 400, lowercase=True)


def squad_file(tmp_path, contexts_and_qas, name="squad.json"):
    data = {"version": "1.1", "data": [{"title": f"T{a}", "paragraphs": [
        {"context": c, "qas": qas} for c, qas in article]}
        for a, article in enumerate(contexts_and_qas)]}
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def qa(qid, question, answer, start):
    return {"id": qid, "question": question, "answers": [{"text": answer, "answer_start": start}]}


@pytest.mark.parametrize("kind", ["word", "bpe"])
@settings(max_examples=25, deadline=None)
@given(words=st.lists(st.sampled_from(PIECES), min_size=2, max_size=14),
       cut=st.tuples(st.integers(0, 100), st.integers(0, 100)))
def test_token_spans_map_back_to_the_identical_substring(kind, words, cut):
    context = " ".join(words)
    tok = tokenizer(kind, [" ".join(PIECES)])
    (_, offsets), = QATokens.of(tok).encode([context])
    first, last = sorted(c % len(offsets) for c in cut)
    text, (a, b) = span_text(context, offsets, first, last)
    assert text == context[a:b] and text == text.strip() and text
    assert token_span(offsets, a, b) == (first, last)  # and back to the same tokens


def test_unicode_answer_printed_as_written(tmp_path):
    """NFKC turns 'ﬁ' into 'fi' and lowercasing changes case: the answer is still the
    context's own characters."""
    context = "Le ﬁnale de “Café Zürich” eut lieu en 1990."
    answer = "“Café Zürich”"
    start = context.index(answer)
    tok = tokenizer("word", [context, "Où?"])
    (_, offsets), = QATokens.of(tok).encode([context])
    first, last = token_span(offsets, start, start + len(answer))
    assert span_text(context, offsets, first, last)[0] == answer


def test_window_starts_cover_everything_and_end_with_the_context():
    for n, capacity, stride in [(10, 4, 2), (10, 4, 3), (5, 8, 2), (9, 3, 7), (100, 17, 5)]:
        starts = window_starts(n, capacity, stride)
        covered = np.zeros(n, bool)
        for s in starts:
            covered[s:s + capacity] = True
        assert covered.all() and starts[0] == 0 and starts[-1] == max(0, n - capacity)
        assert all(b - a <= min(stride, capacity) for a, b in zip(starts, starts[1:]))


def _framed(context: str, answer: str, start: int, capacity: int, stride: int):
    from minigrad_lm.data.qa import QAExample
    e = QAExample("q1", "which", context, [answer], [start], "span", "T", "test: question q1")
    tok = tokenizer("word", [context, "which"])
    framing = QATokens.of(tok)
    head = 1 + 1 + 1  # [CLS] which [SEP]
    return e, framing, head + capacity


def test_an_answer_straddling_a_window_boundary_is_found_in_the_next_window():
    words = [f"w{i}" for i in range(12)]
    context = " ".join(words)
    answer = "w3 w4"  # window 0 holds w0..w3 (capacity 4, stride 2): w4 is past its end
    e, framing, width = _framed(context, answer, context.index(answer), capacity=4, stride=2)
    train, untrained = encode_qa([e], framing, width, 2, {SPAN_ANSWER: 0}, training=True)
    assert untrained == 0 and len(train) == 1  # only window 1 (w2..w5) holds it whole
    assert span_text(context, train.offsets[0], train.start[0], train.end[0])[0] == answer
    every, _ = encode_qa([e], framing, width, 2, {SPAN_ANSWER: 0}, training=False)
    assert len(every) == len(window_starts(12, 4, 2)) and every.last[-1] and not every.last[0]
    assert every.start[0] == NO_POSITION and every.start[1] != NO_POSITION


def test_a_span_ending_on_a_window_boundary_stays_in_that_window():
    context = " ".join(f"w{i}" for i in range(12))
    e, framing, width = _framed(context, "w2 w3", context.index("w2 w3"), capacity=4, stride=2)
    train, _ = encode_qa([e], framing, width, 2, {SPAN_ANSWER: 0}, training=True)
    # windows 0 (w0..w3) and 1 (w2..w5) both hold it; each maps back to the same text
    assert len(train) == 2
    for r in range(2):
        assert span_text(context, train.offsets[r], train.start[r], train.end[r])[0] == "w2 w3"
        assert train.context_mask()[r, train.start[r]] and not train.context_mask()[r, 0]


def test_question_longer_than_the_window_is_one_clear_error():
    e, framing, _ = _framed("a b c", "b", 2, capacity=1, stride=1)
    with pytest.raises(ValueError, match=r"question q1: the question has 1 tokens, which leave "
                                         r"no room for the context in --context 3"):
        encode_qa([e], framing, 3, 1, {SPAN_ANSWER: 0}, training=True)


def test_squad_reader_keeps_answers_and_splits_by_article(tmp_path):
    path = squad_file(tmp_path, [
        [("Paris is in France.", [qa("a1", "Where is Paris?", "France", 12)])],
        [("Bonn is on the Rhine.", [qa("b1", "On what river?", "the Rhine", 11)])],
        [("Oslo is cold.", [qa("c1", "What is cold?", "Oslo", 0)])],
    ])
    data = read_qa(str(path))
    assert [e.qid for e in data.examples] == ["a1", "b1", "c1"] and not data.notes
    assert data.examples[1].starts == [11] and data.examples[1].kind == "span"
    train, val = data.split_groups(2)
    assert [e.qid for e in val.examples] == ["b1"]
    assert [e.qid for e in train.examples] == ["a1", "c1"]


def test_mismatched_answer_start_is_scored_but_not_trained(tmp_path):
    path = squad_file(tmp_path, [[("Paris is in France.", [
        qa("good", "Where?", "France", 12), qa("bad1", "Where?", "France", 3),
        qa("bad2", "Where?", "Paris", 9)])]])
    data = read_qa(str(path))
    assert len(data.notes) == 1
    assert "2 questions have no answer whose answer_start points at its text" in data.notes[0]
    assert "(first: 'bad1')" in data.notes[0]
    tok = tokenizer("word", ["Paris is in France. Where?"])
    feats, untrained = encode_qa(data.examples, QATokens.of(tok), 32, 16, {SPAN_ANSWER: 0},
                                 training=True)
    assert untrained == 2 and list(feats.example) == [0]


@pytest.mark.parametrize("content, message", [
    ('{"data": [', "malformed JSON"),
    ('{"data": {}}', "'data' must be a list"),
    ('{"data": [{"paragraphs": [{"context": "  ", "qas": []}]}]}',
     "data[0].paragraphs[0]: empty context"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x", "question": "q?", '
     '"answers": [], "is_impossible": true}]}]}]}', "question 'x': an unanswerable SQuAD v2.0"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x", "question": "q?", '
     '"answers": [{"text": "c"}]}]}]}]}', "'answer_start' must be a int"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x", "question": "", '
     '"answers": []}]}]}]}', "question 'x': empty question"),
    ('{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "x", "question": "q", '
     '"answers": [{"text": "c", "answer_start": 0}]}, {"id": "x", "question": "q", '
     '"answers": [{"text": "c", "answer_start": 0}]}]}]}]}', "also names a question"),
])
def test_bad_squad_files_name_file_and_question(tmp_path, content, message):
    assert_read_error(tmp_path / "bad.json", content, message)


def assert_read_error(path, content: str, message: str) -> None:
    """Reading ``content`` from ``path`` fails with ``message``, naming the file."""
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError) as err:
        read_qa(str(path))
    assert message in str(err.value) and str(path) in str(err.value)


STORY = """1 Mary moved to the bathroom.
2 John went to the hallway.
3 Where is Mary? \tbathroom\t1
4 Daniel went back to the hallway.
5 Is John in the hallway? \tyes\t2
1 Sandra got the apple there.
2 Sandra dropped the apple.
3 What is Sandra carrying? \tnothing\t1 2
"""


def test_babi_parser_restarts_stories_and_keeps_supporting_facts(tmp_path):
    path = tmp_path / "qa6_train.txt"
    path.write_text(STORY, encoding="utf-8")
    data = read_qa(str(path))
    first, second, third = data.examples
    assert first.context == "Mary moved to the bathroom. John went to the hallway."
    assert first.answers == ["bathroom"] and first.supporting == (1,)
    assert first.group == "qa6" and first.kind == "class" and first.source.endswith(":3")
    # the earlier question is not part of the context
    assert second.context == first.context + " Daniel went back to the hallway."
    assert second.answers == ["yes"]
    assert third.context == "Sandra got the apple there. Sandra dropped the apple."
    assert third.supporting == (1, 2)
    assert answer_vocabulary(data.examples) == [SPAN_ANSWER, "bathroom", "nothing", "yes"]


def test_babi_class_answers_train_on_the_last_window(tmp_path):
    path = tmp_path / "qa1_train.txt"
    path.write_text(STORY, encoding="utf-8")
    data = read_qa(str(path))
    tok = tokenizer("word", [e.context + " " + e.question for e in data.examples])
    vocab = {a: i for i, a in enumerate(answer_vocabulary(data.examples))}
    feats, untrained = encode_qa(data.examples, QATokens.of(tok), 12, 2, vocab, training=True)
    assert untrained == 0 and len(feats) == 3 and feats.last.all()
    assert list(feats.answer) == [vocab["bathroom"], vocab["yes"], vocab["nothing"]]
    assert (feats.start == NO_POSITION).all()
    # the window that ends with the story: its last context token is the story's last
    row = feats.ids[1, :feats.lengths[1]]
    assert row[-1] == tok.encode(".")[0] and row[-2] == tok.encode("hallway")[0]


def test_split_facts_cuts_lines_and_sentences():
    text = "Mary went home. Is it there? Yes!\nJohn left\n\n  Bob stayed 2.5 hours.  "
    assert split_facts(text) == ["Mary went home.", "Is it there?", "Yes!", "John left",
                                 "Bob stayed 2.5 hours."]


def _facts(tmp_path, units):
    path = tmp_path / "qa6_train.txt"
    path.write_text(STORY, encoding="utf-8")
    data = read_qa(str(path))
    tok = tokenizer("word", [e.context + " " + e.question for e in data.examples])
    framing = QATokens.of(tok)
    vocab = {a: i for i, a in enumerate(answer_vocabulary(data.examples))}
    ids = lambda text: tok.hf.encode(text, add_special_tokens=False).ids
    return data, framing, vocab, ids


def test_facts_are_read_question_first_then_from_the_latest_back(tmp_path):
    data, framing, vocab, ids = _facts(tmp_path, 3)
    assert data.examples[1].statements() == ["Mary moved to the bathroom.",
                                             "John went to the hallway.",
                                             "Daniel went back to the hallway."]
    longest = fact_tokens_needed(data.examples, framing)
    assert longest == len(ids("Daniel went back to the hallway."))
    feats = encode_facts(data.examples, framing, 3, longest, vocab, training=True)
    assert feats.ids.shape == (3, 3, longest) and list(feats.lengths) == [3, 3, 3]
    assert list(feats.answer) == [vocab["bathroom"], vocab["yes"], vocab["nothing"]]
    # the second question holds 3 facts: with 3 units the oldest, Mary's, is not read
    want = ["Is John in the hallway?", "Daniel went back to the hallway.",
            "John went to the hallway."]
    for k, text in enumerate(want):
        n = len(ids(text))
        assert feats.counts[1, k] == n and list(feats.ids[1, k, :n]) == ids(text)
        assert (feats.ids[1, k, n:] == 0).all()
    wide = encode_facts(data.examples, framing, 8, longest, vocab, training=True)
    assert list(wide.lengths) == [3, 4, 3] and wide.ids.shape[1] == 4  # cut to the longest
    assert (wide.counts[[0, 2], 3] == 0).all()
    part = wide.take(np.array([2, 0]), 3)
    assert part.ids.shape == (2, 3, longest) and list(part.example) == [2, 0]
    assert part.matches.shape == part.ids.shape


def test_a_fact_s_tokens_are_marked_when_their_word_is_the_question_s(tmp_path):
    """"Is John in the hallway?": "john", "the", "hallway" of each fact, and nothing of the
    question's own unit, of padding or of punctuation."""
    data, framing, vocab, ids = _facts(tmp_path, 3)
    longest = fact_tokens_needed(data.examples, framing)
    feats = encode_facts(data.examples, framing, 8, longest, vocab, training=True)
    asked = {"is", "john", "in", "the", "hallway"}
    texts = ["Is John in the hallway?", "Daniel went back to the hallway.",
             "John went to the hallway.", "Mary moved to the bathroom."]
    for k, text in enumerate(texts):
        (_, offsets), = framing.encode([text])
        want = [k > 0 and text[a:b].lower() in asked for a, b in offsets]
        assert list(feats.matches[1, k, :len(want)]) == want, text
        assert not feats.matches[1, k, len(want):].any()
    assert feats.matches[1, 2].sum() == 3 and not feats.matches[1, 4:].any()
    unmarked = encode_facts(data.examples, framing, 8, longest, vocab, training=True,
                            question_match=False)  # for a model without the match vector
    assert (unmarked.ids == feats.ids).all() and not unmarked.matches.any()
    assert unmarked.take(np.array([1]), 3).matches.shape == (1, 3, longest)


def test_facts_bad_input_is_one_clear_error(tmp_path):
    data, framing, vocab, ids = _facts(tmp_path, 3)
    with pytest.raises(ValueError, match=r"qa6_train.txt:5: fact 3 of the context has 7 tokens; "
                                         r"this model reads questions and facts of up to 6"):
        encode_facts(data.examples, framing, 8, 6, vocab, training=False)
    span = QAExample("q1", "Who?", "Ann ran.", ["Ann"], [0], "span", "t", "f.json: q1")
    with pytest.raises(ValueError, match="f.json: q1: a span answer cannot be read from facts"):
        encode_facts([span], framing, 8, 10, vocab, training=False)
    empty = QAExample("q2", "Who?", "  \n ", [], [], "span", "t", "question 1")
    with pytest.raises(ValueError, match="question 1: the context holds no statement"):
        encode_facts([empty], framing, 8, 10, vocab, training=False)
    # an answer never seen in training: kept for scoring, left out of training
    unseen = {a: i for a, i in vocab.items() if a != "yes"}
    assert len(encode_facts(data.examples, framing, 8, 10, unseen, training=True)) == 2
    kept = encode_facts(data.examples, framing, 8, 10, unseen, training=False)
    assert list(kept.answer) == [unseen["bathroom"], NO_POSITION, unseen["nothing"]]


@pytest.mark.parametrize("content, message", [
    ("1 Mary moved.\n2 Where is Mary?\t\t1\n", ":2: question without an answer"),
    ("1 Mary moved.\n3 Where is Mary?\tx\t1\n", ":2: line number 3 after 1"),
    ("1 Mary moved.\n2 Where is Mary?\tx\t5\n", ":2: supporting fact '5' is not a statement"),
    ("Mary moved.\n", ":1: expected 'NUMBER text'"),
    ("1 Where is Mary?\tx\t\n", ":1: a question with no story before it"),
    ("\n\n", "no questions"),
])
def test_bad_babi_lines_name_file_and_line(tmp_path, content, message):
    assert_read_error(tmp_path / "qa1_train.txt", content, message)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 50) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["data", "paragraphs", "context", "qas", "id", "question", "answers",
                         "text", "answer_start", "title", "is_impossible"]), inner, max_size=4),
    max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(doc=JSON_VALUES)
def test_any_json_document_reads_or_fails_with_one_value_error(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("fuzz") / "doc.json"
    path.write_text(json.dumps({"data": doc}), encoding="utf-8")
    try:
        read_qa(str(path))
    except ValueError as e:
        assert "\n" not in str(e) and str(path) in str(e)


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_bytes_read_or_fail_with_one_value_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "qa1_train.txt"
    path.write_bytes(raw)
    try:
        read_qa(str(path))
    except ValueError as e:
        assert "\n" not in str(e) and str(path) in str(e)


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_question_words_are_matched_by_their_text_not_their_id(kind):
    """Two words outside the vocabulary share the [UNK] id (a subword vocabulary splits them
    into pieces they share); only the word the question asks about is marked, each of its
    tokens, in every window of the context, case aside; question, padding and punctuation
    never."""
    tok = TrainedTokenizer.train(kind, ["the river runs to the sea"], 60, lowercase=False)
    context = "Zorbulax met Quintaro by the River. quintaro left the river."
    example = QAExample("q0", "Where did Quintaro go?", context, [], [], "span", "", "q0")
    feats, _ = encode_qa([example], QATokens.of(tok), context=12 if kind == "word" else 40,
                         stride=3, answers={SPAN_ANSWER: 0}, training=False)
    assert len(feats) > 1

    def words(a, b):
        return {m.group().lower() for m in re.finditer(r"\w+", context)
                if m.start() < b and m.end() > a}

    for row in range(len(feats)):
        lo, n = int(feats.ctx_lo[row]), int(feats.lengths[row])
        for (a, b), marked in zip(feats.offsets[row, lo:n], feats.matches[row, lo:n]):
            assert marked == (words(a, b) == {"quintaro"}), context[a:b]
        assert not feats.matches[row, :lo].any() and not feats.matches[row, n:].any()
    assert feats.matches.any()


@pytest.mark.parametrize("kind", ["word", "bpe"])
@settings(max_examples=25, deadline=None)
@given(context=st.lists(st.sampled_from(PIECES + ["Quux", "quux", "zyzzyva"]), min_size=1,
                        max_size=14),
       question=st.lists(st.sampled_from(PIECES + ["QUUX", "zyzzyva", "what"]), min_size=1,
                         max_size=5))
def test_a_context_token_is_marked_when_its_word_is_the_question_s(kind, context, question):
    """Against the words (runs of word characters, lower-cased) each token overlaps; words
    the vocabulary never saw ("quux", "zyzzyva") included."""
    tok = tokenizer(kind, [" ".join(PIECES)])
    context, question = " ".join(context), " ".join(question)
    asked = {w.lower() for w in re.findall(r"\w+", question)}
    (_, offsets), = QATokens.of(tok).encode([context])
    marked = question_word_matches(question, context, offsets)
    for (a, b), m in zip(offsets, marked):
        words = {w.group().lower() for w in re.finditer(r"\w+", context)
                 if w.start() < b and w.end() > a}
        if not words & asked:
            assert not m, context[a:b]
        elif words <= asked:
            assert m, context[a:b]
