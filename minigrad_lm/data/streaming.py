"""Text files read a line at a time, gzip or not: what a corpus of millions of words needs, so
that no more than one line (and a read buffer) is ever in memory.
"""
from __future__ import annotations

import codecs
import gzip
import io
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from ..io.untrusted import require_regular_file

GZIP_MAGIC = b"\x1f\x8b"
# A line longer than this is no line of prose (a binary file, a corpus without newlines):
# reading it whole would hold it in memory.
MAX_LINE_CHARS = 64 << 20


def is_gzip(path: str | os.PathLike[str]) -> bool:
    """True when the file starts with gzip's magic bytes (the name does not matter)."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def iter_lines(path: str | os.PathLike[str], encoding: str = "utf-8",
               progress: Callable[[int], None] | None = None) -> Iterator[str]:
    """The lines of a text file without their line endings (CRLF too, a leading BOM dropped),
    gunzipped when it is gzip. ``progress`` gets the file's bytes read so far (compressed
    bytes for gzip) after each line. A byte that is not valid ``encoding`` names the file, the
    line and the flag; a corrupt gzip stream names the file."""
    name = os.fspath(path)
    require_regular_file(name)
    try:
        codecs.lookup(encoding)  # an unknown encoding fails before the file opens
    except LookupError:
        raise ValueError(f"--encoding {encoding!r}: not an encoding Python knows") from None
    with open(name, "rb") as raw:
        binary = gzip.GzipFile(fileobj=raw) if raw.read(2) == GZIP_MAGIC else raw
        raw.seek(0)
        lineno = 0
        try:
            for lineno, line in enumerate(_bounded_lines(binary, name), start=1):
                text = line.decode(encoding)
                if lineno == 1:
                    text = text.removeprefix("\ufeff")
                yield text.rstrip("\n").removesuffix("\r")
                if progress is not None:
                    progress(raw.tell())
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{name}:{lineno}: not valid {encoding} (byte 0x{e.object[e.start]:02x}); give "
                "the file's encoding with --encoding (e.g. --encoding latin-1)") from None
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{name}: not a readable gzip file ({e})") from None


def _bounded_lines(binary: io.BufferedIOBase, name: str) -> Iterator[bytes]:
    while True:
        line = binary.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        if len(line) > MAX_LINE_CHARS and not line.endswith(b"\n"):
            raise ValueError(f"{name}: a line longer than {MAX_LINE_CHARS:,} bytes; a corpus "
                             "holds one document or paragraph a line")
        yield line


def total_bytes(paths: list[str]) -> int:
    """The bytes a progress bar over :func:`iter_lines` of ``paths`` counts to."""
    return sum(Path(p).stat().st_size for p in paths)
