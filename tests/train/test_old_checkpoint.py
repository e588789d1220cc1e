"""A checkpoint written before the safetensors package read our files (tests/fixtures/
tiny_gpt_run: 3 steps of a 1-layer GPT) still loads, samples the same text and trains on."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np

from minigrad_lm.checkpoints.folder import read_checkpoint
from tests.cli_support import run_module, run_train

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_gpt_run"

# Recorded with the code that wrote the fixture.
WEIGHTS_SHA256 = "f77697f0cd73fc61356944ecdd35bb336bbd6dc458ec7e9bad399254391c902d"
SAMPLE = "the qf \nvyptnzv\nw scxngj\nbrqpj\ufffd\ufffdrq\n"  # --seed 0 --temperature 1


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _weights(ckpt_dir: Path) -> dict[str, np.ndarray]:
    model = read_checkpoint(str(ckpt_dir)).build_model()
    return {k: np.asarray(v) for k, v in model.state_dict().items()}


def test_weights_load_unchanged():
    assert _digest(_weights(FIXTURE / "latest")) == WEIGHTS_SHA256


def test_generate_samples_the_same_text():
    out = run_module("minigrad_lm.generate", "--ckpt", FIXTURE, "--prompt", "the ",
                     "--max-new-tokens", "30", "--temperature", "1", "--seed", "0")
    assert out.returncode == 0, out.stderr
    assert out.stdout == SAMPLE


def test_resume_is_refused_in_one_line_and_init_from_trains_on(tmp_path, capsys):
    """Its optimizer groups follow the rule of its day (embeddings without weight decay), so
    resuming says how to continue; --init-from starts from its weights."""
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    assert run_train("--out", run, "--resume", "--max-steps", "5",
                     "--data", FIXTURE / "data.txt") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "optimizer.safetensors" in err and "--init-from" in err
    init = tmp_path / "init"
    assert run_train("--out", init, "--init-from", FIXTURE, "--max-steps", "2",
                     "--data", FIXTURE / "data.txt", "--context", "8", "--n-layer", "1",
                     "--n-head", "1", "--d-model", "8", "--eval-every", "2",
                     "--eval-batches", "1", "--sample-tokens", "0") == 0
    assert _digest(_weights(init / "latest")) != WEIGHTS_SHA256  # it trained
