"""Tokenizers learned from the user's own text, on the Hugging Face ``tokenizers`` library.

``word``: one token per word or punctuation mark (``tokenizers``' ``Whitespace`` split), the
vocabulary being the most frequent words of the training text; any other word becomes
``[UNK]``, so inference never fails on a word it has not seen.
``bpe``: byte-level BPE (GPT-2's scheme) trained on the text: every byte is in the alphabet,
so any text encodes, and frequent words are single tokens.

Both reserve the same special tokens at the same ids (:data:`SPECIAL_TOKENS`): ``[PAD]`` 0,
``[UNK]`` 1, ``[CLS]`` 2 (the token a classifier can pool), ``[SEP]`` 3 and ``[MASK]`` 4 (what a
masked language model fills in; vocabularies learned before it existed lack it). ``to_dict()`` is
the library's own ``tokenizer.json`` document, so a checkpoint's ``tokenizer.json`` opens with
``tokenizers.Tokenizer.from_file`` as it is.

GPT-2's byte-level BPE, read from a Hugging Face folder (:func:`read_gpt2_tokenizer`), is the
same class with none of those special tokens: every token is text, ``<|endoftext|>`` included.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from ..backend import memory
from ..io.files import CheckpointError, atomic_write_json, atomic_write_text, read_json
from ..io.untrusted import (
    ANY,
    MAX_JSON_BYTES,
    NULL,
    Bool,
    InputError,
    Int,
    ListOf,
    MapOf,
    Object,
    OneOf,
    Optional,
    Str,
    check,
    read_regular_bytes,
    short,
)

__all__ = ["DEFAULT_VOCAB_SIZE", "ENDOFTEXT", "FIRST_WORD_ID", "KINDS", "SPECIAL_TOKENS",
           "TrainedTokenizer", "check_document", "from_gpt2_bpe_dict", "gpt2_tokenizer",
           "has_tokenizer_files", "is_hf_dict", "library_call", "read_gpt2_tokenizer",
           "write_gpt2_tokenizer"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD, UNK, CLS, SEP, MASK = SPECIAL_TOKENS
FIRST_WORD_ID = len(SPECIAL_TOKENS)  # the ids below are special tokens
KINDS = ("word", "bpe")
DEFAULT_VOCAB_SIZE = {"word": 30_000, "bpe": 8_000}
_MODEL_KIND = {"WordLevel": "word", "BPE": "bpe"}
ENDOFTEXT = "<|endoftext|>"  # GPT-2's document separator, its EOS
# NFKC turns one character into at most 18 (U+FDFA).
_NFKC_GROWTH = 18
# Learning a vocabulary, then training a model on it, takes at least this much per token.
TRAINER_BYTES_PER_TOKEN = 64
# Ids must fit tokenizers' u32 and keep vocab_size a valid config size (2**31 - 1).
MAX_TOKEN_ID = 2**31 - 2


def _document_spec(max_id: int) -> Object:
    """The ``tokenizer.json`` shapes that training and GPT-2's folders hold, nothing more: no
    padding or truncation, normalizers NFKC and Lowercase only (a Replace pattern is a regex the
    library may choke on), every id in [0, max_id]."""
    typed = Object({"type": Str()})
    byte_level = Object({"type": Str(), "add_prefix_space": Bool(), "trim_offsets": Bool(),
                         "use_regex": Bool()}, required=("type",))
    simple = OneOf("type", {"NFKC": typed, "Lowercase": typed})
    normalizer = OneOf("type", {"NFKC": typed, "Lowercase": typed, "Sequence": Object(
        {"type": Str(), "normalizers": ListOf(simple, max_len=2)}, required=("normalizers",))})
    ids = MapOf(Int(0, max_id), what="an object of token -> id")
    affix = Optional(Str(choices=("",)))
    model = OneOf("type", {
        "WordLevel": Object({"type": Str(), "vocab": ids, "unk_token": Str()},
                            required=("vocab", "unk_token")),
        "BPE": Object({"type": Str(), "dropout": NULL, "unk_token": Optional(Str()),
                       "continuing_subword_prefix": affix, "end_of_word_suffix": affix,
                       "fuse_unk": Bool(), "byte_fallback": Bool(), "ignore_merges": Bool(),
                       "vocab": ids, "merges": ListOf(ANY)}, required=("vocab", "merges")),
    })
    added = Object({"id": Int(0, max_id), "content": Str(), "single_word": Bool(),
                    "lstrip": Bool(), "rstrip": Bool(), "normalized": Bool(), "special": Bool()},
                   required=("id", "content"))
    return Object({
        "version": Str(), "truncation": NULL, "padding": NULL,
        "added_tokens": ListOf(added, max_len=len(SPECIAL_TOKENS)),
        "normalizer": Optional(normalizer),
        "pre_tokenizer": Optional(OneOf("type", {"Whitespace": typed, "ByteLevel": byte_level})),
        "post_processor": Optional(OneOf("type", {"ByteLevel": byte_level})),
        "decoder": Optional(OneOf("type", {"ByteLevel": byte_level})),
        "model": model,
    }, required=("model",))


_DOCUMENT = "tokenizer document"
# Which pre-tokenizer each model is trained with (and GPT-2's BPE comes with).
_PRE_TOKENIZER = {"WordLevel": "Whitespace", "BPE": "ByteLevel"}


def check_document(d: Any, max_vocab: int = MAX_TOKEN_ID + 1) -> None:
    """Refuse a ``tokenizers`` document that is not one of the shapes we write (see
    :func:`_document_spec`) or holds an id >= ``max_vocab``, before the library sees it: a
    huge id or a padding block makes the library allocate gigabytes, a regex can make it
    panic. A ValueError names the key (the caller names the file)."""
    try:
        check(d, _document_spec(max(0, max_vocab - 1)), _DOCUMENT)
    except InputError as e:
        raise ValueError(str(e).removeprefix(f"{_DOCUMENT}: ")) from None
    model = d["model"]
    pre = (d.get("pre_tokenizer") or {}).get("type")
    if pre != _PRE_TOKENIZER[model["type"]]:
        raise ValueError(f"key 'pre_tokenizer': a {model['type']} model is split into words by "
                         f"{_PRE_TOKENIZER[model['type']]}, not {short(pre)}")
    vocab = model["vocab"]
    try:
        if model["type"] == "BPE":
            _check_merges(model["merges"], _check_vocab(vocab))
        elif len(set(vocab.values())) != len(vocab):
            raise ValueError("vocabulary ids must be unique")
        elif model["unk_token"] not in vocab:
            raise ValueError(f"the unknown token {short(model['unk_token'])} is not in the "
                             "vocabulary")
    except ValueError as e:
        raise ValueError(f"key 'model': {e}") from None
    added = d.get("added_tokens") or []
    for n, token in enumerate(added):  # training adds tokens of its vocabulary only
        if vocab.get(token["content"]) != token["id"]:
            raise ValueError(f"key 'added_tokens[{n}]': {short(token['content'])} is not token "
                             f"{token['id']} of the vocabulary")


def is_hf_dict(d: Any) -> bool:
    """True for a ``tokenizers`` JSON document (it has a ``model`` and no ``type`` of ours)."""
    return isinstance(d, dict) and isinstance(d.get("model"), dict) and "type" not in d


@contextlib.contextmanager
def library_call(what: str) -> Iterator[None]:
    """Run a call into ``tokenizers``: whatever it raises, a Rust panic included (pyo3's
    PanicException derives from BaseException, so ``except Exception`` misses it), becomes one
    ValueError saying that ``what`` failed. Ctrl-C and exits pass through."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError, ValueError):
        raise
    except BaseException as e:  # noqa: B036 - a Rust panic is only a BaseException
        why = " ".join(str(e).split())[:200] or type(e).__name__
        raise ValueError(f"{what}: the tokenizers library failed ({why})") from None


def _normalizer(lowercase: bool):
    steps = [normalizers.NFKC()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps)


class TrainedTokenizer:
    """A ``tokenizers.Tokenizer`` with what training needs: int64 id arrays, the special ids,
    and a JSON round-trip through checkpoints."""

    def __init__(self, hf: tokenizers.Tokenizer) -> None:
        model = json.loads(hf.to_str())["model"].get("type")
        kind = _MODEL_KIND.get(model)
        if kind is None:
            raise ValueError(f"only WordLevel and BPE models are supported, not {short(model)}")
        self.hf, self.kind = hf, kind
        # Ids may have gaps (a hand-made vocab.json): the embedding must reach the largest.
        self._vocab_size = max(hf.get_vocab(with_added_tokens=True).values(), default=-1) + 1

    @classmethod
    def train(cls, kind: str, texts: Iterable[str], vocab_size: int | None = None,
              lowercase: bool = False, min_count: int = 1,
              total_chars: int | None = None) -> TrainedTokenizer:
        """Learn a ``kind`` vocabulary of at most ``vocab_size`` tokens (specials included)
        from ``texts``; words seen fewer than ``min_count`` times are left out. Given
        ``total_chars`` (their length), ``texts`` may be a stream: it is never held whole."""
        if kind not in KINDS:
            raise ValueError(f"tokenizer kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if total_chars is None:
            texts = list(texts)
            total_chars = sum(map(len, texts))
        # The library reserves room for the size asked (a billion tokens aborts the process),
        # so it is asked for no more than these texts can give: a word, or a merge, per byte
        # of their NFKC form at most; and that much must fit in memory.
        reachable = len(SPECIAL_TOKENS) + 256 + _NFKC_GROWTH * 4 * total_chars
        size = min(vocab_size or DEFAULT_VOCAB_SIZE[kind], reachable)
        memory.require(size * TRAINER_BYTES_PER_TOKEN, f"{TRAINER_BYTES_PER_TOKEN} bytes a "
                       "token at least", f"a {kind} vocabulary of {size:,} tokens")
        if kind == "word":
            hf = tokenizers.Tokenizer(models.WordLevel(unk_token=UNK))
            hf.pre_tokenizer = pre_tokenizers.Whitespace()
            trainer = trainers.WordLevelTrainer(
                vocab_size=size, min_frequency=min_count, special_tokens=list(SPECIAL_TOKENS),
                show_progress=False)
        else:
            hf = tokenizers.Tokenizer(models.BPE())
            hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
            hf.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=size, min_frequency=min_count, special_tokens=list(SPECIAL_TOKENS),
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        hf.normalizer = _normalizer(lowercase)
        with library_call(f"learning a {kind} vocabulary"):
            hf.train_from_iterator(texts, trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        """Largest id + 1 (a model's embedding may be larger, e.g. GPT-2's padded to 50304)."""
        return self._vocab_size

    def token_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    @property
    def pad_id(self) -> int | None:
        return self.token_id(PAD)

    @property
    def cls_id(self) -> int | None:
        return self.token_id(CLS)

    @property
    def sep_id(self) -> int | None:
        """The [SEP] that ends each line of a corpus; None for GPT-2's vocabulary."""
        return self.token_id(SEP)

    @property
    def mask_id(self) -> int | None:
        return self.token_id(MASK)

    @property
    def eos_token_id(self) -> int | None:
        """GPT-2's ``<|endoftext|>``, which a Hugging Face export names as EOS."""
        return self.token_id(ENDOFTEXT)

    @property
    def is_gpt2(self) -> bool:
        """GPT-2's kind: a BPE vocabulary without our special tokens (read from a Hugging Face
        folder, not learned here), which an exported GPT-2 can carry."""
        return self.kind == "bpe" and self.sep_id is None

    def encode(self, text: str) -> np.ndarray:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Many texts at once (the library spreads them over the cores)."""
        texts = list(texts)
        with library_call("encoding text"):
            try:
                encodings = self.hf.encode_batch(texts, add_special_tokens=False)
            except TypeError:  # tokenizers' word for a str that UTF-8 cannot hold
                error = _surrogate_error(texts)
                if error is None:
                    raise
                raise error from None
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        arr = np.asarray(ids).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            bad = int(arr.max() if arr.max() >= self.vocab_size else arr.min())
            raise ValueError(f"token id {bad} is out of range for a vocabulary of "
                             f"{self.vocab_size}")
        sep = self.sep_id
        with library_call("decoding token ids"):
            if sep is None:  # GPT-2's: every token is text, <|endoftext|> too
                return self.hf.decode(arr.tolist(), skip_special_tokens=False)
            # [SEP] ends a line of a language-model corpus (see tasks.encode_text): a line break.
            pieces = np.split(arr, np.flatnonzero(arr == sep))
            return "\n".join(self.hf.decode([int(i) for i in piece], skip_special_tokens=True)
                              for piece in pieces)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.hf.to_str())

    @classmethod
    def from_dict(cls, d: dict[str, Any], max_vocab: int = MAX_TOKEN_ID + 1) -> TrainedTokenizer:
        """The tokenizer of a ``tokenizers`` document, checked first (:func:`check_document`),
        with ids below ``max_vocab`` (e.g. the model's vocabulary size)."""
        check_document(d, max_vocab)
        with library_call("reading the tokenizer"):
            hf = tokenizers.Tokenizer.from_str(json.dumps(d))
        return cls(hf)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrainedTokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"TrainedTokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


def _surrogate_error(texts: list[str]) -> ValueError | None:
    """Where a text holds a lone surrogate (Python lets one into a str, e.g. from a command
    line's undecodable bytes), which no UTF-8 tokenizer can read; None if none does."""
    for n, text in enumerate(texts):
        if not isinstance(text, str):
            return None
        pos = next((i for i, ch in enumerate(text) if "\ud800" <= ch <= "\udfff"), None)
        if pos is not None:
            of = f" of text {n}" if len(texts) > 1 else ""
            return ValueError(f"character {text[pos]!r} at position {pos}{of} is a lone "
                              "surrogate, which UTF-8 cannot encode")
    return None


# --------------------------------------------------------------------------------------------
# GPT-2's byte-level BPE, as Hugging Face folders and our first checkpoints hold it
# --------------------------------------------------------------------------------------------


def _check_vocab(vocab: Any, max_id: int = MAX_TOKEN_ID) -> dict[str, int]:
    if not isinstance(vocab, Mapping) or not vocab:
        raise ValueError("the vocabulary must be a non-empty object of token -> id")
    for token, i in vocab.items():
        if (not isinstance(token, str) or not isinstance(i, int) or isinstance(i, bool)
                or not 0 <= i <= max_id):
            raise ValueError(f"vocabulary entry {short(token)}: {short(i)} is not token -> id "
                             f"in [0, {max_id}]")
    if len(set(vocab.values())) != len(vocab):
        raise ValueError("vocabulary ids must be unique")
    missing = [ch for ch in pre_tokenizers.ByteLevel.alphabet() if ch not in vocab]
    if missing:
        raise ValueError(f"not a byte-level vocabulary: {len(missing)} of the 256 byte tokens "
                         f"are missing (e.g. {missing[:3]})")
    return dict(vocab)


def _check_merges(merges: Any, vocab: dict[str, int]) -> list[tuple[str, str]]:
    if not isinstance(merges, list):
        raise ValueError(f"merges must be a list, got {short(merges)}")
    pairs = []
    for n, merge in enumerate(merges):
        pair = merge.split(" ") if isinstance(merge, str) else merge
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(p, str) and p for p in pair)):
            raise ValueError(f"merge {n} ({short(merge)}) is not a pair of tokens")
        a, b = pair
        for token in (a, b, a + b):
            if token not in vocab:
                raise ValueError(f"merge {n} ({short(a)} {short(b)}): {short(token)} is not in "
                                 "the vocabulary")
        pairs.append((a, b))
    return pairs


def gpt2_tokenizer(vocab: Mapping[str, int], merges: list, added_tokens: Iterable[str] = (),
                   max_vocab: int = MAX_TOKEN_ID + 1) -> TrainedTokenizer:
    """GPT-2's byte-level BPE from ``vocab`` (token -> id, all 256 byte tokens) and ``merges``
    (``"left right"`` strings or pairs, highest priority first); ``added_tokens`` (e.g.
    ``<|endoftext|>``) are vocabulary entries matched as they are, before the split into words.
    Checked first (ids below ``max_vocab``), so a bad entry is named rather than left to the
    library."""
    vocab = _check_vocab(vocab, max_vocab - 1)
    pairs = _check_merges(merges, vocab)
    added = list(dict.fromkeys(added_tokens))
    missing = [t for t in added if t not in vocab]
    if missing:
        raise ValueError(f"added tokens {short(missing)} are not in the vocabulary")
    return _build_gpt2(vocab, pairs, added)


def _build_gpt2(vocab: dict[str, int], pairs: list[tuple[str, str]], added: list[str]
                ) -> TrainedTokenizer:
    hf = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=pairs))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False)
                           for t in added])
    return TrainedTokenizer(hf)


def from_gpt2_bpe_dict(d: dict[str, Any], max_vocab: int = MAX_TOKEN_ID + 1) -> TrainedTokenizer:
    """A GPT-2 tokenizer as our checkpoints first stored it: ``{"type": "gpt2_bpe", "vocab":
    {...}, "merges": ["a b", ...], "added_tokens": [...]}``."""
    if not isinstance(d.get("vocab"), dict) or not isinstance(d.get("merges"), list):
        raise ValueError("a GPT-2 BPE tokenizer dict looks like {'type': 'gpt2_bpe', "
                         "'vocab': {...}, 'merges': [...], 'added_tokens': [...]}")
    added = d.get("added_tokens", [])
    if not isinstance(added, list) or not all(isinstance(t, str) for t in added):
        raise ValueError("gpt2_bpe tokenizer: 'added_tokens' must be a list of strings")
    return gpt2_tokenizer(d["vocab"], d["merges"], added, max_vocab)


def has_tokenizer_files(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a GPT-2 tokenizer: ``tokenizer.json``, or ``vocab.json`` with
    ``merges.txt``."""
    return os.path.isfile(os.path.join(path, "tokenizer.json")) or all(
        os.path.isfile(os.path.join(path, f)) for f in ("vocab.json", "merges.txt"))


def _named(source: str, build: Callable[[], Any]) -> Any:
    """``build()``, with a bad vocabulary or merge reported against the file it came from."""
    try:
        return build()
    except InputError:
        raise
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None


def _read_merges_txt(path: str) -> list[str]:
    try:
        raw = read_regular_bytes(path, MAX_JSON_BYTES)
        lines = raw.decode("utf-8").splitlines()
    except InputError as e:
        raise CheckpointError(str(e)) from None
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 (bad byte at offset {e.start})") from None
    return [line for line in lines if line and not line.startswith("#version")]


def read_gpt2_tokenizer(path: str | os.PathLike[str], max_vocab: int = MAX_TOKEN_ID + 1
                        ) -> TrainedTokenizer:
    """The tokenizer of a Hugging Face GPT-2 folder: ``tokenizer.json`` (a ``tokenizers``
    document, or our first format's ``gpt2_bpe`` dict), else ``vocab.json`` + ``merges.txt``,
    with ``<|endoftext|>`` as the added token; ids below ``max_vocab``. Every problem is a
    CheckpointError naming the file."""
    folder = os.fspath(path)
    tok_json = os.path.join(folder, "tokenizer.json")
    vocab_path, merges_path = (os.path.join(folder, f) for f in ("vocab.json", "merges.txt"))
    if os.path.isfile(tok_json):
        data = read_json(tok_json)
        if not isinstance(data, dict):
            raise CheckpointError(f"{tok_json}: expected a JSON object, got {short(data)}")
        if data.get("type") == "gpt2_bpe":
            return _named(tok_json, lambda: from_gpt2_bpe_dict(data, max_vocab))
        return _named(tok_json, lambda: TrainedTokenizer.from_dict(data, max_vocab))
    if not (os.path.isfile(vocab_path) and os.path.isfile(merges_path)):
        raise CheckpointError(f"{folder}: no GPT-2 tokenizer (expected tokenizer.json, or "
                              "vocab.json and merges.txt)")
    data = read_json(vocab_path)
    if not isinstance(data, dict):
        raise CheckpointError(f"{vocab_path}: expected a JSON object of token -> id")
    vocab = _named(vocab_path, lambda: _check_vocab(data, max_vocab - 1))
    merges = _read_merges_txt(merges_path)
    pairs = _named(merges_path, lambda: _check_merges(merges, vocab))
    return _build_gpt2(vocab, pairs, [ENDOFTEXT] if ENDOFTEXT in vocab else [])


def write_gpt2_tokenizer(tokenizer: TrainedTokenizer, path: str | os.PathLike[str]) -> None:
    """Write ``tokenizer.json``, ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json``
    as Hugging Face lays out GPT-2's, so transformers (fast or slow tokenizer), ``tokenizers``
    and :func:`read_gpt2_tokenizer` read them."""
    if not tokenizer.is_gpt2:
        raise TypeError(f"only a GPT-2 tokenizer has GPT-2's files, got {tokenizer!r}")
    folder = os.fspath(path)
    os.makedirs(folder, exist_ok=True)
    model = tokenizer.to_dict()["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    atomic_write_text(os.path.join(folder, "tokenizer.json"), tokenizer.hf.to_str())
    atomic_write_json(os.path.join(folder, "vocab.json"), model["vocab"])
    atomic_write_text(os.path.join(folder, "merges.txt"),
                      "#version: 0.2\n" + "".join(m + "\n" for m in merges))
    config: dict[str, Any] = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False}
    if tokenizer.eos_token_id is not None:
        config.update(bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT)
    atomic_write_json(os.path.join(folder, "tokenizer_config.json"), config)
