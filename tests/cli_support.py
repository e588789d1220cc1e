"""Shared pieces of the command-line tests: tiny runs, synthetic data, file snapshots."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from minigrad_lm import train
from minigrad_lm.io.files import load_safetensors

REPO = Path(__file__).resolve().parents[1]

# A model small enough that a step takes milliseconds on a CPU.
TINY = [
    "--n-layer", "1", "--n-head", "2", "--d-model", "16", "--context", "16",
    "--batch-size", "4", "--eval-batches", "2", "--log-every", "1000",
    "--warmup-steps", "2", "--peak-flops", "1e11",
]

WORDS = ("the", "a", "function", "returns", "value", "of", "list", "string", "object", "is",
         "when", "if", "not", "and", "to", "in", "file", "name", "new", "default")


def synthetic_text(n_words: int = 1500, seed: int = 0) -> str:
    """Docstring-like lines of random words: learnable, and quick to make."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n_words // 10):
        words = rng.choice(WORDS, size=10)
        lines.append(" ".join(words).capitalize() + ".")
    return "\n".join(lines) + "\n"


def write_corpus(folder: Path, name: str = "corpus.txt", **kwargs) -> Path:
    path = folder / name
    path.write_text(synthetic_text(**kwargs), encoding="utf-8")
    return path


def run_train(*argv: str | os.PathLike) -> int:
    """The real ``python -m minigrad_lm.train`` entry point, in-process."""
    return train.main([os.fspath(a) for a in argv])


def run_module(module: str, *argv, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """``python -m module argv...`` in a subprocess, with this checkout importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run(
        [sys.executable, "-m", module, *map(os.fspath, argv)],
        capture_output=True, text=True, timeout=timeout, env=env, check=False, **kwargs,
    )


def assert_exact_resume(common: list, folder: Path, steps: int = 8, stop: int = 4
                        ) -> dict[str, np.ndarray]:
    """A run of ``steps`` and one stopped at ``stop`` and resumed end with identical weights,
    which are returned."""
    assert run_train(*common, "--max-steps", str(steps), "--out", folder / "whole") == 0
    assert run_train(*common, "--max-steps", str(stop), "--out", folder / "split") == 0
    assert run_train(*common, "--max-steps", str(steps), "--out", folder / "split",
                     "--resume") == 0
    whole = load_safetensors(folder / "whole" / "latest" / "model.safetensors")[0]
    split = load_safetensors(folder / "split" / "latest" / "model.safetensors")[0]
    assert whole.keys() == split.keys()
    for name, value in whole.items():
        np.testing.assert_array_equal(split[name], value, err_msg=name)
    return whole


def set_file(folder: Path, fname: str, data: bytes, checksum: bool = True) -> None:
    """Write a checkpoint file, and (``checksum``) its new hash into checksums.json, so the
    edit is read as the file's own content."""
    (folder / fname).write_bytes(data)
    if checksum and (folder / "checksums.json").exists():
        sums = json.loads((folder / "checksums.json").read_text())
        sums[fname] = hashlib.sha256(data).hexdigest()
        (folder / "checksums.json").write_text(json.dumps(sums))


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under ``folder``: to prove nothing changed."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_one_line_error(err: str, *fragments: str) -> None:
    """A user error is exactly one ``error: ...`` line on stderr, never a traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
