"""`python -m minigrad_lm.train` on tiny models: checkpoints, exact resume, crash safety,
signals, config files and the one-line errors for bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigrad_lm.data.corpus import default_corpus
from minigrad_lm.io.files import load_safetensors
from minigrad_lm.checkpoints.folder import read_checkpoint
from minigrad_lm.checkpoints.metrics import read_metrics
from tests.cli_support import (
    REPO,
    TINY,
    assert_one_line_error,
    run_module,
    run_train,
    snapshot,
    write_corpus,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("data"))


@pytest.fixture
def trained_run(tiny_lm_run) -> Path:
    """The shared finished 12-step run (on the same text as ``corpus``), copied by tests that
    need to damage it."""
    return tiny_lm_run


def _train_losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(str(run)) if r["kind"] == "train"]


def _weights(run: Path, which: str = "latest") -> dict[str, np.ndarray]:
    return load_safetensors(run / which / "model.safetensors")[0]


# --------------------------------------------------------------------------------------------
# Normal runs
# --------------------------------------------------------------------------------------------


def test_short_run_writes_checkpoints_that_load(trained_run, capsys):
    for which in ("latest", "best"):
        files = sorted(os.listdir(trained_run / which))
        assert all(f.endswith((".safetensors", ".json")) for f in files), files
        assert {"model.safetensors", "config.json", "tokenizer.json", "optimizer.safetensors",
                "state.json"} <= set(files)
    # the optimizer's options come from the config: only its step is kept
    assert json.loads((trained_run / "latest" / "optimizer.json").read_text()) == {"step": 12}
    ckpt = read_checkpoint(str(trained_run))
    assert ckpt.state["step"] == 12 and ckpt.task == "lm"
    model = ckpt.build_model()
    assert model.config.n_layer == 1
    assert json.loads((trained_run / "train_config.json").read_text())["max_steps"] == 12

    records = read_metrics(str(trained_run))
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 13))
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [6, 12]
    for r in evals:
        assert {"train_loss", "val_loss", "val_ppl", "val_acc"} <= set(r)
        assert r["val_ppl"] == pytest.approx(np.exp(r["val_loss"]))
    train_record = records[0]
    assert {"loss", "lr", "tokens_per_s", "mfu", "grad_norm"} <= set(train_record)


def test_run_prints_baseline_eval_lines_and_sample(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    assert run_train("--data", corpus, "--out", out, "--max-steps", "4", "--eval-every", "2",
                     *TINY, "--log-every", "2", "--sample-tokens", "30") == 0
    stdout = capsys.readouterr().out
    assert "unigram baseline" in stdout and "parameters" in stdout
    assert "step 2: train" in stdout and "| unigram" in stdout and "ppl" in stdout
    assert "step 4/4 | loss" in stdout and "tok/s" in stdout and "MFU" in stdout
    assert "sample (30 tokens" in stdout


def test_default_corpus_run_is_deterministic_across_processes(tmp_path):
    """No --data: the stdlib-docstring corpus, identical in a fresh interpreter."""
    result = run_module("minigrad_lm.train", "--out", tmp_path / "run", "--max-steps", "1",
                        *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    digest = hashlib.sha256(default_corpus().encode()).hexdigest()[:12]
    assert f"standard library, {len(default_corpus()):,} characters (sha256 {digest})" in (
        result.stdout)
    assert "unigram baseline" in result.stdout


def test_exact_resume_matches_an_uninterrupted_run(tmp_path, corpus):
    # --decay-steps 30: the learning rate decays, and is flat at --min-lr for the last steps.
    common = ["--data", corpus, "--dropout", "0.1", "--eval-every", "10", "--decay-steps", "30",
              *TINY]
    assert run_train(*common, "--out", tmp_path / "a", "--max-steps", "40") == 0
    assert run_train(*common, "--out", tmp_path / "b", "--max-steps", "20") == 0
    assert run_train("--out", tmp_path / "b", "--resume", "--max-steps", "40") == 0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert _train_losses(tmp_path / "a") == _train_losses(tmp_path / "b")
    opt_a = load_safetensors(tmp_path / "a" / "latest" / "optimizer.safetensors")[0]
    opt_b = load_safetensors(tmp_path / "b" / "latest" / "optimizer.safetensors")[0]
    assert all(np.array_equal(opt_a[k], opt_b[k]) for k in opt_a)


def test_config_file_json_and_toml_with_command_line_winning(tmp_path, corpus):
    (tmp_path / "c.json").write_text(json.dumps({"max-steps": 3, "lr": 0.003, "n_layer": 1}))
    (tmp_path / "c.toml").write_text("max_steps = 3\nlr = 0.003\nnorm = 'post'\n")
    for name in ("c.json", "c.toml"):
        out = tmp_path / name.replace(".", "_")
        assert run_train("--config", tmp_path / name, "--data", corpus, "--out", out,
                         *TINY, "--max-steps", "2") == 0
        saved = json.loads((out / "train_config.json").read_text())
        assert saved["max_steps"] == 2 and saved["lr"] == 0.003
    assert saved["norm"] == "post"


def test_overwrite_replaces_a_run(tmp_path, trained_run, corpus):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert run_train("--data", corpus, "--out", run, "--max-steps", "3", "--eval-every", "3",
                     "--overwrite", *TINY) == 0
    assert read_checkpoint(str(run)).state["step"] == 3
    assert len([r for r in read_metrics(str(run)) if r["kind"] == "train"]) == 3


# --------------------------------------------------------------------------------------------
# Interruptions: signals and crashes
# --------------------------------------------------------------------------------------------


def _wait_for_steps(metrics: Path, proc: subprocess.Popen, steps: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count('"kind":"train"') >= steps:
            return
        time.sleep(0.05)
    raise AssertionError(f"training did not reach step {steps}: {proc.poll()}")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_finishes_the_step_saves_and_resumes(tmp_path, corpus, signum, code):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "minigrad_lm.train", "--data", str(corpus), "--out", str(out),
         "--max-steps", "100000", "--eval-every", "100000", *TINY],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    _wait_for_steps(out / "metrics.jsonl", proc, 5)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    step = read_checkpoint(str(out / "latest")).state["step"]
    assert step >= 5
    assert f"interrupted at step {step}, checkpoint saved to" in stdout
    assert max(r["step"] for r in read_metrics(str(out))) == step
    assert run_train("--out", out, "--resume", "--max-steps", str(step + 3)) == 0
    assert read_checkpoint(str(out / "latest")).state["step"] == step + 3


CRASH_SCRIPT = """
import os, sys
from minigrad_lm.io import files as checkpoint
from minigrad_lm import train

mode, argv = sys.argv[1], sys.argv[2:]
saves = 0
real_write, real_rename = checkpoint._write_synced, os.rename

def write(path, fn):
    global saves
    if path.endswith(os.path.join("latest.tmp", "model.safetensors")):
        saves += 1
        if saves == 2 and mode == "mid-write":
            class Half:  # the process dies with half of the new weights on disk
                def write(self, data):
                    with open(path, "wb") as f:
                        f.write(bytes(data)[: len(data) // 2])
                    os._exit(137)
            fn(Half())
    real_write(path, fn)

def rename(src, dst):
    real_rename(src, dst)
    if saves == 2 and mode == "between-renames" and dst.endswith("latest.old"):
        os._exit(137)  # latest/ is now latest.old/ and the new one is still latest.tmp/

checkpoint._write_synced = write
checkpoint.os.rename = rename
sys.exit(train.main(argv))
"""


@pytest.mark.parametrize("mode", ["mid-write", "between-renames"])
def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, corpus, mode):
    out = tmp_path / "run"
    argv = ["--data", corpus, "--out", out, "--max-steps", "6", "--eval-every", "3", *TINY]
    result = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, mode, *map(str, argv)], capture_output=True,
        text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False,
    )
    assert result.returncode == 137, result.stderr
    latest = read_checkpoint(str(out / "latest"))  # finds latest.old after a cut swap
    assert latest.state["step"] == 3
    latest.build_model()
    assert run_train("--out", out, "--resume") == 0
    assert read_checkpoint(str(out / "latest")).state["step"] == 6
    # The steps logged after the surviving checkpoint were logged again, once.
    assert [r["step"] for r in read_metrics(str(out)) if r["kind"] == "train"] == list(range(1, 7))
    assert not any(p.name.endswith((".tmp", ".old")) for p in out.iterdir())


# --------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit status 2, nothing on disk changed
# --------------------------------------------------------------------------------------------


def test_cuda_without_a_gpu_is_one_line(tmp_path, corpus, capsys):
    import minigrad_lm as mg

    if mg.cuda_available():
        pytest.skip("a GPU is present")
    assert run_train("--data", corpus, "--out", tmp_path / "run", "--device", "cuda", *TINY) == 2
    assert_one_line_error(capsys.readouterr().err, "device 'cuda' is not available")
    assert not (tmp_path / "run").exists()


def _damage(run: Path, how: str) -> None:
    weights = run / "latest" / "model.safetensors"
    if how == "truncate":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif how == "flip":
        data = bytearray(weights.read_bytes())
        data[-5] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif how == "pickle":
        import pickle

        weights.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))


FRESH = ["--out", "{tmp}/fresh"]
BAD_RUNS = {
    "missing data": ([*FRESH, "--data", "{tmp}/nope.txt"], "nope.txt: no such file"),
    "empty corpus": ([*FRESH, "--data", "{tmp}/empty.txt"], "corpus is empty"),
    "corpus shorter than context": ([*FRESH, "--data", "{tmp}/short.txt"],
                                    "not more than --context"),
    "unknown device": ([*FRESH, "--device", "tpu"], "unknown device 'tpu'"),
    "bad flag value": ([*FRESH, "--dropout", "1.5"], "--dropout must be"),
    "config unknown key": ([*FRESH, "--config", "{tmp}/bad.json"], "unknown option 'n_layers'"),
    "resume without checkpoint": ([*FRESH, "--resume"], "no checkpoint to resume"),
    "existing run": ([], "already holds a training run"),
    "incompatible resume": (["--resume", "--max-steps", "20", "--n-layer", "2"],
                            "was trained with --n-layer 1, not 2"),
    "resume past max steps": (["--resume"],
                              "is at step 12, not below the run's 12 steps; raise --max-steps"),
    "init-from incompatible": ([*FRESH, "--init-from", "{run}", "--d-model", "32"],
                               "--d-model 32 (checkpoint: 16)"),
    "init-from a file": ([*FRESH, "--init-from", "{run}/latest/model.safetensors"], "is a file"),
    "truncated checkpoint": (["--resume", "--max-steps", "20"], "truncated"),
    "corrupted checkpoint": (["--resume", "--max-steps", "20"], "corrupted"),
    "pickled checkpoint": (["--resume", "--max-steps", "20"], "pickle, which is never loaded"),
}
DAMAGE = {"truncated checkpoint": "truncate", "corrupted checkpoint": "flip",
          "pickled checkpoint": "pickle"}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_bad_input_is_one_line_and_changes_nothing(case, tmp_path, trained_run, corpus, capsys):
    extra, message = BAD_RUNS[case]
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    _damage(run, DAMAGE.get(case, ""))
    (tmp_path / "empty.txt").write_text(" \n\n")
    (tmp_path / "short.txt").write_text("just a few words\n")
    (tmp_path / "bad.json").write_text('{"n_layers": 2}')
    before = snapshot(tmp_path)
    argv = ["--data", str(corpus), "--out", str(run), *TINY, "--max-steps", "12"]
    argv += [a.format(tmp=tmp_path, run=run) for a in extra]
    capsys.readouterr()
    assert run_train(*argv) == 2
    assert_one_line_error(capsys.readouterr().err, message)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "fresh").exists()


# --------------------------------------------------------------------------------------------
# python -m minigrad_lm.plot
# --------------------------------------------------------------------------------------------


def test_plot_draws_the_loss_curves_or_says_how_to_install_matplotlib(trained_run, tmp_path):
    png = tmp_path / "loss.png"
    result = run_module("minigrad_lm.plot", trained_run, "--output", png)
    try:
        import matplotlib  # noqa: F401  (an optional extra)
    except ModuleNotFoundError:
        assert result.returncode == 1 and not png.exists()
        assert_one_line_error(result.stderr, "matplotlib", "pip install")
        return
    assert result.returncode == 0, result.stderr
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_plot_of_a_folder_without_metrics(tmp_path, capsys):
    from minigrad_lm import plot

    assert plot.main([str(tmp_path)]) == 2
    assert_one_line_error(capsys.readouterr().err, "metrics.jsonl: no such file")
