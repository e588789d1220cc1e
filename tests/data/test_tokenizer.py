"""Tokenizers learned from data (word-level and byte-level BPE, on `tokenizers`)."""
import json

import numpy as np
import pytest
import tokenizers
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minigrad_lm.data.tokenizer import CharTokenizer, tokenizer_from_dict
from minigrad_lm.data.trained_tokenizer import SPECIAL_TOKENS, TrainedTokenizer

TEXTS = ["the film is good", "the film is bad", "a good , funny film", "dull and slow !"] * 3


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_special_tokens_have_fixed_ids(kind):
    tok = TrainedTokenizer.train(kind, TEXTS, vocab_size=300)
    assert [tok.token_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tok.pad_id == 0 and tok.cls_id == 2 and tok.sep_id == 3 and tok.mask_id == 4
    assert tok.kind == kind


def test_word_tokenizer_round_trips_and_maps_unseen_words_to_unk():
    tok = TrainedTokenizer.train("word", TEXTS)
    ids = tok.encode("the film is good")
    assert ids.dtype == np.int64 and len(ids) == 4 and ids.min() >= len(SPECIAL_TOKENS)
    assert tok.decode(ids) == "the film is good"
    np.testing.assert_array_equal(tok.encode("the zebra"), [tok.token_id("the"), 1])
    lines = np.concatenate([tok.encode("the film"), [3], tok.encode("is good")])
    assert tok.decode(lines) == "the film\nis good"  # [SEP] ends a line


def test_word_tokenizer_min_count_lowercase_and_size():
    tok = TrainedTokenizer.train("word", ["Good good GOOD rare"], lowercase=True, min_count=2)
    assert tok.vocab_size == len(SPECIAL_TOKENS) + 1
    np.testing.assert_array_equal(tok.encode("GOOD rare"), [tok.token_id("good"), 1])
    small = TrainedTokenizer.train("word", TEXTS, vocab_size=len(SPECIAL_TOKENS) + 2)
    assert small.vocab_size == len(SPECIAL_TOKENS) + 2


@settings(max_examples=30)
@given(st.text(min_size=1, max_size=40))
@example("\U00010781")  # NFKC 'ː' for Python's Unicode tables, itself for the tokenizers' ones
def test_bpe_encodes_any_text_and_round_trips(text):
    tok = _bpe()  # the text comes back NFKC-normalized, with the prefix space BPE added
    normalized = tokenizers.normalizers.NFKC().normalize_str(text)  # the tokenizer's tables
    assert tok.decode(tok.encode(text)).strip() == normalized.strip()


_CACHE = {}


def _bpe():
    if "bpe" not in _CACHE:
        _CACHE["bpe"] = TrainedTokenizer.train("bpe", TEXTS, vocab_size=300)
    return _CACHE["bpe"]


@pytest.mark.parametrize("kind", ["word", "bpe"])
def test_saved_form_is_a_standard_tokenizer_json(kind, tmp_path):
    tok = TrainedTokenizer.train(kind, TEXTS, vocab_size=300)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(tok.to_dict()), encoding="utf-8")
    opened = tokenizers.Tokenizer.from_file(str(path))
    assert opened.encode("the film is good", add_special_tokens=False).ids == \
        tok.encode("the film is good").tolist()
    again = tokenizer_from_dict(json.loads(path.read_text(encoding="utf-8")))
    assert again == tok and isinstance(again, TrainedTokenizer)


def test_bad_documents_and_ids_are_clear_errors():
    with pytest.raises(ValueError, match="key .model.: lacks .unk_token."):
        TrainedTokenizer.from_dict({"model": {"type": "WordLevel", "vocab": "x"}})
    with pytest.raises(ValueError, match="token id 999 is out of range"):
        _bpe().decode([999])
    with pytest.raises(ValueError, match="kind must be one of"):
        TrainedTokenizer.train("chars", TEXTS)


def test_char_vocabulary_with_the_replacement_character_reads_unseen_characters():
    strict = CharTokenizer.from_text("ab")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        strict.encode("abc")
    tolerant = CharTokenizer.from_text("ab", unknown=True)
    assert tolerant.decode(tolerant.encode("abé")) == "ab\ufffd"
