"""What the command-line tools share: the process tuning they switch on, one-line error
reports and exit statuses."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from . import backend
from .data.text import STDIN, read_lines, read_text

__all__ = ["USAGE_ERROR", "checkpoint_parser", "error_line", "read_context", "read_sentences",
           "report_errors"]

# argparse's own exit status for bad usage; every user error of the tools exits with it too.
USAGE_ERROR = 2
# An error quotes file names and values; a hostile file must not turn it into megabytes.
MAX_ERROR_CHARS = 600


def checkpoint_parser(tool: str, doc: str) -> argparse.ArgumentParser:
    """The parser of a tool that reads a checkpoint: ``--ckpt`` and ``--device``, described by
    the first line of the tool's docstring ``doc``."""
    parser = argparse.ArgumentParser(prog=f"python -m minigrad_lm.{tool}",
                                     description=doc.split("\n")[0])
    parser.add_argument("--ckpt", required=True, metavar="DIR",
                        help="run folder (uses best/, else latest/) or checkpoint folder")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    return parser


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
                   ) -> tuple[list[str], list[str]]:
    """(lines, their names for errors: ``file:line``, ``stdin:line``, ``argument n``) a tool
    works on, line for line: its arguments, else ``file``'s lines (gzip or not; ``-`` is
    stdin), else stdin's. Blank lines are kept, so a tool can answer each with an empty line
    and stay aligned with its input."""
    if arguments and file is not None:
        raise ValueError("give sentences as arguments or --file, not both")
    if arguments:
        return arguments, [f"argument {n}" for n in range(1, len(arguments) + 1)]
    path = file or STDIN
    lines = read_lines(path, encoding)
    where = "stdin" if path == STDIN else path
    return lines, [f"{where}:{n}" for n in range(1, len(lines) + 1)]


def read_context(text: str | None, file: str | None, encoding: str) -> str:
    """A question's context, from ``--context TEXT`` or ``--context-file FILE``."""
    if text is not None and file is not None:
        raise ValueError("give --context or --context-file, not both")
    if text is None and file is None:
        raise ValueError("no context: give --context TEXT or --context-file FILE")
    if text is None:
        text = read_text(Path(file), encoding)
    if not text.strip():
        raise ValueError(f"{file or '--context'}: the context is empty")
    return text
