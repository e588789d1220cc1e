"""Data-parallel training over MPI (CPU) and NCCL (GPU): one full model replica per process.

    mpiexec -n 4 python -m minigrad_lm.train --distributed ...

Every rank holds the whole model on its own device (the CPU, or GPU ``cuda:<local rank>``) and
computes gradients on its slice of the global batch; the gradients are then summed across ranks
in buckets of a few MB (views of the optimizer's flat gradient buffers, so nothing is copied to
build them), and every replica takes the same step. CPU arrays go through mpi4py's buffer-based
``Allreduce``; GPU arrays through NCCL (CuPy's binding, its unique id sent over MPI), or through
MPI via host memory where NCCL is missing.

No rank may be left waiting forever in a collective call. An error that every rank meets at the
same point (a bad option, a bad checkpoint, a bad file on one machine found while the ranks
compare notes) is a :class:`CollectiveError`: rank 0 reports it once and every rank exits with
status 2. Any other failure on one rank prints its error and aborts the whole job (MPI_Abort).

Without MPI, :data:`LOCAL` stands for a job of one process: every collective is a no-op, so the
training loop has a single code path. From Python, inside an ``mpiexec`` job::

    world = distributed.init()
    device = world.use_device("cuda")   # GPU <local rank> of this machine; or "cpu"
    model = GPT(config).to(device)
    opt = AdamW(model.parameters())
    world.sync_optimizer(opt)           # rank 0's weights on every rank, checked
    ...                                 # forward and backward on this rank's rows
    world.allreduce_(opt.grad_buffers())
    opt.scale_grads_(1.0 / world.size)  # the mean over the global batch
    opt.step()
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import numpy as np

from .. import backend
from ..backend import check_device
from ..cli import USAGE_ERROR

__all__ = [
    "BUCKET_BYTES",
    "LOCAL",
    "CollectiveError",
    "World",
    "init",
    "launch_environment",
]

# One collective call per bucket: large enough that a call's latency is negligible, small enough
# to bound the host copies of the GPU-over-MPI fallback and to stay far below MPI's int counts.
BUCKET_BYTES = 4 << 20

INSTALL_HINT = 'pip install -e ".[dist]" (mpi4py with Open MPI), or mpi4py built for your MPI'
NCCL_HINT = "install NCCL for CuPy (e.g. pip install nvidia-nccl-cu12)"

# Variables a launcher sets in every process it starts: (rank, size) for Open MPI, then for
# MPICH/Intel MPI (Hydra).
_LAUNCH_VARIABLES = (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"))


class CollectiveError(ValueError):
    """An error raised on every rank at the same point, so no rank waits for another: rank 0
    reports it once and every rank exits with status 2."""


def launch_environment() -> tuple[int, int]:
    """(rank, size) that ``mpiexec`` announced to this process; (0, 1) when not launched by it.

    Read from the environment, without starting MPI, to catch a job launched without
    ``--distributed``: its processes would all train alone and write the same run folder.
    """
    for rank_name, size_name in _LAUNCH_VARIABLES:
        if size_name in os.environ:
            try:
                return int(os.environ.get(rank_name, "0")), int(os.environ[size_name])
            except ValueError:
                continue
    return 0, 1


def init() -> World:
    """Join the MPI job that started this process (a job of one without ``mpiexec``)."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as e:  # RuntimeError: mpi4py without an MPI library
        raise ValueError(f"--distributed needs mpi4py and an MPI runtime ({e}); install them: "
                         f"{INSTALL_HINT}") from None
    return World(MPI.COMM_WORLD, MPI)


def _buckets(array) -> Iterator:
    """Contiguous views of at most BUCKET_BYTES of a flat contiguous array."""
    step = max(1, BUCKET_BYTES // array.itemsize)
    for lo in range(0, array.size, step):
        yield array[lo:lo + step]


def _digest(arrays: Sequence) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(np.ascontiguousarray(backend.to_numpy(a)))
    return h.hexdigest()


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def _nccl_missing() -> str | None:
    """Why NCCL cannot be used here, or None when it can."""
    try:
        from cupy.cuda import nccl
    except ImportError as e:
        return str(e)
    if not getattr(nccl, "available", False):
        return "CuPy cannot load the NCCL library"
    try:
        nccl.get_version()
    except Exception as e:  # a library that loads but does not work
        return f"NCCL does not work ({e})"
    return None


class World:
    """This process's place in the job: rank, size, device and the communicators.

    ``World()`` is a job of one process without MPI; :func:`init` joins the real one.
    """

    def __init__(self, comm: Any = None, mpi: Any = None):
        self.comm, self._mpi = comm, mpi
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.local_rank, self.local_size = 0, 1
        if comm is not None:
            local = comm.Split_type(mpi.COMM_TYPE_SHARED, key=self.rank)
            self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
            local.Free()
        self.device = "cpu"
        self.transport = "MPI" if comm is not None else "none"
        self._nccl = None

    @property
    def distributed(self) -> bool:
        """Whether this process is part of an MPI job (even a job of one)."""
        return self.comm is not None

    @property
    def is_root(self) -> bool:
        """Rank 0, which alone logs, shows progress and writes checkpoints."""
        return self.rank == 0

    # ---- failures ------------------------------------------------------------------------
    def run(self, work: Callable[[], int]) -> int:
        """This rank's part of the job; returns its exit status, or ends every rank on failure.

        The ranks leave together: mpiexec ends the whole job as soon as one rank exits with an
        error status, which would cut rank 0's last message or checkpoint short.
        """
        try:
            status = work()
        except CollectiveError as e:
            if self.is_root:
                print(f"error: {e}", file=sys.stderr, flush=True)
            status = USAGE_ERROR
        except (ValueError, OSError) as e:
            self.abort(f"error: rank {self.rank}: {e}", USAGE_ERROR)
        except KeyboardInterrupt:
            self.abort(f"rank {self.rank}: interrupted", 130)
        except BaseException:
            self.abort(f"rank {self.rank} failed:\n{traceback.format_exc()}", 1)
        sys.stdout.flush()
        if self.comm is not None:
            self.comm.Barrier()
        return status

    def abort(self, message: str, code: int) -> NoReturn:
        """Print ``message`` and end every rank of the job with status ``code``."""
        print(message, file=sys.stderr, flush=True)
        sys.stdout.flush()
        if self.comm is not None:
            self.comm.Abort(code)
        raise SystemExit(code)

    def from_root(self, work: Callable[[], Any]) -> Any:
        """Rank 0's result of ``work`` on every rank; a user error there is raised everywhere.

        For what only rank 0 may read, e.g. the checkpoint to resume, whose folder other
        machines may not see.
        """
        if self.comm is None:
            return work()
        result = error = None
        if self.is_root:
            try:
                result = work()
            except (ValueError, OSError) as e:
                error = str(e)
        result, error = self.comm.bcast((result, error), root=0)
        if error is not None:
            raise CollectiveError(error)
        return result

    def agree(self, work: Callable[[], Any]) -> Any:
        """Run ``work`` (which must not communicate) on every rank; a user error on any rank
        is raised on all of them, naming the ranks when not all failed alike."""
        if self.comm is None:
            return work()
        result = error = None
        try:
            result = work()
        except (ValueError, OSError) as e:
            error = str(e)
        errors = self.comm.allgather(error)
        failed = {r: e for r, e in enumerate(errors) if e is not None}
        if not failed:
            return result
        if len(failed) == self.size and len(set(failed.values())) == 1:
            raise CollectiveError(errors[0])
        raise CollectiveError("; ".join(f"rank {r}: {e}" for r, e in failed.items()))

    def check_same(self, value: Any, what: str, hint: str) -> None:
        """Refuse to go on when some rank's ``value`` differs from rank 0's."""
        if self.comm is None:
            return
        values = self.comm.allgather(value)
        differ = [r for r, v in enumerate(values) if v != values[0]]
        if differ:
            raise CollectiveError(f"{_ranks(differ)} {what} than rank 0; {hint}")

    # ---- small values --------------------------------------------------------------------
    def bcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        return value if self.comm is None else self.comm.bcast(value, root=0)

    def gather(self, value: Any) -> list | None:
        """Every rank's ``value`` in rank order on rank 0; None elsewhere."""
        return [value] if self.comm is None else self.comm.gather(value, root=0)

    def sum(self, value: float) -> float:
        return value if self.comm is None else self.comm.allreduce(value, op=self._mpi.SUM)

    def max(self, value: float) -> float:
        return value if self.comm is None else self.comm.allreduce(value, op=self._mpi.MAX)

    # ---- devices -------------------------------------------------------------------------
    def use_device(self, name: str) -> str:
        """This rank's device: the CPU, or for ``cuda`` GPU <local rank> of its machine, with
        a NCCL communicator when every rank can have one."""
        if self.comm is None:
            self.device = check_device(name)
            return self.device
        self.device = self.agree(lambda: self._pick_device(name))
        if self.device == "cpu":
            return self.device
        cp = backend.cupy()
        cp.cuda.Device(backend.device_index(self.device)).use()  # no context on other GPUs
        gpus = self.comm.allgather((socket.gethostname(), cp.cuda.Device().pci_bus_id))
        shared = [r for r, gpu in enumerate(gpus) if gpus.index(gpu) != r]
        if shared:
            raise CollectiveError(
                f"{_ranks(shared)} share a GPU with a lower rank: start at most as many ranks "
                f"per machine as it has GPUs"
            )
        self._start_nccl()
        return self.device

    def _pick_device(self, name: str) -> str:
        device = backend.normalize_device(name)
        if device == "cpu":
            return device
        if name.strip().lower() != "cuda":
            raise ValueError(f"--device {name}: with --distributed give --device cuda; each "
                             "rank then uses GPU <local rank> of its machine")
        check_device("cuda")
        return f"cuda:{self.local_rank % backend.cupy().cuda.runtime.getDeviceCount()}"

    def _start_nccl(self) -> None:
        reasons = self.comm.allgather(_nccl_missing())
        missing = {r: why for r, why in enumerate(reasons) if why is not None}
        if missing:
            if self.is_root:
                why = next(iter(missing.values()))
                print(f"warning: NCCL is not available on {_ranks(list(missing))} ({why}); "
                      "GPU gradients go through MPI via host memory, which is much slower: "
                      f"{NCCL_HINT}", file=sys.stderr, flush=True)
            self.transport = "MPI via host memory"
            return
        from cupy.cuda import nccl

        uid = self.comm.bcast(nccl.get_unique_id() if self.is_root else None, root=0)
        self._nccl = nccl.NcclCommunicator(self.size, uid, self.rank)
        version = nccl.get_version()  # major * 10000 + minor * 100 + patch
        self.transport = f"NCCL {version // 10000}.{version // 100 % 100}.{version % 100}"

    def _synchronize(self) -> None:
        if self.device != "cpu":
            backend.cupy().cuda.get_current_stream().synchronize()

    # ---- arrays --------------------------------------------------------------------------
    def allreduce_(self, arrays: Sequence) -> float:
        """Sum each flat contiguous array across ranks in place, bucket by bucket; returns
        the seconds it took (the device synchronized on both sides, so it is all comms)."""
        if self.comm is None:
            return 0.0
        self._synchronize()
        start = time.perf_counter()
        for array in arrays:
            for bucket in _buckets(array):
                self._collective(bucket, reduce=True)
        self._synchronize()
        return time.perf_counter() - start

    def broadcast_(self, arrays: Sequence) -> None:
        """Overwrite each flat contiguous array with rank 0's, in place."""
        if self.comm is None:
            return
        for array in arrays:
            for bucket in _buckets(array):
                self._collective(bucket, reduce=False)
        self._synchronize()

    def _collective(self, bucket, reduce: bool) -> None:
        mpi = self._mpi
        if isinstance(bucket, np.ndarray):
            if reduce:
                self.comm.Allreduce(mpi.IN_PLACE, bucket, op=mpi.SUM)
            else:
                self.comm.Bcast(bucket, root=0)
        elif self._nccl is not None:
            from cupy.cuda import nccl

            kind = getattr(nccl, f"NCCL_{bucket.dtype.name.upper()}")
            stream = backend.cupy().cuda.get_current_stream().ptr
            ptr = bucket.data.ptr
            if reduce:
                self._nccl.allReduce(ptr, ptr, bucket.size, kind, nccl.NCCL_SUM, stream)
            else:
                self._nccl.bcast(ptr, bucket.size, kind, 0, stream)
        else:  # a GPU array without NCCL: MPI on a host copy works with any MPI
            host = bucket.get()
            self._collective(host, reduce)
            bucket.set(host)

    def differing_ranks(self, arrays: Sequence) -> list[int]:
        """The ranks whose ``arrays`` are not bit-identical to rank 0's (same on every rank)."""
        if self.comm is None:
            return []
        digests = self.comm.allgather(_digest(arrays))
        return [r for r, d in enumerate(digests) if d != digests[0]]

    def sync_optimizer(self, optimizer: Any) -> None:
        """Give every rank rank 0's parameters, optimizer state and step, then check them.

        ``optimizer`` is one of :mod:`minigrad_lm.optim`'s: its flat buffers are broadcast
        whole.
        """
        if self.comm is None:
            return
        self.check_same(optimizer.layout(), "built a different model",
                        "every rank must see the same data and tokenizer")
        optimizer.load_counts(self.comm.bcast(optimizer.counts(), root=0))
        arrays = optimizer.buffers()
        self.broadcast_(arrays)
        differ = self.differing_ranks(arrays)
        if differ:
            raise CollectiveError(f"{_ranks(differ)} do not hold rank 0's weights after the "
                                  "broadcast: the MPI library corrupts data")


LOCAL = World()
