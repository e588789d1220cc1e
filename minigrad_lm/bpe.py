"""GPT-2's byte-level BPE tokenizer, read from a local Hugging Face folder (no download).

The text is split into words by GPT-2's pre-tokenization regex, each word's UTF-8 bytes are
mapped to printable characters (GPT-2's byte-to-unicode table), and merges are applied in rank
order. Every byte is a token, so any text encodes.

Two engines give the same ids: the ``tokenizers`` library (optional extra ``hf``; fast, Rust)
when it is importable, else the pure-Python one here. The pure-Python pre-tokenizer spells
GPT-2's ``\\p{L}``, ``\\p{N}`` and ``\\s`` as explicit character classes built from
:mod:`unicodedata` (letters = categories L*, numbers = N*, whitespace = the Unicode
White_Space set), because Python's ``re`` knows no ``\\p{...}`` and its ``\\s``/``\\w`` differ
(``\\s`` also matches U+001C..U+001F, ``\\w`` counts ``²`` as a letter-or-digit). The only
remaining difference is the Unicode version: Python's ``unicodedata`` versus the one compiled
into ``tokenizers``, which matters only for characters assigned between the two.

``to_dict()`` is self-contained: ``{"type": "gpt2_bpe", "vocab": {token: id}, "merges":
["a b", ...], "added_tokens": [...]}`` (about 1.5 MB of JSON for GPT-2), so a training
checkpoint rebuilds its tokenizer without the original folder.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .checkpoint import CheckpointError, atomic_write_json, atomic_write_text, read_json

__all__ = ["GPT2Tokenizer", "bytes_to_unicode", "has_tokenizer_files"]

ENDOFTEXT = "<|endoftext|>"
ENGINES = ("auto", "python", "tokenizers")

_CONTRACTIONS = "'s|'t|'re|'ve|'m|'ll|'d"
# Unicode White_Space, which is what GPT-2's regex engine (and tokenizers') mean by \s.
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table: printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100+,
    so every token is a printable string with no space in it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _class_ranges(first_letter: str) -> str:
    points = [cp for cp in range(sys.maxunicode + 1)
              if unicodedata.category(chr(cp))[0] == first_letter]
    spans: list[str] = []
    start = prev = points[0]
    for cp in points[1:] + [-1]:
        if cp != prev + 1:
            spans.append(f"\\U{start:08x}-\\U{prev:08x}" if prev > start else f"\\U{start:08x}")
            start = cp
        prev = cp
    return "".join(spans)


@functools.cache
def _pretokenizer() -> re.Pattern[str]:
    """GPT-2's pre-tokenizer,
    ``'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``,
    in Python ``re`` syntax (built once: scanning the Unicode tables takes a few tenths of a
    second)."""
    letters, numbers, space = _class_ranges("L"), _class_ranges("N"), _WHITESPACE
    return re.compile(
        f"{_CONTRACTIONS}| ?[{letters}]+| ?[{numbers}]+| ?[^{space}{letters}{numbers}]+"
        f"|[{space}]+(?![^{space}])|[{space}]+"
    )


def _tokenizers_available() -> bool:
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return False
    return True


def _surrogate_error(text: str) -> ValueError:
    pos = next(i for i, ch in enumerate(text) if 0xD800 <= ord(ch) <= 0xDFFF)
    return ValueError(f"character {text[pos]!r} at position {pos} is a lone surrogate, which "
                      "UTF-8 (and so byte-level BPE) cannot encode")


def has_tokenizer_files(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` holds a GPT-2 tokenizer: ``tokenizer.json``, or ``vocab.json`` with
    ``merges.txt``."""
    return os.path.isfile(os.path.join(path, "tokenizer.json")) or all(
        os.path.isfile(os.path.join(path, f)) for f in ("vocab.json", "merges.txt"))


class GPT2Tokenizer:
    """Byte-level BPE with GPT-2's pre-tokenization; the interface of the ``data`` tokenizers.

    ``vocab`` maps token strings (in byte-to-unicode form) to ids and must hold all 256 byte
    tokens; ``merges`` are ``(left, right)`` pairs (or ``"left right"`` strings), highest
    priority first; ``added_tokens`` (e.g. ``<|endoftext|>``) are vocab entries matched
    literally in the text before pre-tokenization, as ``tokenizers`` does. ``engine`` is
    ``"auto"`` (``tokenizers`` when importable), ``"python"`` or ``"tokenizers"``.
    """

    def __init__(self, vocab: Mapping[str, int], merges: Iterable[Sequence[str] | str],
                 added_tokens: Iterable[str] = (), engine: str = "auto") -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.vocab = _check_vocab(vocab)
        self.merges = _check_merges(merges, self.vocab)
        self.added_tokens = list(dict.fromkeys(added_tokens))
        missing = [t for t in self.added_tokens if t not in self.vocab]
        if missing:
            raise ValueError(f"added tokens {missing[:5]} are not in the vocabulary")
        self._vocab_size = max(self.vocab.values()) + 1
        self._id_bytes: list[bytes | None] = [None] * self._vocab_size
        decoder = {ch: b for b, ch in bytes_to_unicode().items()}
        added = set(self.added_tokens)
        for token, i in self.vocab.items():
            # Added tokens are plain text, the rest byte-to-unicode strings; a token outside
            # that alphabet (only in a hand-edited vocabulary) decodes as its own text too.
            self._id_bytes[i] = (token.encode("utf-8") if token in added or
                                 any(ch not in decoder for ch in token) else
                                 bytes(decoder[ch] for ch in token))
        self._ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        # Longest first, so the alternation finds the leftmost-longest added token.
        self._added_pattern = re.compile("(" + "|".join(
            re.escape(t) for t in sorted(self.added_tokens, key=len, reverse=True)) + ")"
        ) if self.added_tokens else None
        self._word_ids = functools.lru_cache(maxsize=1 << 16)(self._bpe_ids)
        if engine == "tokenizers" or (engine == "auto" and _tokenizers_available()):
            self._fast = _fast_engine(self.vocab, self.merges, self.added_tokens)
        else:
            self._fast = None

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_dir(cls, path: str | os.PathLike[str], engine: str = "auto") -> GPT2Tokenizer:
        """Read ``tokenizer.json`` (a Hugging Face one, or a minigrad_lm ``to_dict()``), else
        ``vocab.json`` + ``merges.txt``; ``<|endoftext|>`` is the added token of the latter."""
        folder = os.fspath(path)
        tok_json = os.path.join(folder, "tokenizer.json")
        vocab_path, merges_path = (os.path.join(folder, f) for f in ("vocab.json", "merges.txt"))
        if os.path.isfile(tok_json):
            data = read_json(tok_json)
            if isinstance(data, dict) and data.get("type") == "gpt2_bpe":
                return _named(tok_json, lambda: cls.from_dict(data, engine))
            vocab, merges, added = _parse_tokenizer_json(tok_json, data)
            return _named(tok_json, lambda: cls(vocab, merges, added, engine))
        if not (os.path.isfile(vocab_path) and os.path.isfile(merges_path)):
            raise CheckpointError(f"{folder}: no GPT-2 tokenizer (expected tokenizer.json, or "
                                  "vocab.json and merges.txt)")
        vocab = read_json(vocab_path)
        if not isinstance(vocab, dict):
            raise CheckpointError(f"{vocab_path}: expected a JSON object of token -> id")
        merges = _read_merges_txt(merges_path)
        added = [ENDOFTEXT] if ENDOFTEXT in vocab else []
        return _named(folder, lambda: cls(vocab, merges, added, engine))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "gpt2_bpe", "vocab": dict(self.vocab),
                "merges": [f"{a} {b}" for a, b in self.merges],
                "added_tokens": list(self.added_tokens)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], engine: str = "auto") -> GPT2Tokenizer:
        if (not isinstance(d, dict) or d.get("type") != "gpt2_bpe"
                or not isinstance(d.get("vocab"), dict) or not isinstance(d.get("merges"), list)):
            raise ValueError("a GPT-2 BPE tokenizer dict looks like {'type': 'gpt2_bpe', "
                             "'vocab': {...}, 'merges': [...], 'added_tokens': [...]}")
        added = d.get("added_tokens", [])
        if not isinstance(added, list) or not all(isinstance(t, str) for t in added):
            raise ValueError("gpt2_bpe tokenizer: 'added_tokens' must be a list of strings")
        return cls(d["vocab"], d["merges"], added, engine)

    def save_dir(self, path: str | os.PathLike[str]) -> None:
        """Write ``tokenizer.json``, ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json``
        as Hugging Face lays them out, so transformers, ``tokenizers`` and ``from_dir`` read
        them."""
        folder = os.fspath(path)
        os.makedirs(folder, exist_ok=True)
        merges = [f"{a} {b}" for a, b in self.merges]
        atomic_write_json(os.path.join(folder, "vocab.json"), self.vocab)
        atomic_write_text(os.path.join(folder, "merges.txt"),
                          "#version: 0.2\n" + "".join(m + "\n" for m in merges))
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                      "use_regex": True}
        atomic_write_json(os.path.join(folder, "tokenizer.json"), {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": self.vocab[t], "content": t, "single_word": False,
                              "lstrip": False, "rstrip": False, "normalized": False,
                              "special": True} for t in self.added_tokens],
            "normalizer": None, "pre_tokenizer": byte_level, "post_processor": byte_level,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": self.vocab, "merges": merges},
        })
        config: dict[str, Any] = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False}
        if ENDOFTEXT in self.added_tokens:
            config.update(bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT)
        atomic_write_json(os.path.join(folder, "tokenizer_config.json"), config)

    # ---- the tokenizer interface -------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Largest id + 1 (a model's embedding may be larger, e.g. padded to 50304)."""
        return self._vocab_size

    @property
    def eos_token_id(self) -> int | None:
        """The id of ``<|endoftext|>``, GPT-2's document separator, if it is an added token."""
        return self.vocab[ENDOFTEXT] if ENDOFTEXT in self.added_tokens else None

    def encode(self, text: str) -> np.ndarray:
        """int64 ids; never fails on valid Unicode (only lone surrogates are refused)."""
        if self._fast is not None:
            try:
                ids = self._fast.encode(text, add_special_tokens=False).ids
            except TypeError:  # tokenizers' word for a str that is not valid UTF-8
                raise _surrogate_error(text) from None
            return np.array(ids, dtype=np.int64)
        try:
            ids = self._encode_python(text)
        except UnicodeEncodeError:
            raise _surrogate_error(text) from None
        return np.array(ids, dtype=np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of ``ids``; a cut multi-byte character shows as U+FFFD rather than failing."""
        arr = np.asarray(ids)
        if arr.size and (arr.ndim != 1 or arr.dtype.kind not in "iu"):
            raise ValueError(f"expected a 1-D sequence of integer token ids, got {arr.dtype} "
                             f"with shape {arr.shape}")
        pieces = []
        for pos, i in enumerate(arr.reshape(-1).tolist()):
            piece = self._id_bytes[i] if 0 <= i < self._vocab_size else None
            if piece is None:
                raise ValueError(f"token id {i} at position {pos} is not in the vocabulary "
                                 f"of {self._vocab_size}")
            pieces.append(piece)
        return b"".join(pieces).decode("utf-8", errors="replace")

    # ---- pure-Python engine ------------------------------------------------------------------
    def _encode_python(self, text: str) -> list[int]:
        ids: list[int] = []
        chunks = self._added_pattern.split(text) if self._added_pattern else [text]
        pattern = _pretokenizer()
        # re.split with one group alternates plain text (even indices) and added tokens.
        for n, chunk in enumerate(chunks):
            if n % 2:
                ids.append(self.vocab[chunk])
            else:
                for word in pattern.findall(chunk):
                    ids.extend(self._word_ids(word))
        return ids

    def _bpe_ids(self, word: str) -> tuple[int, ...]:
        """GPT-2's merge loop: repeatedly merge every occurrence of the best-ranked pair."""
        byte_chars = bytes_to_unicode()
        parts = [byte_chars[b] for b in word.encode("utf-8")]
        ranks = self._ranks
        while len(parts) > 1:
            best = min(itertools.pairwise(parts), key=lambda p: ranks.get(p, sys.maxsize))
            if best not in ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == best[0] and parts[i + 1] == best[1]:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return tuple(self.vocab[p] for p in parts)

    # ---- comparison --------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return (isinstance(other, GPT2Tokenizer) and self.vocab == other.vocab
                and self.merges == other.merges and self.added_tokens == other.added_tokens)

    def __repr__(self) -> str:
        engine = "tokenizers" if self._fast is not None else "python"
        return (f"GPT2Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"engine={engine!r})")


def _named(source: str, build: Callable[[], GPT2Tokenizer]) -> GPT2Tokenizer:
    """``build()``, with a bad vocabulary or merge reported against the file it came from."""
    try:
        return build()
    except CheckpointError:
        raise
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None


def _check_vocab(vocab: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(vocab, Mapping) or not vocab:
        raise ValueError("the vocabulary must be a non-empty mapping of token -> id")
    out: dict[str, int] = {}
    for token, i in vocab.items():
        if not isinstance(token, str) or not isinstance(i, int) or isinstance(i, bool) or i < 0:
            raise ValueError(f"vocabulary entry {token!r}: {i!r} is not token -> id >= 0")
        out[token] = i
    if len(set(out.values())) != len(out):
        raise ValueError("vocabulary ids must be unique")
    missing = [ch for ch in bytes_to_unicode().values() if ch not in out]
    if missing:
        raise ValueError(f"not a byte-level vocabulary: {len(missing)} of the 256 byte tokens "
                         f"are missing (e.g. {missing[:3]})")
    return out


def _check_merges(merges: Iterable[Sequence[str] | str], vocab: dict[str, int]
                  ) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for n, merge in enumerate(merges):
        pair = merge.split(" ") if isinstance(merge, str) else list(merge)
        if len(pair) != 2 or not all(isinstance(p, str) and p for p in pair):
            raise ValueError(f"merge {n} ({merge!r}) is not a pair of tokens")
        a, b = pair
        for token in (a, b, a + b):
            if token not in vocab:
                raise ValueError(f"merge {n} ({a!r} {b!r}): {token!r} is not in the vocabulary")
        out.append((a, b))
    return out


def _read_merges_txt(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 (bad byte at offset {e.start})") from None
    return [line for line in lines if line and not line.startswith("#version")]


def _parse_tokenizer_json(path: str, data: Any) -> tuple[dict[str, int], list, list[str]]:
    """Vocabulary, merges and added tokens of a Hugging Face ``tokenizer.json``, after checking
    that it is GPT-2's kind of tokenizer (so that rebuilding it from those three is exact)."""
    def refuse(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a GPT-2 byte-level BPE tokenizer ({why})")

    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise refuse("no 'model' object")
    model = data["model"]
    if model.get("type", "BPE") != "BPE":
        raise refuse(f"model type {model.get('type')!r}")
    if not isinstance(model.get("vocab"), dict) or not isinstance(model.get("merges"), list):
        raise refuse("model lacks 'vocab' or 'merges'")
    for key, default in (("dropout", None), ("continuing_subword_prefix", None),
                         ("end_of_word_suffix", None), ("ignore_merges", False),
                         ("byte_fallback", False)):
        if model.get(key) not in (default, ""):
            raise refuse(f"model {key}={model[key]!r}")
    if data.get("normalizer") is not None:
        raise refuse(f"normalizer {data['normalizer'].get('type')!r}")
    pre = data.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel":
        raise refuse(f"pre_tokenizer {pre.get('type')!r}, GPT-2's is ByteLevel")
    if pre.get("add_prefix_space") or not pre.get("use_regex", True):
        raise refuse("ByteLevel with add_prefix_space=true or use_regex=false")
    vocab = dict(model["vocab"])
    holders = {i: t for t, i in vocab.items()}
    added: list[str] = []
    for entry in data.get("added_tokens") or []:
        content, i = entry.get("content"), entry.get("id")
        if not isinstance(content, str) or not isinstance(i, int):
            raise refuse(f"added token entry {entry!r} lacks a content string or an id")
        if holders.get(i, content) != content or vocab.get(content, i) != i:
            raise CheckpointError(f"{path}: added token {content!r} (id {i}) clashes with the "
                                  "model vocabulary")
        vocab[content] = i
        holders[i] = content
        added.append(content)
    return vocab, model["merges"], added


def _fast_engine(vocab: dict[str, int], merges: list[tuple[str, str]], added: list[str]):
    """The same tokenizer as a ``tokenizers.Tokenizer`` (what GPT-2's tokenizer.json holds)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in added])
    return tok

