"""Reading files that may be wrong or hostile: regular files only, bounded sizes, JSON parsed
with a depth guard and checked against the shape we expect before any of it is used.

Every problem is an :class:`InputError` (a ValueError) whose message names the file, the key
and what was wrong, with quoted values cut short, so a command-line tool prints it as one line
and a careless or malicious file never ends in a traceback or a runaway allocation.
"""

from __future__ import annotations

import abc
import contextlib
import gzip
import io
import json
import math
import os
import reprlib
import stat
import sys
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = [
    "ANY",
    "Bool",
    "InputError",
    "Int",
    "ListOf",
    "MissingFileError",
    "MapOf",
    "NULL",
    "Num",
    "Object",
    "OneOf",
    "Optional",
    "Spec",
    "Str",
    "check",
    "parse_json",
    "STDIN",
    "read_bytes",
    "read_json_file",
    "read_regular_bytes",
    "reading",
    "require_regular_file",
    "short",
]

# Our own files nest 4 levels; Hugging Face tokenizer.json about 6. Deeper is not a file of ours,
# and code that walks the value (ours, json.dumps, a tokenizer) must not recurse without end.
MAX_DEPTH = 64
# The largest JSON file we read: GPT-2's tokenizer.json is 1.4 MB, large vocabularies ~30 MB.
MAX_JSON_BYTES = 256 << 20
# How much of a bad value an error message quotes.
_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 2, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40


class InputError(ValueError):
    """A file or value from the user is missing, malformed or out of range."""


class MissingFileError(InputError, FileNotFoundError):
    """No such file: an InputError that ``except FileNotFoundError`` catches too."""


def short(value: Any) -> str:
    """``repr(value)`` cut to a few dozen characters (a 90 MB key must not become the error)."""
    return _REPR.repr(value)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def require_regular_file(path: str | os.PathLike[str], what: str = "file") -> int:
    """The size of ``path``; missing, a folder, a device or a FIFO (``/dev/zero`` reads forever)
    is an InputError that says which."""
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        raise MissingFileError(f"{name}: no such {what}") from None
    except OSError as e:
        raise InputError(f"{name}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{name}: is a folder, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{name}: is not a regular {what} (a device, FIFO or socket)")
    return st.st_size


def read_regular_bytes(path: str | os.PathLike[str], limit: int, what: str = "file",
                       why: str = "") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, checked before reading; ``why``
    says where the limit comes from (e.g. the memory available)."""
    name = os.fspath(path)
    size = require_regular_file(name, what)
    if size > limit:
        raise _too_large(name, size, limit, what, why)
    try:
        with open(name, "rb") as f:
            data = f.read(size + 1)
    except OSError as e:
        raise InputError(f"{name}: cannot read ({e.strerror})") from None
    if len(data) > size:  # it grew after the check
        raise InputError(f"{name}: changed while it was read")
    return data


STDIN = "-"  # the file name that means standard input
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def read_bytes(path: str | os.PathLike[str], limit: int, what: str = "file",
               why: str = "") -> bytes:
    """The content of a regular file, or of stdin for ``-``, gunzipped when it starts with
    gzip's magic bytes. More than ``limit`` bytes, before or after decompression, is refused
    naming the file and ``why`` (a gzip bomb stops at ``limit`` bytes, never held whole); a
    corrupt or truncated gzip stream is an InputError naming the file."""
    name = os.fspath(path)
    if name == STDIN:
        name, raw = "stdin", _read_capped(sys.stdin.buffer, limit, "stdin", what, why)
    else:
        raw = read_regular_bytes(name, limit, what, why)
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            return _read_capped(f, limit, name, what, why)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        why_bad = " ".join(str(e).split()) or type(e).__name__
        raise InputError(f"{name}: not a readable gzip file ({_cut(why_bad)})") from None


def _read_capped(stream: Any, limit: int, name: str, what: str, why: str) -> bytes:
    """All of ``stream``, in chunks, refused as soon as it passes ``limit`` bytes."""
    data = bytearray()
    while chunk := stream.read(min(_CHUNK, limit + 1 - len(data))):
        data += chunk
        if len(data) > limit:
            raise _too_large(name, None, limit, what, why)
    return bytes(data)


def _too_large(name: str, size: int | None, limit: int, what: str, why: str) -> InputError:
    """``size`` None: a stream, known only to be longer than ``limit``."""
    has = f"{size:,} bytes" if size is not None else "holds more bytes"
    because = f" ({why})" if why else ""
    return InputError(f"{name}: {has}, more than the {limit:,} a {what} may have{because}")


@contextlib.contextmanager
def reading(source: str) -> Iterator[None]:
    """Interpret a file's content in this block: whatever a malformed value makes the code
    inside raise (a list where a string belongs, a huge number, deep nesting) becomes an
    InputError naming ``source``. Only for code that reads a value from that file."""
    try:
        yield
    except InputError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError,
            RecursionError) as e:
        if isinstance(e, ValueError):
            raise InputError(f"{source}: {_cut(str(e))}") from None
        why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise InputError(f"{source}: malformed content ({_cut(why)})") from None


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------


def _reject_constant(token: str) -> Any:
    raise ValueError(f"non-standard JSON constant {token}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {short(key)}")
        out[key] = value
    return out


def _guard(value: Any, source: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and non-finite numbers (``1e400`` parses as inf),
    walking iteratively so the check itself cannot overflow the stack."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            raise InputError(f"{source}: {_key(where)}{node} is not a finite number")
        if isinstance(node, (dict, list)):
            if depth >= MAX_DEPTH:
                raise InputError(f"{source}: nested deeper than {MAX_DEPTH} levels")
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((v, _join(where, k), depth + 1) for k, v in items)


def parse_json(raw: bytes | str, source: str, duplicates: bool = True) -> Any:
    """Strict JSON (UTF-8, no NaN/Infinity, at most MAX_DEPTH levels, finite numbers);
    ``duplicates=False`` refuses a key given twice."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{source}: not UTF-8 (bad byte at offset {e.start})") from None
    try:
        value = json.loads(raw, parse_constant=_reject_constant,
                           object_pairs_hook=None if duplicates else _no_duplicates)
    except json.JSONDecodeError as e:
        raise InputError(f"{source}:{e.lineno}: malformed JSON ({e.msg} at line {e.lineno} "
                         f"column {e.colno})") from None
    except RecursionError:
        raise InputError(f"{source}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # the hooks above; an integer of more than 4300 digits
        raise InputError(f"{source}: malformed JSON ({_cut(str(e))})") from None
    _guard(value, source)
    return value


def read_json_file(path: str | os.PathLike[str], spec: Spec | None = None,
                   limit: int = MAX_JSON_BYTES) -> Any:
    """Parse a JSON file (see :func:`parse_json`) and check it against ``spec``."""
    name = os.fspath(path)
    value = parse_json(read_regular_bytes(name, limit), name)
    return value if spec is None else check(value, spec, name)


# --------------------------------------------------------------------------------------------
# Expected shapes of JSON values
# --------------------------------------------------------------------------------------------


def _join(where: str, key: Any) -> str:
    part = f"[{key}]" if isinstance(key, int) else str(key)
    return part if not where else (f"{where}{part}" if isinstance(key, int) else
                                   f"{where}.{part}")


def _key(where: str) -> str:
    return f"key {short(where)}: " if where else ""


class Spec(abc.ABC):
    """What a JSON value must be; ``check`` returns it (ints become floats for Num)."""

    @abc.abstractmethod
    def check(self, value: Any, source: str, where: str) -> Any:
        """``value`` if it is what this spec accepts, else an InputError naming ``where``."""

    def fail(self, source: str, where: str, wanted: str, value: Any) -> InputError:
        return InputError(f"{source}: {_key(where)}expected {wanted}, got {short(value)}")


class _Any(Spec):
    def check(self, value, source, where):
        return value


ANY = _Any()


class _Null(Spec):
    def check(self, value, source, where):
        if value is not None:
            raise self.fail(source, where, "null", value)
        return value


NULL = _Null()


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _bounds(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    return f" >= {low}" if low is not None else (f" <= {high}" if high is not None else "")


class Int(Spec):
    def __init__(self, low: int | None = None, high: int | None = None):
        self.low, self.high = low, high

    def check(self, value, source, where):
        if (not _is_int(value) or (self.low is not None and value < self.low)
                or (self.high is not None and value > self.high)):
            raise self.fail(source, where, "an integer" + _bounds(self.low, self.high), value)
        return value


class Num(Spec):
    """A finite number; ``above`` is an exclusive lower bound."""

    def __init__(self, low: float | None = None, high: float | None = None,
                 above: float | None = None):
        self.low, self.high, self.above = low, high, above

    def check(self, value, source, where):
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value)
              and (self.low is None or value >= self.low)
              and (self.high is None or value <= self.high)
              and (self.above is None or value > self.above))
        if not ok:
            wanted = "a finite number" + (f" > {self.above}" if self.above is not None else
                                          _bounds(self.low, self.high))
            raise self.fail(source, where, wanted, value)
        return float(value)


class Bool(Spec):
    def check(self, value, source, where):
        if not isinstance(value, bool):
            raise self.fail(source, where, "true or false", value)
        return value


class Str(Spec):
    def __init__(self, choices: tuple[str, ...] | None = None,
                 test: Callable[[str], bool] | None = None, what: str = "a string"):
        self.choices, self.test, self.what = choices, test, what

    def check(self, value, source, where):
        if self.choices is not None and (not isinstance(value, str) or value not in self.choices):
            raise self.fail(source, where, "one of " + ", ".join(map(repr, self.choices)), value)
        if not isinstance(value, str) or (self.test is not None and not self.test(value)):
            raise self.fail(source, where, self.what, value)
        return value


class Optional(Spec):
    """``spec`` or null."""

    def __init__(self, spec: Spec):
        self.spec = spec

    def check(self, value, source, where):
        return None if value is None else self.spec.check(value, source, where)


class ListOf(Spec):
    def __init__(self, item: Spec, min_len: int = 0, max_len: int | None = None):
        self.item, self.min_len, self.max_len = item, min_len, max_len

    def check(self, value, source, where):
        if not isinstance(value, list) or len(value) < self.min_len or (
                self.max_len is not None and len(value) > self.max_len):
            size = (f" of {self.min_len}" if self.min_len == self.max_len else
                    _bounds(self.min_len or None, self.max_len).replace(" in", " of length in"))
            raise self.fail(source, where, f"a list{size}", value)
        return [self.item.check(v, source, _join(where, i)) for i, v in enumerate(value)]


class MapOf(Spec):
    """An object of any string keys, each value ``value``."""

    def __init__(self, value: Spec, what: str = "an object"):
        self.value, self.what = value, what

    def check(self, value, source, where):
        if not isinstance(value, dict):
            raise self.fail(source, where, self.what, value)
        return {k: self.value.check(v, source, _join(where, k)) for k, v in value.items()}


class Object(Spec):
    """An object with these ``fields``; those in ``required`` must be present, and keys not
    in ``fields`` are refused unless ``extra`` (e.g. Hugging Face configs carry many more)."""

    def __init__(self, fields: Mapping[str, Spec], required: tuple[str, ...] = (),
                 extra: bool = False):
        self.fields, self.required, self.extra = dict(fields), required, extra

    def check(self, value, source, where):
        if not isinstance(value, dict):
            raise self.fail(source, where, "an object", value)
        missing = [k for k in self.required if k not in value]
        if missing:
            raise InputError(f"{source}: {_key(where)}lacks {', '.join(map(repr, missing))}")
        if not self.extra:
            unknown = [k for k in value if k not in self.fields]
            if unknown:
                raise InputError(f"{source}: {_key(where)}unknown key {short(unknown[0])} "
                                 f"(known: {', '.join(self.fields)})")
        return {k: self.fields[k].check(v, source, _join(where, k)) if k in self.fields else v
                for k, v in value.items()}


class OneOf(Spec):
    """An object whose ``key`` (e.g. ``"type"``) says which of ``specs`` it must match."""

    def __init__(self, key: str, specs: Mapping[str, Spec]):
        self.key, self.specs = key, dict(specs)

    def check(self, value, source, where):
        tag = value.get(self.key) if isinstance(value, dict) else None
        if not isinstance(tag, str) or tag not in self.specs:
            wanted = f"an object whose {self.key!r} is one of {', '.join(map(repr, self.specs))}"
            raise self.fail(source, where, wanted, tag if isinstance(value, dict) else value)
        return self.specs[tag].check(value, source, where)


def check(value: Any, spec: Spec, source: str) -> Any:
    """``value`` checked against ``spec``; the error names ``source`` and the key."""
    return spec.check(value, source, "")
