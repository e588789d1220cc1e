"""Running independent chunks of a CPU kernel on all cores (the kernels are in kernels/cpu.py).

NumPy's ufuncs use one core, and OpenBLAS's threads gain little on many small matrices (the
(T, T) attention products of each head). Independent work (attention over each half of the
batch, rows of a LayerNorm, blocks of an elementwise kernel) is split into chunks that Python
threads run concurrently (NumPy releases the GIL in ufuncs and BLAS calls), with OpenBLAS set to
one thread meanwhile. Without a recognised OpenBLAS or with one core, chunks run one after
another. The number of threads is MINIGRAD_CPU_THREADS, else OPENBLAS_NUM_THREADS or
OMP_NUM_THREADS (the usual thread budget), else the cores divided among the MPI ranks that
share this machine (one thread per rank when there are as many ranks as cores); 1 turns this
off. Nothing starts at import: the budget is read, and the threads start, when the first kernel
has work to split.

OpenBLAS's idle workers busy-wait about 2^28 cycles (~0.1 s) after each threaded call before
they sleep, so after every GEMM one core would be taken by a spinning worker and our chunks
would share one core. When chunking is first set up, OpenBLAS's threads are restarted with a
short spin (OPENBLAS_THREAD_TIMEOUT, 2^4 cycles unless the user set it). The measurements behind
these choices and the sizes below are in benchmarks/results/cpu_tuning.json.
"""
from __future__ import annotations

import ctypes
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

from . import tuning

T = TypeVar("T")

# Below this many elements per chunk, a thread hand-off costs more than it saves (tuned on the
# train steps).
MIN_CHUNK_ELEMENTS = 1 << 16


# Set by MPI launchers in each rank: how many ranks run on this machine (Open MPI, MPICH/Hydra
# and Intel MPI, Slurm's srun).
LOCAL_RANKS_VARIABLES = ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE")


def _thread_budget() -> int:
    for name in ("MINIGRAD_CPU_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ranks = next((int(v) for v in map(os.environ.get, LOCAL_RANKS_VARIABLES)
                  if v and v.isdigit() and int(v) > 0), 1)
    return max(1, (cores or 1) // ranks)


# Kernels that make several passes over their data run over blocks this size (1 MiB of
# float32), so that every pass after the first finds the block in cache instead of memory.
BLOCK_ELEMENTS = 1 << 18

# log2 of the cycles an idle OpenBLAS worker spins before it sleeps (OpenBLAS's minimum).
SHORT_SPIN = "4"

_threads: int | None = None  # the budget, read when a kernel first asks for chunks
_pool: ThreadPoolExecutor | None = None
_set_blas_threads: Callable[[int], object] | None = None
_blas_threads = 1


def _openblas_thread_control() -> tuple[ctypes.CDLL | None, Callable[[int], object] | None, int]:
    """The OpenBLAS library NumPy loaded, its openblas_set_num_threads and its thread count."""
    try:
        with open("/proc/self/maps") as f:
            libs = sorted(set(re.findall(r"/\S*openblas\S*\.so\S*", f.read())))
    except OSError:
        return None, None, 1
    for path in libs:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    return lib, setter, getter()
    return None, None, 1


def _shorten_openblas_spin(lib: ctypes.CDLL) -> None:
    """Restart OpenBLAS's worker threads with a short busy-wait (see the module docstring).

    The timeout is read from the environment only when the workers start, so it is set, re-read
    (openblas_read_env) and the workers restarted the way OpenBLAS's own fork handler does it.
    Called before any chunk runs, from the thread that calls BLAS.
    """
    calls = [getattr(lib, name, None)
             for name in ("openblas_read_env", "blas_thread_shutdown_", "blas_thread_init")]
    if None in calls:
        return
    read_env, shutdown, init = calls
    user_value = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = user_value or SHORT_SPIN
    try:
        read_env()
        shutdown()
        init()
    finally:
        if user_value is None:
            del os.environ["OPENBLAS_THREAD_TIMEOUT"]


def thread_count() -> int:
    """How many threads the kernels split their work over (the budget, read once)."""
    global _threads
    if _threads is None:
        _threads = _thread_budget()
    return _threads


def _ready() -> bool:
    """Start the pool (and shorten OpenBLAS's spin) on first use; False where chunks cannot
    run concurrently."""
    global _pool, _set_blas_threads, _blas_threads
    if thread_count() < 2:
        return False
    if _pool is None:
        tuning.engine_started()
        lib, _set_blas_threads, _blas_threads = _openblas_thread_control()
        if lib is not None:
            _shorten_openblas_spin(lib)
            _set_blas_threads(_blas_threads)
        _pool = ThreadPoolExecutor(_threads - 1, thread_name_prefix="minigrad-cpu")
    return _set_blas_threads is not None


def batch_chunks(n: int, elements_per_item: int) -> list[slice]:
    """Split n batch items into one chunk per thread, or one chunk when that does not pay."""
    parts = min(thread_count(), n)
    if parts < 2 or n * elements_per_item < parts * MIN_CHUNK_ELEMENTS or not _ready():
        return [slice(0, n)]
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(parts)]


def map_chunks(fn: Callable[[slice], T], chunks: Sequence[slice]) -> list[T]:
    """fn over the chunks, concurrently when there are several (OpenBLAS at one thread)."""
    if len(chunks) < 2:
        return [fn(c) for c in chunks]
    _set_blas_threads(1)
    try:
        futures = [_pool.submit(fn, c) for c in chunks[1:]]
        first = fn(chunks[0])
        return [first] + [f.result() for f in futures]
    finally:
        _set_blas_threads(_blas_threads)


def map_blocks(fn: Callable[[slice], object], n: int) -> None:
    """fn over consecutive slices of range(n) of at most BLOCK_ELEMENTS elements each, the
    slices shared between threads as in map_chunks (for elementwise kernels of several passes)."""
    def run(chunk: slice) -> None:
        for start in range(chunk.start, chunk.stop, BLOCK_ELEMENTS):
            fn(slice(start, min(start + BLOCK_ELEMENTS, chunk.stop)))
    map_chunks(run, batch_chunks(n, 1))
