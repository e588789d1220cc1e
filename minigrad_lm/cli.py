"""What the command-line tools share: the process tuning they switch on, one-line error
reports and exit statuses."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from . import backend
from .data.text import decode_text, read_text

__all__ = ["USAGE_ERROR", "error_line", "read_sentences", "report_errors"]

# argparse's own exit status for bad usage; every user error of the tools exits with it too.
USAGE_ERROR = 2
# An error quotes file names and values; a hostile file must not turn it into megabytes.
MAX_ERROR_CHARS = 600


def error_line(error: BaseException) -> str:
    """``error: ...`` on one line, at most MAX_ERROR_CHARS long."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, MemoryError) and not isinstance(error, ValueError):
        text = f"out of memory ({text})"  # an allocation that failed despite the estimates
    if len(text) > MAX_ERROR_CHARS:
        text = f"{text[:MAX_ERROR_CHARS]}... ({len(text):,} characters)"
    return f"error: {text}"


def report_errors(run: Callable[[], int]) -> int:
    """Run a tool, with the process tuned for training first (backend.tuning). A user error
    (bad file, bad value, bad checkpoint, a model too large for the memory) becomes one
    ``error: ...`` line on stderr and exit status 2, not a traceback.

    The readers of every file turn whatever a malformed one provokes into an InputError (a
    ValueError) naming the file, so ValueError covers them, CheckpointError and bad values;
    OSError covers missing or unreadable files; OverflowError a number too large for an
    array; MemoryError a refused estimate or a failed allocation. Anything else is a bug and
    keeps its traceback.
    """
    backend.tune_for_training()
    try:
        return run()
    except BrokenPipeError:  # the reader left (`| head`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (ValueError, OSError, OverflowError, MemoryError) as e:
        print(error_line(e), file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def read_sentences(arguments: list[str], file: str | None, encoding: str
                   ) -> tuple[list[str], list[str] | None]:
    """The sentences a tool works on, from its arguments, else from ``file`` (one a line; ``-``
    is stdin), else from stdin, blank lines skipped; and, from a file, their ``file:line``
    names (for errors)."""
    if arguments and file is not None:
        raise ValueError("give sentences as arguments or --file, not both")
    if arguments:
        return arguments, None
    if file is not None and file != "-":
        text, where = read_text(Path(file), encoding), file
    else:
        text, where = decode_text(sys.stdin.buffer.read(), encoding, "stdin"), "stdin"
    numbered = [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]
    if not numbered:
        raise ValueError("no sentences: give them as arguments, with --file, or one per line "
                         "on stdin")
    return [line for _, line in numbered], [f"{where}:{n}" for n, _ in numbered]
