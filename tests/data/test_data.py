"""Default corpus, tokenizers, corpora on disk, batches and classification files."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigrad_lm.data import corpus
from minigrad_lm.data.corpus import default_corpus
from minigrad_lm.data.labeled import (
    encode_classification,
    load_class_files,
    load_classification_rows,
    load_labeled,
)
from minigrad_lm.data.text import (
    load_text,
    load_token_folder,
    read_vocab_json,
    split_train_val,
    unigram_baseline,
    windows,
)
from minigrad_lm.data.tokenizer import ByteTokenizer, CharTokenizer, tokenizer_from_dict

# --------------------------------------------------------------------------------------------
# Default corpus
# --------------------------------------------------------------------------------------------


def test_default_corpus_is_deterministic_prose():
    text = default_corpus()
    default_corpus.cache_clear()
    again = default_corpus()
    assert again == text and again is not text
    assert 300_000 <= len(text) <= 1_200_000
    assert len(text) <= corpus.DEFAULT_CORPUS_CHARS
    assert sum(c.isascii() for c in text) / len(text) > 0.99
    assert sum(c.isalpha() or c == " " for c in text) / len(text) > 0.7
    assert text == text.strip() and "\r" not in text
    words = text.split()
    assert words.count("the") > 1000 and words.count("Return") > 100


def _fake_stdlib(root: Path) -> None:
    files = {
        "b.py": '"""Module b."""\ndef f():\n    """\n    Indented\n      docstring.\n    """\n',
        "a.py": (
            '"""Module a."""\nclass C:\n    """Class C."""\n    def m(self):\n'
            '        """Method m."""\ndef g():\n    """Function g."""\n'
        ),
        "pkg/__init__.py": '"""Package."""\n',
        "pkg/test/t.py": '"""SKIP test."""\n',
        "tests/t.py": '"""SKIP tests."""\n',
        "site-packages/x.py": '"""SKIP site."""\n',
        "idlelib/x.py": '"""SKIP idle."""\n',
        "lib2to3/x.py": '"""SKIP 2to3."""\n',
        "turtledemo/x.py": '"""SKIP turtle."""\n',
        "broken.py": '"""SKIP broken.\ndef (\n',
        "c.txt": '"""SKIP not python."""\n',
        "z.py": '"""Last one, too long to fit."""\n',
    }
    for name, source in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)


def test_default_corpus_walk_order_skips_and_cut(tmp_path, monkeypatch):
    _fake_stdlib(tmp_path)
    monkeypatch.setattr(corpus.sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    expected = [
        "Module a.",
        "Class C.",
        "Method m.",
        "Function g.",
        "Module b.",
        "Indented\n  docstring.",
        "Package.",
    ]
    monkeypatch.setattr(corpus, "DEFAULT_CORPUS_CHARS", len("\n\n".join(expected)) + 5)
    # Bypass the cache: the real corpus is memoized for the whole session.
    assert default_corpus.__wrapped__() == "\n\n".join(expected)


# --------------------------------------------------------------------------------------------
# Tokenizers
# --------------------------------------------------------------------------------------------


@given(st.text(min_size=1))
def test_char_tokenizer_round_trip(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert tok.chars == sorted(set(text))
    assert tok.decode(ids) == text
    assert tok.decode(ids.tolist()) == text
    again = CharTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again == tok and again.vocab_size == len(set(text))
    assert tokenizer_from_dict(tok.to_dict()) == tok


def test_char_tokenizer_ids_follow_vocab_order():
    tok = CharTokenizer.from_dict({"type": "char", "chars": ["z", "a", "é"]})
    np.testing.assert_array_equal(tok.encode("aéz"), [1, 2, 0])
    assert tok.encode("").shape == (0,)
    assert tok.decode([]) == ""


def test_char_tokenizer_errors():
    tok = CharTokenizer.from_text("hello world")
    with pytest.raises(ValueError, match=r"character 'X' at position 6 is not in the vocabulary"):
        tok.encode("hello X")
    with pytest.raises(ValueError, match=r"character '\\n' at position 0"):
        tok.encode("\nhello")
    with pytest.raises(ValueError, match="token id 99 at position 1 is out of range"):
        tok.decode([0, 99])
    with pytest.raises(ValueError, match="token id -1"):
        tok.decode(np.array([-1]))
    with pytest.raises(ValueError, match="1-D"):
        tok.decode(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="unique"):
        CharTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="not a single character"):
        CharTokenizer(["ab"])
    with pytest.raises(ValueError, match="at least one"):
        CharTokenizer.from_text("")


@settings(max_examples=50)
@given(st.text())
def test_byte_tokenizer_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text.encode("utf-8", "replace").decode("utf-8"))
    assert ids.dtype == np.int64 and (ids < 256).all()
    assert tok.decode(ids) == text.encode("utf-8", "replace").decode("utf-8")


def test_byte_tokenizer_decodes_broken_utf8_with_replacement():
    tok = ByteTokenizer()
    ids = tok.encode("é")  # two bytes
    assert tok.decode(ids[:1]) == "\ufffd"
    assert tok.vocab_size == 256
    assert tokenizer_from_dict(json.loads(json.dumps(tok.to_dict()))) == tok
    with pytest.raises(ValueError, match="token id 256"):
        tok.decode([256])


def test_tokenizer_from_dict_unknown_type():
    expected = "unknown tokenizer type 'bpe'; expected one of byte, char"
    with pytest.raises(ValueError, match=expected):
        tokenizer_from_dict({"type": "bpe"})
    with pytest.raises(ValueError, match="unknown tokenizer type None"):
        tokenizer_from_dict({"chars": ["a"]})


# --------------------------------------------------------------------------------------------
# Text files and token folders
# --------------------------------------------------------------------------------------------


def test_load_text_file_and_folder(tmp_path):
    (tmp_path / "one.txt").write_bytes("\ufeffHello\r\nworld".encode())
    assert load_text(tmp_path / "one.txt") == "Hello\nworld"
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "b.txt").write_text("second")
    (folder / "a.txt").write_text("first")
    (folder / "notes.md").write_text("ignored")
    assert load_text(folder) == "first\nsecond"


def test_load_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.txt: no such file"):
        load_text(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes(b"ok\ncaf\xe9 ok")
    with pytest.raises(ValueError, match=r"latin1\.txt:2: not valid utf-8 \(byte 0xe9\); give "
                       r"the file's encoding with --encoding \(e\.g\. --encoding latin-1\)"):
        load_text(tmp_path / "latin1.txt")
    assert load_text(tmp_path / "latin1.txt", encoding="latin-1") == "ok\ncafé ok"
    (tmp_path / "empty.txt").write_text(" \n")
    with pytest.raises(ValueError, match=r"empty\.txt: corpus is empty"):
        load_text(tmp_path / "empty.txt")
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "data.csv").write_text("x")
    with pytest.raises(ValueError, match=r"nothing: folder has no \.txt files"):
        load_text(folder)


def _token_folder(path: Path, train: list[int], val: list[int], vocab: object) -> Path:
    path.mkdir()
    np.array(train, dtype="<u2").tofile(path / "train.bin")
    np.array(val, dtype="<u2").tofile(path / "val.bin")
    if vocab is not None:
        (path / "vocab.json").write_text(json.dumps(vocab))
    return path


def test_load_token_folder_with_vocab_size(tmp_path):
    folder = _token_folder(tmp_path / "owt", [1, 2, 50256], [7, 8], {"vocab_size": 50257})
    train, val, tok = load_token_folder(folder)
    assert tok is None
    np.testing.assert_array_equal(train, [1, 2, 50256])
    np.testing.assert_array_equal(val, [7, 8])
    assert not train.flags.writeable
    assert read_vocab_json(folder) == (None, 50257)
    x, _ = windows(train, np.array([0]), 2)
    assert x.dtype == np.int64 and type(x) is np.ndarray


def test_load_token_folder_with_tokenizer(tmp_path):
    tok = CharTokenizer.from_text("abc")
    folder = _token_folder(tmp_path / "chars", [0, 1, 2, 1], [2], tok.to_dict())
    train, _, tok_dict = load_token_folder(folder)
    assert tokenizer_from_dict(tok_dict).decode(train) == "abcb"
    assert read_vocab_json(folder) == (tok.to_dict(), 3)


def test_load_token_folder_refuses_meta_pkl(tmp_path, monkeypatch):
    folder = _token_folder(tmp_path / "shakespeare", [1, 2], [3], None)
    (folder / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": 65}))

    def forbidden(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    with pytest.raises(ValueError, match=r"meta\.pkl.*pickle.*provide vocab\.json instead"):
        load_token_folder(folder)


@pytest.mark.parametrize(
    ("train", "val", "vocab", "error", "match"),
    [
        ([1, 2], [3], None, FileNotFoundError, r"vocab\.json: no such file"),
        (
            [1, 70],
            [3],
            {"vocab_size": 65},
            ValueError,
            r"train\.bin: token id 70 at index 1 is >= "
            "vocab_size 65",
        ),
        ([1], [65], {"vocab_size": 65}, ValueError, r"val\.bin: token id 65"),
        ([1], [], {"vocab_size": 65}, ValueError, r"val\.bin: empty token file"),
        ([1], [2], {"vocab_size": 0}, ValueError, r"1 <= N <= 65536"),
        ([1], [2], {"vocab_size": 70000}, ValueError, r"1 <= N <= 65536"),
        ([1], [2], [65], ValueError, "expected a tokenizer dict"),
        ([1], [2], {"type": "bpe"}, ValueError, r"vocab\.json: unknown tokenizer type 'bpe'"),
    ],
)
def test_load_token_folder_errors(tmp_path, train, val, vocab, error, match):
    folder = _token_folder(tmp_path / "tok", train, val, vocab)
    with pytest.raises(error, match=match):
        load_token_folder(folder)


def test_load_token_folder_file_problems(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such token folder"):
        load_token_folder(tmp_path / "absent")
    folder = _token_folder(tmp_path / "tok", [1, 2], [3], {"vocab_size": 10})
    with open(folder / "train.bin", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(ValueError, match=r"train\.bin: size 5 bytes is not a whole number"):
        load_token_folder(folder)
    (folder / "train.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"train\.bin: no such file"):
        load_token_folder(folder)
    (folder / "vocab.json").write_text('{"vocab_size":\n}')
    with pytest.raises(ValueError, match=r"vocab\.json:2: malformed JSON"):
        load_token_folder(folder)


# --------------------------------------------------------------------------------------------
# Splits, batches, baseline
# --------------------------------------------------------------------------------------------


def test_split_train_val():
    ids = np.arange(100)
    train, val = split_train_val(ids)
    np.testing.assert_array_equal(train, np.arange(90))
    np.testing.assert_array_equal(val, np.arange(90, 100))
    assert len(split_train_val(ids, 0.25)[1]) == 25
    with pytest.raises(ValueError, match="val_fraction must be in"):
        split_train_val(ids, 1.0)
    with pytest.raises(ValueError, match="corpus of 1 tokens is too short"):
        split_train_val(np.arange(1))


def test_windows_are_contiguous_runs_and_their_next_tokens():
    ids = np.arange(1000, 1100, dtype=np.uint16)
    starts = np.random.default_rng(0).integers(0, 100 - 16, size=8)
    x, y = windows(ids, starts, 16)
    assert x.shape == y.shape == (8, 16)
    assert x.dtype == y.dtype == np.int64 and x.flags.c_contiguous and y.flags.c_contiguous
    np.testing.assert_array_equal(y[:, :-1], x[:, 1:])
    np.testing.assert_array_equal(y[:, -1], x[:, -1] + 1)
    np.testing.assert_array_equal(np.diff(x, axis=1), 1)  # each row is one contiguous window
    np.testing.assert_array_equal(x[:, 0], 1000 + starts)


def test_unigram_baseline():
    # Uniform train counts make every token equally likely: the baseline is log(V).
    assert unigram_baseline(np.arange(4).repeat(3), np.array([0, 3]), 4) == pytest.approx(
        math.log(4)
    )
    # Add-one smoothing: p(0) = (2+1)/(2+3), p(2) = (0+1)/(2+3).
    expected = -(math.log(3 / 5) + math.log(1 / 5)) / 2
    assert unigram_baseline(np.array([0, 0]), np.array([0, 2]), 3) == pytest.approx(expected)
    with pytest.raises(ValueError, match="at least one validation token"):
        unigram_baseline(np.array([0]), np.array([], dtype=np.int64), 3)
    with pytest.raises(ValueError, match=r"token id 3 .* vocabulary of 3"):
        unigram_baseline(np.array([0]), np.array([3]), 3)


# --------------------------------------------------------------------------------------------
# Classification files
# --------------------------------------------------------------------------------------------


def test_load_glue_tsv(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text('sentence\tlabel\tidx\r\na "quoted", fine film \t1\t0\r\n\ndull\t0\t1\n')
    rows = load_classification_rows(path)
    assert rows.texts == ['a "quoted", fine film ', "dull"]
    assert rows.labels.dtype == np.int64 and rows.labels.tolist() == [1, 0]
    assert rows.names() == [f"{path}:2", f"{path}:4"]


def test_load_csv(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text('label,text\n2,"great, really\nlong"\n0,bad\n', encoding="utf-8-sig")
    rows = load_classification_rows(path)
    assert rows.texts == ["great, really\nlong", "bad"]
    assert rows.labels.tolist() == [2, 0]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        (
            "dev.tsv",
            "sentence\tlabel\n" + "ok\t1\n" * 5 + "meh\tpos\n",
            r"dev\.tsv:7: label 'pos' is not an integer",
        ),
        ("dev.tsv", "sentence\tlabel\nok\t1.0\n", r"dev\.tsv:2: label '1\.0' is not an integer"),
        ("dev.tsv", "sentence\tlabel\nok\t-1\n", r"dev\.tsv:2: label -1 is negative"),
        ("dev.tsv", "sentence\tlabel\nok\t99999999999999999999999\n",
         r"dev\.tsv:2: label 99999999999999999999999 is too large"),
        ("dev.tsv", "sentence\tlabel\nok\t65536\n", r"dev\.tsv:2: label 65536 is too large"),
        ("neg.txt", "one sentence\n", r"neg\.txt:1: header lacks .*one file of sentences per "
         r"class, give the files as --data FILE0 FILE1"),
        (
            "test.tsv",
            "index\tsentence\n0\tok\n",
            r"test\.tsv:1: header lacks column\(s\) 'label' \(found 'index', 'sentence'\)",
        ),
        ("dev.tsv", "sentence\tlabel\nok\t1\nbroken\n", r"dev\.tsv:3: expected 2 fields, found 1"),
        ("dev.tsv", "sentence\tlabel\n  \t1\n", r"dev\.tsv:2: empty sentence"),
        ("dev.tsv", "sentence\tlabel\n\n", r"dev\.tsv: no rows after the header"),
        ("dev.tsv", "", r"dev\.tsv: empty file"),
        ("data.csv", "sentence,label\nok,1\n", r"data\.csv:1: header lacks column\(s\) 'text'"),
        ("data.csv", 'text,label\n"multi\nline",1\n,0\n', r"data\.csv:4: empty text"),
        ("data.csv", "text,label\nok,1,extra\n", r"data\.csv:2: expected 2 fields, found 3"),
    ],
)
def test_classification_file_errors(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_classification_rows(path)


def test_classification_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dev\.tsv: no such file"):
        load_classification_rows(tmp_path / "dev.tsv")
    with pytest.raises(ValueError, match="is a folder, not a file"):
        load_classification_rows(tmp_path)


def test_class_per_file_labels_by_position_and_every_nth_line_held_out(tmp_path):
    neg, pos = tmp_path / "neg.txt", tmp_path / "pos.txt"
    neg.write_text("".join(f"bad {i}\n" for i in range(1, 11)), encoding="latin-1")
    pos.write_text("good 1\n\ngood 3\ngood 4\n", encoding="latin-1")
    rows = load_labeled([str(neg), str(pos)], encoding="latin-1")
    assert rows.labels.tolist() == [0] * 10 + [1] * 3  # the blank line is skipped
    assert rows.names()[-1] == f"{pos}:4"
    train, val = rows.hold_out_every(2)
    assert val.texts == ["bad 2", "bad 4", "bad 6", "bad 8", "bad 10", "good 4"]
    assert train.texts == ["bad 1", "bad 3", "bad 5", "bad 7", "bad 9", "good 1", "good 3"]
    assert val.names()[-1] == f"{pos}:4" and train.labels.tolist() == [0] * 5 + [1] * 2
    with pytest.raises(ValueError, match="--val-every-nth 20 leaves no validation rows"):
        rows.hold_out_every(20)
    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence\tlabel\nfine\t1\n")
    assert load_labeled([str(tsv)]).labels.tolist() == load_labeled(str(tsv)).labels.tolist() == [1]


def test_class_files_errors_name_the_file_line_and_flag(tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="blank.txt: no sentences"):
        load_class_files([latin, blank], encoding="latin-1")
    with pytest.raises(ValueError, match=r"latin\.txt:2: not valid utf-8 \(byte 0xe9\); give "
                       r"the file's encoding with --encoding"):
        load_class_files([latin, latin])
    with pytest.raises(ValueError, match="--encoding 'klingon': not an encoding"):
        load_class_files([latin, latin], encoding="klingon")
    assert load_class_files([latin, latin], encoding="latin-1").texts[1] == "café"


def test_encode_classification_truncates_and_pads():
    tok = CharTokenizer.from_text("abcdef")
    ids, lengths, cut = encode_classification(["abcdef", "fa", "c"], tok, context=4)
    assert ids.dtype == lengths.dtype == np.int64 and cut == 1
    np.testing.assert_array_equal(ids, [[0, 1, 2, 3], [5, 0, 0, 0], [2, 0, 0, 0]])
    np.testing.assert_array_equal(lengths, [4, 2, 1])
    ids, lengths, cut = encode_classification(["fa", "abc"], tok, context=3, prefix=[4])
    np.testing.assert_array_equal(ids, [[4, 5, 0], [4, 0, 1]])
    assert lengths.tolist() == [3, 3] and cut == 1
    ids, lengths, cut = encode_classification([], tok, context=4)
    assert ids.shape == (0, 4) and lengths.shape == (0,) and cut == 0


def test_encode_classification_errors():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="text 1 encodes to no tokens"):
        encode_classification(["a", ""], tok, 4)
    with pytest.raises(ValueError, match=r"text 0: character 'z' at position 1"):
        encode_classification(["az"], tok, 4)
    with pytest.raises(ValueError, match="context must be >= 1"):
        encode_classification(["a"], tok, 0)
