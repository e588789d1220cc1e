"""The default corpus: prose from the docstrings of the running Python's standard library,
so the default run needs no download.
"""
from __future__ import annotations

import ast
import functools
import inspect
import os
import sysconfig
import warnings
from pathlib import Path

DEFAULT_CORPUS_CHARS = 1_000_000

# Tests, demos and vendored or legacy trees: repetitive or not prose.
_SKIP_DIRS = frozenset(
    {
        "site-packages",
        "dist-packages",
        "test",
        "tests",
        "idlelib",
        "lib2to3",
        "turtledemo",
        "__pycache__",
    }
)
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _stdlib_sources(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        found.extend(Path(dirpath, f) for f in filenames if f.endswith(".py"))
    # Sorting the relative POSIX paths makes the corpus independent of directory listing order.
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _docstrings(source: bytes) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old escape sequences in some modules warn on parse
        tree = ast.parse(source)
    nodes = [n for n in ast.walk(tree) if isinstance(n, _DOC_NODES)]
    # ast.walk is breadth-first; the module node has no position and sorts first.
    nodes.sort(key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", -1)))
    docs = (ast.get_docstring(n, clean=False) for n in nodes)
    return [clean for doc in docs if doc and (clean := inspect.cleandoc(doc))]


@functools.lru_cache(maxsize=1)
def default_corpus() -> str:
    """About 1 MB of English prose that needs no download: the standard library's docstrings.

    Module, class and function docstrings of the running Python's standard library, in sorted
    file order and source order, joined by blank lines and cut at a docstring boundary before
    ``DEFAULT_CORPUS_CHARS``. Deterministic for a given Python version; cached.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    pieces: list[str] = []
    total = 0
    for path in _stdlib_sources(root):
        try:
            docs = _docstrings(path.read_bytes())
        except (SyntaxError, ValueError, OSError):  # unparsable or unreadable: just skip it
            continue
        for doc in docs:
            cost = len(doc) + (2 if pieces else 0)
            if total + cost > DEFAULT_CORPUS_CHARS:
                return "\n\n".join(pieces)
            pieces.append(doc)
            total += cost
    if not pieces:
        raise RuntimeError(f"no standard-library docstrings found under {root}")
    return "\n\n".join(pieces)
