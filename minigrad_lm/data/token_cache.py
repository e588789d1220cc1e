"""A corpus tokenized once into a cached token folder (nanoGPT's ``train.bin`` idea), reused
while its source files and tokenizer are unchanged.

The folder holds ``train.bin`` and ``val.bin`` (little-endian uint16 ids, each line of the
text followed by ``[SEP]``), ``vocab.json`` (the tokenizer's document) and ``manifest.json``:
the sources (path, size, SHA-256), the tokenizer asked for, and the size and SHA-256 of
every file. Building streams the text a line at a time (:mod:`.streaming`) into the files, so
memory stays flat in the corpus size; the token files are then read as memory maps.

A changed source or tokenizer rebuilds the cache (and says why); a cache whose files do not
match its manifest (a truncated copy, a flipped byte) is refused, never silently used.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..io.files import atomic_write_text, json_text, sha256_file
from ..io.untrusted import (
    ANY,
    InputError,
    Int,
    ListOf,
    MapOf,
    Object,
    Str,
    check,
    parse_json,
    read_regular_bytes,
)
from .streaming import iter_lines, total_bytes
from .trained_tokenizer import TrainedTokenizer

MANIFEST = "manifest.json"
FORMAT = "minigrad_lm.token_cache"
TOKEN_DTYPE = np.dtype("<u2")
LINES_PER_BATCH = 2048  # lines encoded at once: enough for the library's threads, little memory
MANIFEST_SPEC = Object({
    "format": Str((FORMAT,)), "sources": ListOf(MapOf(ANY)), "val_sources": ListOf(MapOf(ANY)),
    "val_every_nth": ANY, "tokenizer": MapOf(ANY), "files": MapOf(MapOf(ANY)),
    "tokens": MapOf(Int(0)),
}, required=("format", "sources", "tokenizer", "files", "tokens"), extra=True)


@dataclass(frozen=True)
class TokenizerRequest:
    """The tokenizer a corpus is encoded with: one learned from it (``kind`` word or bpe and
    its options), or a given one (``learned`` None: a checkpoint's)."""

    kind: str
    vocab_size: int | None = None
    lowercase: bool = False
    min_count: int = 1
    given: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        """What the manifest records: the options, or the given tokenizer's digest."""
        if self.given is not None:
            return {"given_sha256": _sha256_bytes(_canonical(self.given))}
        return {"kind": self.kind, "vocab_size": self.vocab_size, "lowercase": self.lowercase,
                "min_count": self.min_count}


@dataclass
class TokenCache:
    folder: Path
    train: np.ndarray  # read-only memory maps
    val: np.ndarray | None  # None: no held-out lines (the caller splits train)
    tokenizer: TrainedTokenizer
    built: bool  # False when an existing cache was reused


def corpus_files(data: str | list[str]) -> list[str]:
    """The files of ``--data``: each path given, a folder standing for its ``.txt`` files."""
    files = []
    for path in [data] if isinstance(data, str) else data:
        p = Path(path)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix == ".txt" and f.is_file())
            if not found:
                raise ValueError(f"{p}: folder has no .txt files")
            files.extend(found)
        else:
            files.append(str(p))
    return files


def cache_folder(root: str | os.PathLike[str], sources: list[str],
                 val_sources: list[str]) -> Path:
    """One folder per set of source files (by absolute path): a changed tokenizer or a changed
    file rebuilds it in place rather than leaving old caches behind."""
    key = json.dumps([[os.path.abspath(p) for p in sources],
                      [os.path.abspath(p) for p in val_sources]])
    return Path(root) / hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def prepare_token_cache(root: str | os.PathLike[str], sources: list[str],
                        request: TokenizerRequest, *, val_sources: list[str] = (),
                        val_every_nth: int | None = None, encoding: str = "utf-8",
                        say: Callable[[str], None] = print) -> TokenCache:
    """The token cache of ``sources`` under ``root``: reused when its manifest still matches
    the files and the tokenizer asked for, else built (after a line that says why).

    Validation text is ``val_sources`` or lines ``val_every_nth``, 2 ``val_every_nth``, ... of
    each source (counted per file); with neither, ``val`` is None.
    """
    sources, val_sources = list(sources), list(val_sources)
    folder = cache_folder(root, sources, val_sources)
    wanted = {"sources": [_stamp(p) for p in sources],
              "val_sources": [_stamp(p) for p in val_sources],
              "val_every_nth": val_every_nth, "tokenizer": request.describe()}
    manifest = _read_manifest(folder)
    if manifest is not None:
        stale = _what_changed(manifest, wanted)
        if stale is None:
            return _open(folder, manifest, built=False)
        say(f"token cache {folder}: {stale}; rebuilding it")
    else:
        say(f"token cache {folder}: tokenizing {', '.join(sources + val_sources)} once")
    _build(folder, sources, val_sources, val_every_nth, request, encoding, wanted)
    return _open(folder, _read_manifest(folder), built=True)


# ---- reading ------------------------------------------------------------------------------


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.exists():
        if folder.exists() and any(folder.iterdir()):
            raise InputError(f"{folder}: a token cache without {MANIFEST} (an interrupted or "
                             "foreign folder); delete it to rebuild the cache")
        return None
    raw = read_regular_bytes(path, 1 << 20, "token cache manifest")
    return check(parse_json(raw, str(path)), MANIFEST_SPEC, str(path))


def _what_changed(manifest: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    for key, noun in (("sources", "source"), ("val_sources", "validation source")):
        old = {s.get("path"): s for s in manifest.get(key, [])}
        for stamp in wanted[key]:
            if old.get(stamp["path"]) != stamp:
                return f"{noun} {stamp['path']} changed since the cache was built"
        if len(old) != len(wanted[key]):
            return f"the {noun} files changed"
    if manifest.get("val_every_nth") != wanted["val_every_nth"]:
        return (f"validation lines changed (--val-every-nth {manifest.get('val_every_nth')} -> "
                f"{wanted['val_every_nth']})")
    if manifest["tokenizer"] != wanted["tokenizer"]:
        return f"tokenizer changed ({_brief(manifest['tokenizer'])} -> " \
               f"{_brief(wanted['tokenizer'])})"
    return None


def _brief(request: dict[str, Any]) -> str:
    if "given_sha256" in request:
        return f"a checkpoint's, sha256 {str(request['given_sha256'])[:12]}"
    low = ", lowercase" if request.get("lowercase") else ""
    return f"{request.get('kind')} {request.get('vocab_size') or 'default size'}{low}"


def _open(folder: Path, manifest: dict[str, Any], built: bool) -> TokenCache:
    """The cache's arrays, after every file was checked against the manifest."""
    for name, entry in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise InputError(f"{path}: missing from the token cache; delete {folder} to "
                             "rebuild it")
        if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            raise InputError(f"{path}: corrupt token cache (size or SHA-256 differs from "
                             f"{MANIFEST}); delete {folder} to rebuild it")
    vocab = parse_json(read_regular_bytes(folder / "vocab.json", 256 << 20), "vocab.json")
    tokenizer = TrainedTokenizer.from_dict(vocab)
    arrays = {}
    for split in ("train", "val"):
        if split + ".bin" in manifest["files"] and manifest["tokens"].get(split):
            arrays[split] = np.memmap(folder / f"{split}.bin", dtype=TOKEN_DTYPE, mode="r")
    if "train" not in arrays:
        raise InputError(f"{folder}: the token cache holds no training tokens")
    return TokenCache(folder, arrays["train"], arrays.get("val"), tokenizer, built)


# ---- building -----------------------------------------------------------------------------


def _build(folder: Path, sources: list[str], val_sources: list[str],
           val_every_nth: int | None, request: TokenizerRequest, encoding: str,
           wanted: dict[str, Any]) -> None:
    """Tokenizer (learned from the training lines, streamed), then the token files, written
    in a sibling folder that replaces the old cache only when complete."""
    if request.given is not None:
        tokenizer = TrainedTokenizer.from_dict(request.given)
    else:
        chars = sum(map(len, _split_lines(sources, val_every_nth, encoding, keep_val=False)))
        lines = _split_lines(sources, val_every_nth, encoding, keep_val=False)
        tokenizer = TrainedTokenizer.train(request.kind, lines, request.vocab_size,
                                           request.lowercase, request.min_count, chars)
    if tokenizer.vocab_size > np.iinfo(TOKEN_DTYPE).max + 1:
        raise ValueError(f"a vocabulary of {tokenizer.vocab_size:,} tokens does not fit the "
                         "token cache's uint16 ids (at most 65,536)")
    if tokenizer.sep_id is None:
        raise ValueError("the token cache ends each line with [SEP]: the tokenizer has none")
    work = folder.with_name(folder.name + ".building")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    counts = {"train": 0, "val": 0}
    with tqdm(total=total_bytes(sources + val_sources), unit="B", unit_scale=True,
              desc="tokenizing", file=sys.stderr, mininterval=1.0) as bar, \
            open(work / "train.bin", "wb") as train, open(work / "val.bin", "wb") as val:
        outs = {"train": train, "val": val}
        done = 0
        for path in sources + val_sources:
            for split, ids in _encoded(path, path in val_sources, val_every_nth, tokenizer,
                                       encoding, lambda pos: bar.update(done + pos - bar.n)):
                ids.astype(TOKEN_DTYPE).tofile(outs[split])
                counts[split] += len(ids)
            done += Path(path).stat().st_size
    atomic_write_text(work / "vocab.json", json_text(tokenizer.to_dict()) + "\n")
    files = {name: {"bytes": (work / name).stat().st_size, "sha256": sha256_file(work / name)}
             for name in ("train.bin", "val.bin", "vocab.json")}
    atomic_write_text(work / MANIFEST, json_text({
        "format": FORMAT, **wanted, "files": files, "tokens": counts}) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(work, folder)


def _split_lines(sources: list[str], nth: int | None, encoding: str,
                 keep_val: bool) -> Iterator[str]:
    """The non-blank training lines of ``sources`` (or, ``keep_val``, the held-out ones)."""
    for path in sources:
        for lineno, line in enumerate(iter_lines(path, encoding), start=1):
            held = nth is not None and lineno % nth == 0
            if held == keep_val and line.strip():
                yield line


def _encoded(path: str, all_val: bool, nth: int | None, tokenizer: TrainedTokenizer,
             encoding: str, progress: Callable[[int], None]
             ) -> Iterator[tuple[str, np.ndarray]]:
    """(split, ids) for batches of ``path``'s lines, each line's ids followed by [SEP]."""
    batches: dict[str, list[str]] = {"train": [], "val": []}
    sep = np.array([tokenizer.sep_id], np.int64)

    def flush(split: str) -> np.ndarray:
        ids = [piece for encoded in tokenizer.encode_batch(batches[split])
               for piece in (encoded, sep)]
        batches[split] = []
        return np.concatenate(ids)

    for lineno, line in enumerate(iter_lines(path, encoding, progress), start=1):
        if not line.strip():
            continue
        split = "val" if all_val or (nth is not None and lineno % nth == 0) else "train"
        batches[split].append(line)
        if len(batches[split]) == LINES_PER_BATCH:
            yield split, flush(split)
    for split in ("train", "val"):
        if batches[split]:
            yield split, flush(split)


# ---- digests ------------------------------------------------------------------------------


def _stamp(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    return {"path": os.path.abspath(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)}


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(d: dict[str, Any]) -> bytes:
    return json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
