"""The token cache and the streaming reader: built once, reused, rebuilt when its source or
tokenizer changes, refused when corrupt; memory flat in the corpus size; gzip transparent."""
from __future__ import annotations

import gzip
import tracemalloc

import numpy as np
import pytest

from minigrad_lm.data.streaming import iter_lines
from minigrad_lm.data.text import read_text
from minigrad_lm.data.token_cache import TokenizerRequest, prepare_token_cache
from minigrad_lm.data.trained_tokenizer import TrainedTokenizer
from minigrad_lm.io.untrusted import InputError
from tests.cli_support import synthetic_text

WORD = TokenizerRequest("word", 200, lowercase=True)


def _build(tmp_path, sources, request=WORD, **kwargs):
    said = []
    cache = prepare_token_cache(tmp_path / "cache", [str(s) for s in sources], request,
                                say=said.append, **kwargs)
    return cache, said


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(synthetic_text(3000))
    return path


def test_built_once_then_reused_with_the_same_tokens(tmp_path, corpus):
    first, said = _build(tmp_path, [corpus], val_every_nth=10)
    assert first.built and "tokenizing" in said[0]
    again, said = _build(tmp_path, [corpus], val_every_nth=10)
    assert not again.built and said == []
    np.testing.assert_array_equal(again.train, first.train)
    np.testing.assert_array_equal(again.val, first.val)


def test_the_tokens_are_the_lines_encoded_each_followed_by_sep(tmp_path, corpus):
    cache, _ = _build(tmp_path, [corpus], val_every_nth=10)
    lines = corpus.read_text().split("\n")
    train = [l for n, l in enumerate(lines, 1) if n % 10 and l.strip()]
    val = [l for n, l in enumerate(lines, 1) if not n % 10 and l.strip()]
    tok, sep = cache.tokenizer, [cache.tokenizer.sep_id]
    for held, ids in ((train, cache.train), (val, cache.val)):
        expected = np.concatenate([np.concatenate([tok.encode(l), sep]) for l in held])
        np.testing.assert_array_equal(ids, expected)
    # the vocabulary was learned from the training lines alone
    learned = TrainedTokenizer.train("word", train, 200, lowercase=True)
    assert learned.to_dict() == tok.to_dict()


def test_a_changed_source_or_tokenizer_rebuilds_the_cache_and_says_why(tmp_path, corpus):
    first, _ = _build(tmp_path, [corpus])
    corpus.write_text(synthetic_text(3000, seed=1))
    changed, said = _build(tmp_path, [corpus])
    assert changed.built and "changed since the cache was built" in said[0]
    assert changed.folder == first.folder
    assert not np.array_equal(np.asarray(changed.train[:200]), np.asarray(first.train[:200]))
    other, said = _build(tmp_path, [corpus], TokenizerRequest("bpe", 300))
    assert other.built and "tokenizer changed (word 200, lowercase -> bpe 300)" in said[0]
    assert other.tokenizer.kind == "bpe"
    given = TokenizerRequest("word", given=first.tokenizer.to_dict())
    reused, said = _build(tmp_path, [corpus], given)
    assert reused.built and "a checkpoint's" in said[0]
    assert reused.tokenizer.to_dict() == first.tokenizer.to_dict()


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest"])
def test_a_corrupt_cache_is_refused_by_name(tmp_path, corpus, damage):
    cache, _ = _build(tmp_path, [corpus])
    folder = cache.folder
    del cache
    target = folder / ("manifest.json" if damage == "manifest" else "train.bin")
    data = bytearray(target.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    elif damage == "truncate":
        data = data[:-2]
    else:
        data = data[:len(data) // 2]
    target.write_bytes(bytes(data))
    with pytest.raises(InputError, match=f"{target.name}"):
        _build(tmp_path, [corpus])
    assert target.read_bytes() == bytes(data)  # refused, not silently rebuilt


def test_gzip_is_read_transparently_everywhere(tmp_path, corpus):
    packed = tmp_path / "corpus.gz"
    packed.write_bytes(gzip.compress(corpus.read_bytes()))
    assert list(iter_lines(packed)) == corpus.read_text().split("\n")[:-1]
    assert read_text(packed) == corpus.read_text()
    plain, _ = _build(tmp_path / "a", [corpus])
    gz, _ = _build(tmp_path / "b", [packed])
    np.testing.assert_array_equal(gz.train, plain.train)


def test_a_corrupt_gzip_file_and_a_bad_byte_name_the_file(tmp_path, corpus):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(corpus.read_bytes())[:-40])
    with pytest.raises(ValueError, match="bad.gz: not a readable gzip file"):
        list(iter_lines(bad))
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(ValueError, match="latin.txt:2: not valid utf-8"):
        list(iter_lines(latin))
    assert list(iter_lines(latin, "latin-1")) == ["fine", "café"]


def _peak_while_building(tmp_path, n_words: int) -> int:
    path = tmp_path / f"c{n_words}.txt"
    with open(path, "w") as f:
        for seed in range(n_words // 20_000):
            f.write(synthetic_text(20_000, seed=seed))
    tracemalloc.start()
    try:
        _build(tmp_path / f"cache{n_words}", [path])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_building_memory_is_flat_in_the_corpus_size(tmp_path):
    small = _peak_while_building(tmp_path, 100_000)  # about 0.6 MB of text
    large = _peak_while_building(tmp_path, 800_000)  # about 5 MB
    # Python's allocations while the whole corpus is read, learned from and written: a list of
    # its lines or ids would grow eight-fold with it.
    assert large < small * 1.5 + (1 << 20), (small, large)
    assert large < 8 << 20
