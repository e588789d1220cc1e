"""tokenizer.json is checked against our own schema before the ``tokenizers`` library sees it:
generated documents (a valid one with a value replaced by a hostile one, or by any JSON) are
either refused with one ValueError naming the key, or accepted and then encode and decode with
every id below the model's vocabulary. A document that got past the check and made the library
allocate gigabytes, abort or panic would take this test down with it."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigrad_lm.backend import memory
from minigrad_lm.data.tokenizer import tokenizer_from_dict
from minigrad_lm.data.trained_tokenizer import TrainedTokenizer, library_call

TEXTS = ["the film is good", "a bad film , a dull plot", "good acting and a good plot"] * 5
FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

PADDING = {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": 4_000_000_000,
           "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}
TRUNCATION = {"direction": "Right", "max_length": 4_000_000_000, "strategy": "LongestFirst",
              "stride": 0}
HOSTILE = st.sampled_from([
    4_000_000_000, 2**31 - 1, 2**31, 2**64, -1, 10**6, None, True, 0.5, "", "x" * 1000, [], {},
    PADDING, TRUNCATION,
    {"type": "Replace", "pattern": {"Regex": "(a+)+$"}, "content": "x"},
    {"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"Regex": "(a|a)*b"},
                                          "content": ""}]},
    {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False},
    {"type": "Metaspace", "replacement": "_", "prepend_scheme": "always", "split": True},
    {"type": "Prepend", "prepend": "x" * 10_000}, {"type": "BertNormalizer"},
    {"type": "TemplateProcessing", "single": [], "pair": [], "special_tokens": {}},
    {"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "a"}, {"type": "Unigram"},
    {"type": "BPE", "vocab": {}, "merges": []}, "##",
])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
           | st.text(max_size=8))
ANY_JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def _paths(doc, prefix=()):
    """Every (key path) in the document: objects' keys, the first items of lists."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield (*prefix, key)
            if key not in ("vocab", "merges"):
                yield from _paths(value, (*prefix, key))
            else:  # a few entries of the big tables
                keys = list(value)[:3] if isinstance(value, dict) else range(min(3, len(value)))
                for k in keys:
                    yield (*prefix, key, k)
    elif isinstance(doc, list):
        for i, value in enumerate(doc[:2]):
            yield (*prefix, i)
            yield from _paths(value, (*prefix, i))


DOCUMENTS = {kind: TrainedTokenizer.train(kind, TEXTS, vocab_size=300).to_dict()
             for kind in ("word", "bpe")}
PATHS = {kind: list(_paths(doc)) + [("padding",), ("truncation",), ("normalizer",)]
         for kind, doc in DOCUMENTS.items()}


def _edited(kind: str, path: tuple, value, delete: bool) -> dict:
    doc = copy.deepcopy(DOCUMENTS[kind])
    node = doc
    for key in path[:-1]:
        node = node[key]
    if delete and isinstance(node, dict):
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return doc


# Where a hostile value does harm: drawn as often as all the other keys together.
SENSITIVE = [("padding",), ("truncation",), ("normalizer",), ("pre_tokenizer",),
             ("post_processor",), ("decoder",), ("model",), ("model", "dropout"),
             ("model", "unk_token"), ("model", "continuing_subword_prefix"),
             ("added_tokens", 0, "id"), ("added_tokens", 0, "content"), ("model", "vocab"),
             ("model", "merges")]


@st.composite
def documents(draw):
    kind = draw(st.sampled_from(sorted(DOCUMENTS)))
    paths = [p for p in SENSITIVE if kind == "bpe" or p[-1] != "merges"]
    path = draw(st.sampled_from(paths) | st.sampled_from(PATHS[kind]))
    value = draw(HOSTILE | ANY_JSON)
    if draw(st.booleans()) and path[-2:-1] == ("vocab",):
        value = draw(st.sampled_from([4_000_000_000, 2**31 - 1, 10**6, -1]))
    return kind, _edited(kind, path, value, draw(st.integers(0, 9)) == 0)


@FUZZ
@given(case=documents())
def test_a_document_is_checked_before_the_library_sees_it(case):
    kind, doc = case
    max_vocab = TrainedTokenizer.from_dict(DOCUMENTS[kind]).vocab_size
    json.dumps(doc)  # what a checkpoint could hold
    try:
        tokenizer = tokenizer_from_dict(doc, max_vocab)
    except ValueError as e:
        assert "\n" not in str(e)
        return
    assert tokenizer.vocab_size <= max_vocab
    ids = tokenizer.encode("the good film and a plot")
    assert ids.size == 0 or int(ids.max()) < max_vocab
    tokenizer.decode(ids)


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_ids_beyond_the_models_vocabulary_are_refused_by_key(kind):
    doc = DOCUMENTS[kind]
    size = TrainedTokenizer.from_dict(doc).vocab_size
    with pytest.raises(ValueError, match=rf"key 'model.vocab.*expected an integer in \[0, "
                                         rf"{size - 2}\]"):
        tokenizer_from_dict(doc, size - 1)
    bad = _edited(kind, ("added_tokens", 0, "id"), 4_000_000_000, False)
    with pytest.raises(ValueError, match=r"key 'added_tokens\[0\].id'"):
        tokenizer_from_dict(bad, size)


@pytest.mark.parametrize("size", [10**12, 2**40, 10**9])
@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_a_huge_vocabulary_size_is_asked_for_no_more_than_the_text_holds(kind, size):
    assert TrainedTokenizer.train(kind, TEXTS, vocab_size=size) == TrainedTokenizer.train(
        kind, TEXTS, vocab_size=10_000)


def test_a_vocabulary_that_cannot_fit_is_refused_before_learning(monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": (2**20, "available"))
    with pytest.raises(MemoryError, match="a bpe vocabulary of 100,000 tokens needs about"):
        TrainedTokenizer.train("bpe", ["word " * 20_000], vocab_size=100_000)


def test_a_rust_panic_becomes_one_value_error():
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    hf.normalizer = tokenizers.normalizers.Replace(tokenizers.Regex("(a+)+$"), "x")
    with pytest.raises(ValueError, match="encoding text: the tokenizers library failed"):
        with library_call("encoding text"):
            hf.encode("a" * 1000 + "c")  # catastrophic backtracking: the regex engine panics
