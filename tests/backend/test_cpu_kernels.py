"""The CPU's ways of splitting work (backend/threads.py) beyond the op registry's split checks
(tests/engine/test_op_registry.py): blocks cover every element once, Adam's kernel in blocks on
threads gives the one-block result and its xp reference's; OpenBLAS's idle workers stop spinning
once chunking is set up; nothing process-wide changes at import, the fast path starts at the
first heavy use, and the thread budget follows the usual variables."""
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import minigrad_lm as mg
from minigrad_lm.backend import threads
from tests.cli_support import REPO


MAP_CHUNKS = threads.map_chunks


def split_into_blocks(monkeypatch, split: bool) -> list[int]:
    """Chunks on 2 threads and blocks of 4 elements, or one chunk in one block; the pool is
    made ready whatever BLAS NumPy has (without one that takes a thread count, chunking would
    silently stay off). Returns the list that records how many chunks each call ran."""
    monkeypatch.setattr(threads, "_threads", 2 if split else 1)
    monkeypatch.setattr(threads, "MIN_CHUNK_ELEMENTS", 0 if split else threads.MIN_CHUNK_ELEMENTS)
    monkeypatch.setattr(threads, "BLOCK_ELEMENTS", 4 if split else 1 << 30)
    if split and not threads._ready():
        monkeypatch.setattr(threads, "_pool", ThreadPoolExecutor(1))
        monkeypatch.setattr(threads, "_set_blas_threads", lambda n: None)
        monkeypatch.setattr(threads, "_ready", lambda: True)
    chunk_counts: list[int] = []

    def counting(fn, chunks):
        chunk_counts.append(len(chunks))
        return MAP_CHUNKS(fn, chunks)
    monkeypatch.setattr(threads, "map_chunks", counting)
    return chunk_counts


def test_map_blocks_covers_every_element_once(monkeypatch):
    split_into_blocks(monkeypatch, True)
    hits = np.zeros(19, int)

    def visit(block):
        assert block.stop - block.start <= 4
        hits[block] += 1
    threads.map_blocks(visit, hits.size)
    assert (hits == 1).all()


SPIN_PROBE = textwrap.dedent("""
    import time
    import numpy as np
    from minigrad_lm.backend import threads

    a = np.ones((512, 512), np.float32)

    def cpu_seconds_while_idle():
        a @ a  # wakes OpenBLAS's workers
        t0 = time.process_time()
        time.sleep(0.1)
        return time.process_time() - t0

    lib, _, n_threads = threads._openblas_thread_control()
    if lib is None or n_threads < 2 or not threads._ready():
        print("no threaded OpenBLAS")
    else:
        _, _, threads_after = threads._openblas_thread_control()
        assert threads_after == n_threads, (n_threads, threads_after)
        assert np.array_equal(a @ a, np.full((512, 512), 512, np.float32))
        print(min(cpu_seconds_while_idle() for _ in range(3)))
""")


def test_openblas_workers_sleep_after_chunking_is_set_up():
    """Idle OpenBLAS workers used to spin ~0.1 s after each GEMM, taking the core our chunks
    need; once chunking is set up, a 0.1 s sleep after a GEMM costs almost no CPU time."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MINIGRAD_CPU_THREADS": "2"}
    env.pop("OPENBLAS_THREAD_TIMEOUT", None)
    out = subprocess.run([sys.executable, "-c", SPIN_PROBE], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    if out == "no threaded OpenBLAS":
        pytest.skip("NumPy's BLAS is not a threaded OpenBLAS here")
    assert float(out) < 0.02, f"{out} s of CPU time while idle: OpenBLAS's workers still spin"


IMPORT_PROBE = textwrap.dedent("""
    import ctypes, json, threading
    opened = []
    real_cdll = ctypes.CDLL
    ctypes.CDLL = lambda *a, **k: opened.append(a[0]) or real_cdll(*a, **k)
    threads = threading.active_count()
    import minigrad_lm as mg
    from minigrad_lm.models import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=50, context_length=64, n_layer=1, d_model=128))
    ids = mg.tensor([[1] * 64] * 16).numpy()
    after_import = [list(opened), threading.active_count() - threads]
    model.loss(ids, ids).backward()
    print(json.dumps({"import": after_import,
                      "train": [opened, threading.active_count() - threads]}))
""")


def run_import_probe(**env_vars) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), **env_vars}
    for name in ("MINIGRAD_CPU_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                 "MINIGRAD_MALLOC_TUNING", *threads.LOCAL_RANKS_VARIABLES):
        if name not in env_vars:
            env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_importing_and_building_change_nothing_process_wide():
    """Importing and building a model open no C library (the allocator and OpenBLAS tuning,
    Numba's LLVM) and start no thread."""
    assert run_import_probe()["import"] == [[], 0]


def test_the_first_backward_tunes_the_allocator_and_starts_the_threads():
    """The fast path is the default: the first backward tunes glibc's allocator
    (backend/tuning.py) and the kernels split their work over every core."""
    opened, started = run_import_probe()["train"]
    assert "libc.so.6" in opened
    if threads._thread_budget() > 1:
        assert started == threads._thread_budget() - 1


def test_the_first_kernel_loads_the_compiled_loops():
    """Numba (a dependency) compiles the CPU kernels' loops: its LLVM is loaded at the first
    kernel call, not at import (above)."""
    opened, _ = run_import_probe()["train"]
    assert any("llvmlite" in path for path in opened)


def test_the_opt_outs_leave_the_process_as_it_was():
    assert run_import_probe(MINIGRAD_MALLOC_TUNING="0", MINIGRAD_CPU_THREADS="1",
                            MINIGRAD_CPU_KERNELS="numpy")["train"] == [[], 0]


TRAIN_PROBE = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    import minigrad_lm as mg
    from minigrad_lm.models import GPT, GPTConfig
    if sys.argv[1:] == ["cli"]:
        mg.backend.tune_for_training()
    mg.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, context_length=64, n_layer=2, d_model=128))
    opt = mg.optim.AdamW(model.parameters(), lr=1e-3)
    ids = np.random.default_rng(0).integers(0, 50, (16, 65))
    for _ in range(3):
        loss = model.loss(ids[:, :-1], ids[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(hashlib.sha256(b"".join(p.numpy().tobytes() for p in model.parameters())).hexdigest())
""")


def test_the_allocator_setting_changes_no_result():
    """The library path (tuned at the first backward), the command-line tools' path (tuned
    first) and the opt-out train to bit-identical weights."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("MINIGRAD_MALLOC_TUNING", None)
    runs = [([], {}), (["cli"], {}), ([], {"MINIGRAD_MALLOC_TUNING": "0"})]
    digests = {subprocess.run([sys.executable, "-c", TRAIN_PROBE, *args], env={**env, **extra},
                              capture_output=True, text=True, check=True).stdout.strip()
               for args, extra in runs}
    assert len(digests) == 1


@pytest.mark.parametrize("env_vars, budget", [
    ({"MINIGRAD_CPU_THREADS": "3", "OMP_NUM_THREADS": "1"}, 3),
    ({"OMP_NUM_THREADS": "2"}, 2),
    ({"OMPI_COMM_WORLD_LOCAL_SIZE": "64"}, 1),
    ({"MPI_LOCALNRANKS": "1"}, None),
])
def test_thread_budget_honours_the_usual_variables(monkeypatch, env_vars, budget):
    """The thread-budget variables, else the cores shared among the MPI ranks of the machine
    (one thread per rank with a rank per core)."""
    for name in ("MINIGRAD_CPU_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                 *threads.LOCAL_RANKS_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    for name, value in env_vars.items():
        monkeypatch.setenv(name, value)
    cores = len(os.sched_getaffinity(0))
    assert threads._thread_budget() == (cores if budget is None else budget)


def adam_steps(optimizer, weight_decay):
    rng = np.random.default_rng(3)
    init, grads = rng.standard_normal(23).astype(np.float32), \
        rng.standard_normal((3, 23)).astype(np.float32)
    p = mg.tensor(init.copy(), requires_grad=True)
    opt = optimizer([p], lr=0.1, weight_decay=weight_decay)
    for g in grads:
        p.grad = mg.tensor(g)
        opt.step()
    assert not np.allclose(p.numpy(), init)
    return p.numpy()


@pytest.mark.parametrize("optimizer", [mg.optim.Adam, mg.optim.AdamW])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_kernel_matches_its_reference(monkeypatch, optimizer, weight_decay):
    """The compiled loop (1, the default) and the NumPy passes give the reference's steps."""
    monkeypatch.setenv("MINIGRAD_CPU_KERNELS", "0")
    reference = adam_steps(optimizer, weight_decay)
    for flag in ("1", "numpy"):
        monkeypatch.setenv("MINIGRAD_CPU_KERNELS", flag)
        np.testing.assert_allclose(adam_steps(optimizer, weight_decay), reference, rtol=1e-6,
                                   atol=1e-7)


@pytest.mark.parametrize("optimizer", [mg.optim.Adam, mg.optim.AdamW])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_in_blocks_on_threads_matches_one_block(monkeypatch, optimizer, weight_decay):
    results, chunks = [], []
    for split in (False, True):
        chunks.append(split_into_blocks(monkeypatch, split))
        results.append(adam_steps(optimizer, weight_decay))
    assert set(chunks[0]) == {1} and set(chunks[1]) == {2}  # one chunk, then really two
    np.testing.assert_array_equal(results[1], results[0])
