"""The CPU's ways of splitting work give the unsplit results: chunks on several threads and
cache-sized blocks (kernels/cpu.py), causal attention by blocks of queries; and OpenBLAS's idle
workers stop spinning once chunking is set up."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minigrad_lm as mg
from minigrad_lm.backend.kernels import cpu
from minigrad_lm.nn import functional as F
from tests.cli_support import REPO


@pytest.mark.parametrize("causal", [True, False])
def test_attention_split_over_cpu_threads_matches_one_chunk(monkeypatch, causal):
    """The CPU path that runs batch chunks on several threads gives the one-chunk results."""
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((5, 7, 24)).astype(np.float32)
    pad = np.arange(7)[None, :] < rng.integers(1, 8, 5)[:, None]
    results = []
    for threads, min_elements in ((1, cpu.MIN_CHUNK_ELEMENTS), (3, 0)):
        monkeypatch.setattr(cpu, "_threads", threads)
        monkeypatch.setattr(cpu, "MIN_CHUNK_ELEMENTS", min_elements)
        t = mg.tensor(qkv, requires_grad=True)
        y = F.multi_head_attention(t, 2, causal, pad)
        y.backward(mg.tensor(np.ones(y.shape, np.float32)))
        results.append((y.numpy(), t.grad.numpy()))
    if cpu._ready():
        assert len(cpu.batch_chunks(5, 1)) == 3  # the split path really ran
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-5, atol=1e-6)


def split_into_blocks(monkeypatch, split: bool) -> None:
    """Chunks on 2 threads and blocks of 4 elements, or one chunk in one block."""
    monkeypatch.setattr(cpu, "_threads", 2 if split else 1)
    monkeypatch.setattr(cpu, "MIN_CHUNK_ELEMENTS", 0 if split else cpu.MIN_CHUNK_ELEMENTS)
    monkeypatch.setattr(cpu, "BLOCK_ELEMENTS", 4 if split else 1 << 30)


def test_map_blocks_covers_every_element_once(monkeypatch):
    split_into_blocks(monkeypatch, True)
    hits = np.zeros(19, int)

    def visit(block):
        assert block.stop - block.start <= 4
        hits[block] += 1
    cpu.map_blocks(visit, hits.size)
    assert (hits == 1).all()


@pytest.mark.parametrize("threads", [1, 2])
def test_causal_attention_by_query_blocks_matches_one_block(monkeypatch, threads):
    rng = np.random.default_rng(4)
    qkv, up = rng.standard_normal((3, 7, 12)), rng.standard_normal((3, 7, 4))
    monkeypatch.setattr(cpu, "_threads", threads)
    monkeypatch.setattr(cpu, "MIN_CHUNK_ELEMENTS", 0)
    results = []
    for rows in (1 << 20, 2):  # one block; blocks of queries 0-1, 2-3, 4-6
        monkeypatch.setattr(F, "QUERY_BLOCK_ROWS", rows)
        t = mg.tensor(qkv, requires_grad=True)
        y = F.multi_head_attention(t, 2, causal=True)
        y.backward(mg.tensor(up))
        results.append((y.numpy(), t.grad.numpy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_split_over_cpu_threads_matches_one_chunk(monkeypatch, axis):
    rng = np.random.default_rng(5)
    x, up = rng.standard_normal((2, 5, 6)), rng.standard_normal((2, 5, 6))
    results = []
    for split in (False, True):
        split_into_blocks(monkeypatch, split)
        t = mg.tensor(x, requires_grad=True)
        y = mg.softmax(t, axis)
        y.backward(mg.tensor(up))
        results.append((y.numpy(), t.grad.numpy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(results[0][0].sum(axis), 1.0)


def test_gelu_split_over_cpu_threads_matches_one_chunk(monkeypatch):
    x = np.random.default_rng(1).standard_normal((3, 7)).astype(np.float32)
    results = []
    for split in (False, True):
        split_into_blocks(monkeypatch, split)
        t = mg.tensor(x, requires_grad=True)
        y = F.gelu(t, "tanh")
        y.backward(mg.tensor(x))
        results.append((y.numpy(), t.grad.numpy()))
    np.testing.assert_array_equal(results[1][0], results[0][0])
    np.testing.assert_array_equal(results[1][1], results[0][1])


SPIN_PROBE = textwrap.dedent("""
    import time
    import numpy as np
    from minigrad_lm.backend.kernels import cpu

    a = np.ones((512, 512), np.float32)

    def cpu_seconds_while_idle():
        a @ a  # wakes OpenBLAS's workers
        t0 = time.process_time()
        time.sleep(0.1)
        return time.process_time() - t0

    cpu.use_all_cores()
    lib, _, threads = cpu._openblas_thread_control()
    if lib is None or threads < 2 or not cpu._ready():
        print("no threaded OpenBLAS")
    else:
        _, _, threads_after = cpu._openblas_thread_control()
        assert threads_after == threads, (threads, threads_after)
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
    import ctypes, threading
    opened = []
    real_cdll = ctypes.CDLL
    ctypes.CDLL = lambda *a, **k: opened.append(a[0]) or real_cdll(*a, **k)
    threads = threading.active_count()
    import minigrad_lm as mg
    from minigrad_lm.models import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=50, context_length=64, n_layer=1, d_model=64))
    ids = mg.tensor([[1] * 64] * 8).numpy()
    model.loss(ids, ids).backward()
    print(opened, threading.active_count() - threads)
""")


def test_importing_and_training_change_nothing_process_wide():
    """No C library is opened (the allocator and OpenBLAS tuning) and no thread is started
    until backend.tune_for_training() is called."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[] 0"


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_split_over_cpu_threads_matches_one_chunk(monkeypatch, affine):
    rng = np.random.default_rng(2)
    x, w, b, up = (rng.standard_normal(s).astype(np.float32) for s in ((5, 3, 8), 8, 8, (5, 3, 8)))
    results = []
    for threads, min_elements in ((1, cpu.MIN_CHUNK_ELEMENTS), (2, 0)):
        monkeypatch.setattr(cpu, "_threads", threads)
        monkeypatch.setattr(cpu, "MIN_CHUNK_ELEMENTS", min_elements)
        ts = [mg.tensor(a, requires_grad=True) for a in (x, w, b)]
        y = F.layer_norm(ts[0], 8, *(ts[1:] if affine else (None, None)))
        y.backward(mg.tensor(up))
        results.append([y.numpy()] + [t.grad.numpy() for t in ts if t.grad is not None])
    if cpu._ready():
        assert len(cpu.batch_chunks(15, 8)) == 2  # the split path really ran
    assert len(results[0]) == len(results[1]) == (4 if affine else 2)
    for split, whole in zip(results[1], results[0]):
        np.testing.assert_allclose(split, whole, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("optimizer", [mg.optim.Adam, mg.optim.AdamW])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_in_blocks_on_threads_matches_one_block(monkeypatch, optimizer, weight_decay):
    rng = np.random.default_rng(3)
    init, grads = rng.standard_normal(23).astype(np.float32), \
        rng.standard_normal((3, 23)).astype(np.float32)
    results = []
    for split in (False, True):
        split_into_blocks(monkeypatch, split)
        p = mg.tensor(init.copy(), requires_grad=True)
        opt = optimizer([p], lr=0.1, weight_decay=weight_decay)
        for g in grads:
            p.grad = mg.tensor(g)
            opt.step()
        results.append(p.numpy())
    assert not np.allclose(results[0], init)
    np.testing.assert_array_equal(results[1], results[0])
