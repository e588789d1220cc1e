"""Safe checkpoint files: safetensors by hand, atomic writes, crash-safe checkpoint folders.

Nothing here ever unpickles. A checkpoint is data (safetensors, JSON, text), so a file from an
untrusted source can at worst be refused with a :class:`CheckpointError`, never run code.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np

from .untrusted import (
    InputError,
    parse_json,
    read_json_file,
    require_regular_file,
    short,
)

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "json_text",
    "load_safetensors",
    "read_json",
    "resolve_checkpoint_dir",
    "safetensors_bytes",
    "save_safetensors",
    "sha256_file",
    "write_checkpoint_dir",
]

# Same cap as the reference implementation: a larger header is a corrupt or hostile file.
MAX_HEADER_BYTES = 100_000_000

# safetensors dtype code -> little-endian numpy dtype of the stored bytes.
_FILE_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # numpy has no bfloat16: read the raw bits, widen to float32
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),  # read as bytes so a stray value like 2 still becomes True
}

# (numpy kind, itemsize) -> safetensors dtype code, for writing.
_WRITE_CODES: dict[tuple[str, int], str] = {
    ("f", 8): "F64",
    ("f", 4): "F32",
    ("f", 2): "F16",
    ("i", 8): "I64",
    ("i", 4): "I32",
    ("i", 2): "I16",
    ("i", 1): "I8",
    ("u", 8): "U64",
    ("u", 4): "U32",
    ("u", 2): "U16",
    ("u", 1): "U8",
    ("b", 1): "BOOL",
}


class CheckpointError(InputError):
    """A checkpoint file or folder is missing, malformed or not what it claims to be."""


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def _fsync_dir(directory: str) -> None:
    """Make a rename durable: the new directory entry itself must reach the disk."""
    if os.name == "nt":  # Windows cannot open a directory as a file; NTFS journals renames
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        # Some filesystems (e.g. certain network mounts) refuse fsync on directories; the
        # rename has still happened, only its durability is up to the filesystem.
        pass
    finally:
        os.close(fd)


def _temp_name(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _write_synced(path: str, write: Callable[[BinaryIO], None]) -> None:
    # O_EXCL refuses to follow a planted file or symlink; mode 0o666 lets the umask decide.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    with os.fdopen(fd, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    target = os.path.abspath(os.fspath(path))
    tmp = _temp_name(target)
    try:
        _write_synced(tmp, write)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(os.path.dirname(target))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` so that ``path`` holds either the old or the new content, never a mix.

    A temp file in the same folder is written and fsynced, then renamed over ``path``; on any
    error the temp file is removed and the previous file is untouched.
    """
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """UTF-8 variant of :func:`atomic_write_bytes` (newlines are written as given)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_safe(obj: Any) -> Any:
    """Non-finite floats become null (a diverged loss must not make the JSON unwritable)."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def json_text(obj: Any, indent: int | None = 2) -> str:
    """Key-sorted strict JSON; NaN/inf become null and NumPy scalars plain numbers.

    ``indent=None`` gives one compact line, e.g. for a JSON-lines log.
    """
    separators = (",", ":") if indent is None else None
    return json.dumps(
        _json_safe(obj), indent=indent, sort_keys=True, allow_nan=False, separators=separators
    )


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted strict JSON; NaN/inf are stored as null.

    NumPy scalars are converted to Python numbers so metrics can be passed in directly.
    """
    atomic_write_text(path, json_text(obj) + "\n")


def read_json(path: str | os.PathLike[str], spec: Any = None) -> Any:
    """Read a JSON file of a checkpoint (bounded, depth-guarded, checked against ``spec``, see
    :func:`minigrad_lm.io.untrusted.read_json_file`); every problem is a :class:`CheckpointError`
    naming file, line or key."""
    try:
        return read_json_file(path, spec)
    except CheckpointError:
        raise
    except InputError as e:
        raise CheckpointError(str(e)) from None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The file's SHA-256, read in chunks (a multi-GB weights file is never held whole)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------


def _prepare_tensors(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None
) -> tuple[bytes, list[np.ndarray]]:
    """Validate inputs and build the padded header plus the arrays in file order."""
    header: dict[str, Any] = {}
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise TypeError("safetensors metadata must be a dict of str -> str")
        header["__metadata__"] = dict(metadata)
    arrays = []
    offset = 0
    for name in sorted(tensors):
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {name!r}")
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved and cannot be a tensor name")
        value = tensors[name]
        if not isinstance(value, np.ndarray):
            raise TypeError(
                f"tensor {name!r}: expected a numpy.ndarray, got {type(value).__name__}"
            )
        code = _WRITE_CODES.get((value.dtype.kind, value.dtype.itemsize))
        if code is None:
            raise TypeError(f"tensor {name!r}: dtype {value.dtype} cannot be stored in safetensors")
        # The format is little-endian C order whatever the host or the array's layout.
        arr = np.asarray(value, dtype=value.dtype.newbyteorder("<"), order="C")
        header[name] = {
            "dtype": code,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
        arrays.append(arr)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the reference writer aligns the data region to 8 bytes
    return raw, arrays


def _write_safetensors(f: BinaryIO, header: bytes, arrays: list[np.ndarray]) -> None:
    f.write(len(header).to_bytes(8, "little"))
    f.write(header)
    for arr in arrays:
        f.write(arr.reshape(-1).view(np.uint8))  # a byte view writes without a copy


def safetensors_bytes(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serialize to safetensors in memory, e.g. to put into :func:`write_checkpoint_dir`."""
    header, arrays = _prepare_tensors(tensors, metadata)
    parts = [len(header).to_bytes(8, "little"), header]
    parts.extend(arr.tobytes() for arr in arrays)
    return b"".join(parts)


def save_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Atomically write ``tensors`` (sorted by name) in the safetensors format.

    Writable dtypes are the real numpy ones: float64/32/16, (u)int64/32/16/8 and bool.
    """
    header, arrays = _prepare_tensors(tensors, metadata)
    _atomic_write(path, lambda f: _write_safetensors(f, header, arrays))


def _sniff(prefix: bytes) -> str:
    """Name a common foreign format, to explain why a file is not safetensors."""
    if prefix.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "it is a zip archive, e.g. a torch .pt file, which is never unpickled"
    if len(prefix) >= 2 and prefix[0] == 0x80 and 2 <= prefix[1] <= 5:
        return "it is a Python pickle, which is never loaded"
    if prefix.startswith(b"\x93NUMPY"):
        return "it is a NumPy .npy file"
    return ""


def _parse_header(name: str, raw: bytes, prefix: bytes) -> dict[str, Any]:
    # The foreign-format hint is only given on failure: a valid header length can begin with
    # the same bytes as a pickle.
    foreign = _sniff(prefix)
    hint = f"; {foreign}" if foreign else ""
    bad = f"{name}: not a safetensors file"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{bad} (header is not UTF-8 at byte {8 + e.start}{hint})") from None
    try:
        header = parse_json(text, name, duplicates=False)
    except InputError as e:
        why = str(e).removeprefix(f"{name}: ")
        raise CheckpointError(f"{bad} (header is not valid JSON: {why}{hint})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{bad} (header is a JSON {type(header).__name__}, not an object)")
    return header


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_entry(name: str, key: str, entry: Any) -> tuple[str, tuple[int, ...], int, int]:
    where = f"{name}: tensor {short(key)}"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: header entry is not a JSON object")
    missing = {"dtype", "shape", "data_offsets"} - entry.keys()
    if missing:
        raise CheckpointError(f"{where}: header entry lacks {', '.join(sorted(missing))}")
    code = entry["dtype"]
    if not isinstance(code, str) or code not in _FILE_DTYPES:
        raise CheckpointError(f"{where}: unknown dtype {short(code)}")
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise CheckpointError(f"{where}: shape {short(shape)} is not a list of non-negative ints")
    offsets = entry["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_int(o) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise CheckpointError(f"{where}: data_offsets {short(offsets)} are not [begin, end]")
    begin, end = offsets
    nbytes = math.prod(shape) * _FILE_DTYPES[code].itemsize
    if end - begin != nbytes:
        raise CheckpointError(
            f"{where}: data_offsets {short(offsets)} span {end - begin} bytes but dtype {code} "
            f"and shape {short(shape)} need {nbytes}"
        )
    return code, tuple(shape), begin, end


def _read_tensor(
    f: BinaryIO, name: str, key: str, code: str, shape: tuple[int, ...], start: int
) -> np.ndarray:
    arr = np.empty(shape, dtype=_FILE_DTYPES[code])
    if arr.size:
        f.seek(start)
        got = f.readinto(arr.reshape(-1).view(np.uint8))
        if got != arr.nbytes:  # the file shrank under us
            raise CheckpointError(f"{name}: truncated while reading tensor {short(key)}")
    return _widen(arr, code)


def _widen(arr: np.ndarray, code: str) -> np.ndarray:
    """The stored bits as a numpy array: BF16 -> float32, BOOL bytes -> bool."""
    # astype and in-place shifts keep 0-d results arrays (a plain ufunc would give a scalar).
    if code == "BF16":
        wide = arr.astype(np.uint32)
        wide <<= 16
        return wide.view(np.float32)
    if code == "BOOL":
        return arr.astype(bool)
    return arr


def _open_checkpoint(name: str) -> BinaryIO:
    if os.path.isdir(name):
        raise CheckpointError(f"{name}: is a directory, not a safetensors file")
    try:
        require_regular_file(name)  # a FIFO or device would block or read forever
    except InputError as e:
        raise CheckpointError(str(e)) from None
    try:
        return open(name, "rb")
    except FileNotFoundError:
        raise CheckpointError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{name}: is a directory, not a safetensors file") from None
    except OSError as e:
        raise CheckpointError(f"{name}: cannot open ({e.strerror})") from None


def load_safetensors(
    path: str | os.PathLike[str], mmap: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file after validating its header against the file size.

    Returns ``(tensors, metadata)``. Each array is a fresh, writable, C-contiguous copy that
    owns its memory (nothing stays mapped to the file, so the file may be replaced at once).
    With ``mmap=True`` the arrays are read-only views of the mapped file instead (BF16 and BOOL
    excepted): loading weights then never holds a second copy of them. Our writers replace a
    file by renaming, which leaves a mapping valid. BF16 tensors come back as float32. Every
    problem raises :class:`CheckpointError`.
    """
    name = os.fspath(path)
    with _open_checkpoint(name) as f:
        entries, metadata, data_start, data_size = _read_layout(f, name)
        if mmap:
            region = (np.memmap(f, dtype=np.uint8, mode="r", offset=data_start,
                                shape=(data_size,)) if data_size else np.empty(0, np.uint8))
            tensors = {key: _widen(region[begin:end].view(_FILE_DTYPES[code]).reshape(shape),
                                   code)
                       for key, (code, shape, begin, end) in entries.items()}
        else:
            tensors = {
                key: _read_tensor(f, name, key, code, shape, data_start + begin)
                for key, (code, shape, begin, _) in entries.items()
            }
    return tensors, metadata


def _read_layout(f: BinaryIO, name: str) -> tuple[dict, dict[str, str], int, int]:
    """(entries, metadata, data start, data size) of a safetensors file, every header entry
    checked against the others and the file size before any tensor is read."""
    size = os.fstat(f.fileno()).st_size
    prefix = f.read(8)
    if size == 0:
        raise CheckpointError(f"{name}: empty file, not a safetensors file")
    if len(prefix) < 8:
        raise CheckpointError(f"{name}: not a safetensors file (only {size} bytes, truncated?)")
    header_len = int.from_bytes(prefix, "little")
    if header_len > size - 8:
        foreign = _sniff(prefix)
        raise CheckpointError(
            f"{name}: not a safetensors file ({foreign})"
            if foreign
            else f"{name}: not a safetensors file (header length {header_len} exceeds "
            f"file size {size}; truncated?)"
        )
    if header_len > MAX_HEADER_BYTES:
        raise CheckpointError(
            f"{name}: not a safetensors file (header length {header_len} exceeds the "
            f"{MAX_HEADER_BYTES}-byte limit)"
        )
    header = _parse_header(name, f.read(header_len), prefix)
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{name}: __metadata__ is not an object of strings")
    entries = {key: _check_entry(name, key, entry) for key, entry in header.items()}

    data_start = 8 + header_len
    data_size = size - data_start
    layout = sorted(entries.items(), key=lambda item: (item[1][2], item[1][3]))
    expected = 0
    for key, (_, _, begin, end) in layout:
        if end > data_size:
            raise CheckpointError(
                f"{name}: truncated (tensor {short(key)} ends at data byte {end} but the "
                f"data region has only {data_size} bytes)"
            )
        if begin != expected:
            problem = "overlaps the previous tensor" if begin < expected else "leaves a gap"
            raise CheckpointError(f"{name}: tensor {short(key)} at data byte {begin} {problem}")
        expected = end
    if expected != data_size:
        raise CheckpointError(
            f"{name}: {data_size - expected} trailing bytes after the last tensor"
        )
    return entries, dict(metadata), data_start, data_size


# --------------------------------------------------------------------------------------------
# Checkpoint folders
# --------------------------------------------------------------------------------------------


def write_checkpoint_dir(path: str | os.PathLike[str], files: Mapping[str, bytes | str]) -> None:
    """Replace the checkpoint folder ``path`` with ``files`` (name -> content) crash-safely.

    All files go into ``path.tmp`` and are fsynced; then ``path`` -> ``path.old``,
    ``path.tmp`` -> ``path``, and ``path.old`` is deleted. At every instant either ``path`` or
    ``path.old`` is a complete checkpoint; :func:`resolve_checkpoint_dir` finds it. ``str``
    contents are written as UTF-8.
    """
    target = os.path.abspath(os.fspath(path))
    tmp, old = target + ".tmp", target + ".old"
    for fname in files:
        if not fname or fname in (".", "..") or "/" in fname or os.sep in fname:
            raise ValueError(f"checkpoint file name {fname!r} must be a plain file name")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    # A leftover tmp is an interrupted write: never a checkpoint anyone can resolve to.
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    os.mkdir(tmp)
    try:
        for fname, content in files.items():
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            _write_synced(os.path.join(tmp, fname), lambda f, data=data: f.write(data))
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.isdir(target):
        # path is complete, so an .old left by an earlier interrupted swap is stale.
        if os.path.lexists(old):
            shutil.rmtree(old)
        os.rename(target, old)
        _fsync_dir(parent)
    os.rename(tmp, target)
    _fsync_dir(parent)
    if os.path.lexists(old):
        shutil.rmtree(old)
        _fsync_dir(parent)


def resolve_checkpoint_dir(path: str | os.PathLike[str]) -> str:
    """Return the folder holding the latest complete checkpoint for ``path``.

    That is ``path`` itself, or ``path.old`` when a crash in :func:`write_checkpoint_dir`
    happened between its two renames. A lone ``path.tmp`` is incomplete and never returned.
    """
    target = os.fspath(path)
    if os.path.isdir(target):
        return target
    if os.path.isdir(target + ".old"):
        return target + ".old"
    hint = (
        " (only an incomplete .tmp from an interrupted write)"
        if os.path.isdir(target + ".tmp")
        else ""
    )
    raise CheckpointError(f"no checkpoint at {target}{hint}")
