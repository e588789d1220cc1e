"""Safe checkpoint files: safetensors (through the `safetensors` package, with clear errors),
atomic writes, crash-safe checkpoint folders.

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
import safetensors.numpy
from safetensors import SafetensorError, safe_open

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

# Same cap as the safetensors package: a larger header is a corrupt or hostile file.
MAX_HEADER_BYTES = 100_000_000

# The NumPy dtypes the safetensors package stores (it has no complex128 or float128).
_STORABLE = frozenset(np.dtype(c).newbyteorder("<") for c in "?bBhHiIqQefdF")

# The stored dtypes we read -> the little-endian NumPy dtype of their bytes. NumPy has no
# bfloat16 (its bits are widened to float32) and a BOOL byte may hold any value: those two are
# read from their bits, the rest by the package (or mapped).
_FILE_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "C64": np.dtype("<c8"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("u1"),
}
_FROM_BITS = ("BF16", "BOOL")


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


def _storable(tensors: Mapping[str, np.ndarray],
              metadata: Mapping[str, str] | None) -> dict[str, np.ndarray]:
    """The tensors as C-order little-endian arrays (the package writes an array's memory as it
    lies, strides and byte order ignored); what it cannot store is refused naming the tensor."""
    if metadata is not None and not (isinstance(metadata, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise TypeError("safetensors metadata must be a dict of str -> str")
    out = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {name!r}")
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved and cannot be a tensor name")
        if not isinstance(value, np.ndarray):
            raise TypeError(
                f"tensor {name!r}: expected a numpy.ndarray, got {type(value).__name__}"
            )
        little = value.dtype.newbyteorder("<")
        if little not in _STORABLE:
            raise TypeError(f"tensor {name!r}: dtype {value.dtype} cannot be stored in safetensors")
        out[name] = np.asarray(value, dtype=little, order="C")
    return out


def safetensors_bytes(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serialize to safetensors in memory (the `safetensors` package), e.g. to put into
    :func:`write_checkpoint_dir`."""
    # metadata {} with no tensors: safetensors 0.8 writes a broken header, None a good one
    return safetensors.numpy.save(_storable(tensors, metadata), metadata or None)


def save_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Atomically write ``tensors`` in the safetensors format.

    Writable dtypes are the real numpy ones: float64/32/16, complex64, (u)int64/32/16/8, bool.
    """
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata))


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


def _read_header(f: BinaryIO, name: str) -> tuple[dict[str, Any], int]:
    """(header, data start): what the package does not say clearly (an empty, truncated or
    foreign file; a repeated tensor name, which it would take silently)."""
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
    return _parse_header(name, f.read(header_len), prefix), 8 + header_len


def _from_bits(arr: np.ndarray, code: str) -> np.ndarray:
    """The stored bits as a numpy array: BF16 -> float32, BOOL bytes -> bool."""
    # astype and in-place shifts keep 0-d results arrays (a plain ufunc would give a scalar).
    if code == "BF16":
        wide = arr.astype(np.uint32)
        wide <<= 16
        return wide.view(np.float32)
    return arr.astype(bool)


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
    """Read a safetensors file with the `safetensors` package, which checks every header
    entry against the others and the file size before a tensor is read.

    Returns ``(tensors, metadata)``. Each array is a fresh, writable, C-contiguous copy
    (nothing stays mapped to the file, so the file may be replaced at once). With
    ``mmap=True`` the arrays are read-only views of the mapped file instead (BF16 and BOOL
    excepted): loading weights then never holds a second copy of them. Our writers replace a
    file by renaming, which leaves a mapping valid. BF16 tensors come back as float32. Every
    problem raises :class:`CheckpointError`.
    """
    name = os.fspath(path)
    with _open_checkpoint(name) as f:
        header, data_start = _read_header(f, name)
        try:
            with safe_open(name, framework="np") as checked:  # checks every entry, the size
                metadata = checked.metadata() or {}
                entries = {k: e for k, e in header.items() if k != "__metadata__"}
                for key, entry in entries.items():
                    if entry["dtype"] not in _FILE_DTYPES:
                        raise CheckpointError(f"{name}: tensor {short(key)} has dtype "
                                              f"{entry['dtype']}, which NumPy cannot hold")
                tensors, region = {}, None
                for key, entry in entries.items():
                    code, shape = entry["dtype"], tuple(entry["shape"])
                    if not mmap and code not in _FROM_BITS:
                        tensors[key] = checked.get_tensor(key).reshape(shape)  # 0-d stays 0-d
                        continue
                    if region is None:
                        region = _data_region(f, data_start)
                    begin, end = entry["data_offsets"]
                    arr = region[begin:end].view(_FILE_DTYPES[code]).reshape(shape)
                    tensors[key] = _from_bits(arr, code) if code in _FROM_BITS else arr
        except SafetensorError as e:
            raise CheckpointError(_explain(name, e, header, data_start)) from None
    return tensors, metadata


def _explain(name: str, error: SafetensorError, header: dict[str, Any], data_start: int) -> str:
    """The package's refusal as one line naming the file; a data region of the wrong size (the
    package has checked every entry by then) says how many bytes are missing or left over."""
    reason = " ".join(str(error).split())
    for prefix in ("Error while deserializing header: ", "Error while deserializing: "):
        reason = reason.removeprefix(prefix)
    if "not fully covered" in reason:
        data_size = os.path.getsize(name) - data_start
        claimed = max((e["data_offsets"][1] for k, e in header.items() if k != "__metadata__"),
                      default=0)
        if claimed > data_size:
            return (f"{name}: truncated (the header describes {claimed} data bytes, the file "
                    f"holds {data_size})")
        return f"{name}: {data_size - claimed} trailing bytes after the last tensor"
    return f"{name}: not a valid safetensors file ({reason})"


def _data_region(f: BinaryIO, data_start: int) -> np.ndarray:
    """The file's data region, mapped read-only."""
    size = os.fstat(f.fileno()).st_size - data_start
    if not size:
        return np.empty(0, np.uint8)
    return np.memmap(f, dtype=np.uint8, mode="r", offset=data_start, shape=(size,))


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
