"""`python -m minigrad_lm.train --precision`: a float16 run learns like float32, logs its loss
scale and skipped steps, resumes exactly (the scaler's state is in the checkpoint), and
bfloat16 is refused in one line."""
from __future__ import annotations

import numpy as np

from minigrad_lm.io.files import load_safetensors
from minigrad_lm.checkpoints.folder import read_checkpoint
from minigrad_lm.checkpoints.metrics import read_metrics
from tests.cli_support import TINY, assert_one_line_error, run_train, write_corpus


def _train_records(run):
    return [r for r in read_metrics(str(run)) if r["kind"] == "train"]


def test_fp16_run_learns_like_fp32_logs_its_scale_and_resumes_exactly(tmp_path):
    corpus = write_corpus(tmp_path)
    common = ["--data", corpus, "--eval-every", "10", *TINY]
    assert run_train(*common, "--out", tmp_path / "fp32", "--max-steps", "20") == 0
    assert run_train(*common, "--out", tmp_path / "a", "--max-steps", "20",
                     "--precision", "fp16") == 0
    fp32, fp16 = _train_records(tmp_path / "fp32"), _train_records(tmp_path / "a")
    assert all(r["loss_scale"] > 0 and r["skipped_steps"] >= 0 for r in fp16)
    assert "loss_scale" not in fp32[0]
    np.testing.assert_allclose([r["loss"] for r in fp16], [r["loss"] for r in fp32], rtol=0.02)
    assert read_checkpoint(str(tmp_path / "a" / "latest")).state["grad_scaler"]["scale"] > 0

    assert run_train(*common, "--out", tmp_path / "b", "--max-steps", "10",
                     "--precision", "fp16") == 0
    assert run_train("--out", tmp_path / "b", "--resume", "--max-steps", "20") == 0
    assert [r["loss"] for r in _train_records(tmp_path / "b")] == [r["loss"] for r in fp16]
    a = load_safetensors(tmp_path / "a" / "latest" / "model.safetensors")[0]
    b = load_safetensors(tmp_path / "b" / "latest" / "model.safetensors")[0]
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_bf16_is_refused_in_one_line(tmp_path, capsys):
    corpus = write_corpus(tmp_path)
    assert run_train("--data", corpus, "--out", tmp_path / "run", "--precision", "bf16",
                     *TINY) == 2
    assert_one_line_error(capsys.readouterr().err, "--precision bf16",
                          "neither NumPy nor CuPy has bfloat16 arithmetic")
    assert not (tmp_path / "run").exists()
