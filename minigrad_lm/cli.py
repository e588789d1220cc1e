"""What the command-line tools share: device checks and one-line error reports."""

from __future__ import annotations

import sys
from collections.abc import Callable

from . import backend

__all__ = ["USAGE_ERROR", "check_device", "report_errors"]

# argparse's own exit status for bad usage; every user error of the tools exits with it too.
USAGE_ERROR = 2


def check_device(name: str) -> str:
    """Canonical device name; an unknown name or a missing GPU is a ValueError, not a crash
    halfway through loading."""
    device = backend.normalize_device(name)
    if device != "cpu":
        try:
            backend.cupy()
        except RuntimeError as e:
            raise ValueError(str(e)) from None
    return device


def report_errors(run: Callable[[], int]) -> int:
    """Run a tool; a user error (bad file, bad value, bad checkpoint) becomes one
    ``error: ...`` line on stderr and exit status 2 instead of a traceback.

    ValueError covers CheckpointError and bad values; OSError covers missing or unreadable
    files. Anything else is a bug and keeps its traceback.
    """
    try:
        return run()
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
