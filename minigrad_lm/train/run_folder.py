"""A run folder (``--out``) while a run trains into it: one writer at a time
(:class:`RunLock`), a fresh start that never replaces a run unasked, the metrics log
truncated to a resumed step.
"""
from __future__ import annotations

import contextlib
import os
import shutil

try:
    import fcntl
except ModuleNotFoundError:  # Windows: no advisory locks; one writer is then up to the user
    fcntl = None

from ..checkpoints.folder import BEST, LATEST, run_has_checkpoint
from ..checkpoints.metrics import METRICS, read_metrics
from ..io.files import atomic_write_json, atomic_write_text, json_text
from ..io.untrusted import InputError
from .config import TrainConfig

__all__ = ["RUN_FILES", "RunLock", "has_run_files", "prepare_run_dir", "refuse_existing_run",
           "truncate_metrics"]

LOCK = "train.lock"
RUN_FILES = (METRICS, "train_config.json")


def has_run_files(out: str) -> bool:
    return any(os.path.lexists(os.path.join(out, f)) for f in RUN_FILES)


def refuse_existing_run(out: str) -> None:
    """A run with a checkpoint is never replaced unasked; one that stopped before its first
    checkpoint (a diverged loss, a crash) has nothing to resume, so a new run may start."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out}: exists and is not a folder")
    if run_has_checkpoint(out):
        raise ValueError(
            f"--out {out} already holds a training run; pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )


def clear_run(out: str) -> None:
    """Delete what a previous run wrote in ``out`` (and nothing else)."""
    for name in (LATEST, BEST):
        for suffix in ("", ".old", ".tmp"):
            path = os.path.join(out, name + suffix)
            if os.path.isdir(path):
                shutil.rmtree(path)
    for name in RUN_FILES:
        if os.path.exists(os.path.join(out, name)):
            os.unlink(os.path.join(out, name))


def prepare_run_dir(cfg: TrainConfig, resume_step: int | None, overwrite: bool,
                     lock: RunLock) -> None:
    """Called once everything is validated, so a refused run never changes ``--out``."""
    os.makedirs(cfg.out, exist_ok=True)
    lock.acquire()  # held since the start when --out existed; else another run may have begun
    if resume_step is None and not overwrite:
        refuse_existing_run(cfg.out)
        if has_run_files(cfg.out):
            print(f"note: {cfg.out} holds a run that stopped before its first checkpoint; "
                  "starting it again")
    if overwrite:
        clear_run(cfg.out)
    metrics = os.path.join(cfg.out, METRICS)
    if resume_step is not None and os.path.exists(metrics):
        truncate_metrics(cfg.out, resume_step)
    else:
        atomic_write_text(metrics, "")
    atomic_write_json(os.path.join(cfg.out, "train_config.json"), cfg.to_dict())


class RunLock:
    """An exclusive lock on a run folder (``train.lock``, holding the owner's pid) while one
    process trains into it; a second writer is refused, naming the holder.

    It is an ``flock``: the kernel drops it when its process ends, however it ends, so a lock
    file a crash left behind is stale and simply taken over.
    """

    def __init__(self, run_dir: str) -> None:
        self.run_dir, self.path, self.fd = run_dir, os.path.join(run_dir, LOCK), None

    def acquire(self) -> None:
        if fcntl is None or self.fd is not None:
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                             0o666)
            except OSError as e:
                raise InputError(f"--out {self.run_dir}: cannot create {LOCK} ({e.strerror})"
                                 ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise InputError(
                    f"--out {self.run_dir}: another training (pid {holder}) is writing this "
                    "run folder; wait for it to end or choose another --out") from None
            except OSError:  # a filesystem without locks (some network mounts): go without
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
                return
            # The holder may have removed the file between our open and flock: lock anew.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


def truncate_metrics(run_dir: str, step: int) -> None:
    """Drop the records after ``step``: a resumed run logs those steps again."""
    kept = [r for r in read_metrics(run_dir) if r["step"] <= step]
    atomic_write_text(
        os.path.join(run_dir, METRICS), "".join(json_text(r, indent=None) + "\n" for r in kept)
    )
