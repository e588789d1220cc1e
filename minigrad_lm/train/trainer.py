"""Train a GPT language model (causal, or masked with --attention bidirectional), fine-tune a
sentence classifier on a GPT body, or train an encoder-decoder translation model.

    python -m minigrad_lm.train                      # char-level GPT on stdlib docstrings
    python -m minigrad_lm.train --data input.txt --out runs/mine
    python -m minigrad_lm.train --out runs/mine --resume --max-steps 3000
    python -m minigrad_lm.train --task classify --data train.tsv --val-data dev.tsv \\
        --init-from runs/default --out runs/sst2
    python -m minigrad_lm.train --task translate --data train.de train.en \\
        --val-data val.de val.en --out runs/de-en
    mpiexec -n 2 python -m minigrad_lm.train --distributed --out runs/dp   # data-parallel

The run folder (--out) gets crash-safe checkpoints in latest/ and best/ (by val loss), a
metrics.jsonl record per step and train_config.json. SIGINT or SIGTERM finishes the current
step, saves latest/ and exits with status 130 or 143. On the NumPy backend --resume continues
bit-identically: the weights, optimizer, step and every random state are in the checkpoint, and
the learning rate depends on the step alone (never on --max-steps), so --max-steps 20 followed
by --resume --max-steps 40 ends exactly where one 40-step run does.

With --distributed (see :mod:`minigrad_lm.train.distributed`) each step's global batch of
batch-size x grad-accum-steps x ranks sequences is drawn from the one seeded stream exactly as a
single process would draw it, and each rank trains on its own rows: N ranks follow the same
trajectory as one process with N times the batch (up to float rounding; dropout masks aside).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import numpy as np
from tqdm import tqdm

from .. import backend
from ..backend.devices import memory_text
from ..checkpoints.folder import BEST, LATEST, Checkpoint, checkpoint_files
from ..checkpoints.folder import save_checkpoint as write_checkpoints
from ..checkpoints.metrics import METRICS
from ..cli import USAGE_ERROR, report_errors
from ..engine import amp, rng
from ..io.files import json_text
from ..models.adapters import adapter_files
from ..optim.optimizers import clip_grad_norm_
from ..optim.schedules import LRScheduler
from . import distributed
from .config import build_parser
from .distributed import CollectiveError, World
from .run_folder import RunLock, prepare_run_dir
from .settings import fine_tuning_text, lora_spec, plan, world_note
from .start import Start, start
from .tasks import make_task

__all__ = ["Trainer", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("python -m minigrad_lm.train", __doc__.split("\n")[0])
    args = parser.parse_args(argv)
    if args.distributed:
        try:
            world = distributed.init()
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return USAGE_ERROR
        return world.run(lambda: _train(args, world))
    _, size = distributed.launch_environment()
    if size > 1:
        return _refuse_launch_without_distributed(size)
    return report_errors(lambda: _train(args, distributed.LOCAL))


def _refuse_launch_without_distributed(size: int) -> int:
    message = (f"started as {size} MPI processes without --distributed: each would train alone "
               "and write the same --out; pass --distributed")
    try:
        world = distributed.init()
    except ValueError:  # no MPI to let rank 0 speak for all: every rank says it
        print(f"error: {message}", file=sys.stderr)
        return USAGE_ERROR

    def refuse() -> int:
        raise CollectiveError(message)

    return world.run(refuse)


# --------------------------------------------------------------------------------------------
# MFU and signals
# --------------------------------------------------------------------------------------------


class _StopRequest:
    """Signal handler: the first SIGINT/SIGTERM asks the loop to stop after the current step;
    a second one aborts at once (an in-progress save still never corrupts a checkpoint)."""

    def __init__(self, announce: bool = True) -> None:
        self.signum: int | None = None
        self.announce = announce  # mpiexec signals every rank: one of them says so

    def __call__(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        if self.announce:
            print(
                f"\n{signal.Signals(signum).name}: stopping after this step (again to abort)",
                file=sys.stderr,
            )


@contextmanager
def _stop_on_signals(stop: _StopRequest):
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread can install handlers; embedders keep their own
        return
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def _say(line: str) -> None:
    """Print a log line above the progress bar, not through it."""
    tqdm.write(line, file=sys.stdout)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Trainer:
    """The training loop with evaluation, checkpoints, logs, progress bar and signals.

    Every rank runs it in lockstep; rank 0 alone evaluates, logs and writes checkpoints.
    """

    def __init__(self, start: Start):
        self.cfg, self.length, self.task, self.model = (start.cfg, start.length, start.task,
                                                        start.model)
        self.model_config, self.optimizer, self.batch_rng = (start.model_config, start.optimizer,
                                                             start.batch_rng)
        self.device, self.world, self.peak = start.device, start.world, start.peak
        cfg, world = self.cfg, self.world
        self.lr_schedule = LRScheduler(self.optimizer, cfg.warmup_steps,
                                       self.length.decay_steps, cfg.min_lr)
        self.step = start.step
        self.best_score, self.best_step = start.best_score, start.best_step
        self.saved_step = start.step  # a resumed run's latest/ is at its first step
        self.params = self.model.parameters()
        # The global batch is cut into equal micro-batches (grad-accum-steps per rank), so its
        # mean loss and gradient are the means of theirs.
        self.micro_batches = cfg.grad_accum_steps * world.size
        self.global_batch = cfg.batch_size * self.micro_batches
        per_rank = cfg.batch_size * cfg.grad_accum_steps
        self.rows = slice(world.rank * per_rank, (world.rank + 1) * per_rank)
        self.recent: list[dict] = []  # train records since the last log line
        self.scaler = start.scaler
        self.half = self.scaler.enabled
        self.started = time.perf_counter()

    # ---- one step ------------------------------------------------------------------------
    def _train_step(self) -> dict:
        cfg, world = self.cfg, self.world
        self.lr_schedule.step()  # the optimizer's step count may have come from a checkpoint
        lr = self.lr_schedule.get_last_lr()[0]
        start = time.perf_counter()
        self.optimizer.zero_grad()
        # Every rank draws the whole global batch, so the sampler's state never depends on the
        # number of ranks, then keeps its own rows.
        picks = self.task.draw(self.batch_rng, self.global_batch, self.step)[self.rows]
        loss_sum, tokens = 0.0, 0
        for k in range(cfg.grad_accum_steps):
            batch = self.task.batch_at(picks[k * cfg.batch_size:(k + 1) * cfg.batch_size])
            tokens += self.task.tokens(batch)
            with amp.autocast(enabled=self.half):
                loss = self.task.loss(self.model, batch)
            # float16 overflows are expected: the scaler skips their steps
            with np.errstate(over="ignore", invalid="ignore") if self.half else nullcontext():
                self.scaler.scale(loss).backward()  # into the optimizer's flat gradient buffers
            loss_sum += loss.item()  # read after backward: on a GPU the whole step is queued
        value = world.sum(loss_sum) / self.micro_batches
        if not math.isfinite(value):
            raise CollectiveError(
                f"the loss became {value} at step {self.step + 1}; lower --lr or raise "
                f"--warmup-steps (checkpoints so far are kept)"
            )
        comm_seconds = world.allreduce_(self.optimizer.grad_buffers())
        if self.micro_batches > 1:
            self.optimizer.scale_grads_(1.0 / self.micro_batches)
        self.scaler.unscale_(self.optimizer)
        norm = float(clip_grad_norm_(self.params, cfg.grad_clip or math.inf))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        seconds = time.perf_counter() - start
        self.step += 1
        tokens *= world.size  # the other ranks' batches are as large (or nearly: classify)
        tokens_per_s = tokens / seconds
        record = {
            "kind": "train",
            "step": self.step,
            "loss": value,
            "lr": lr,
            "grad_norm": norm,
            "step_seconds": seconds,
            "tokens": tokens,
            "tokens_per_s": tokens_per_s,
            "mfu": self._mfu(tokens_per_s),
            "time": time.perf_counter() - self.started,
        }
        if world.distributed:
            record["comm_seconds"] = comm_seconds
        if self.half:
            record["loss_scale"], record["skipped_steps"] = (self.scaler.get_scale(),
                                                             self.scaler.skipped)
        return record

    def _mfu(self, tokens_per_s: float) -> float:
        """The utilisation of each rank's device (rank 0 measures; the others report none)."""
        if self.peak is None:
            return math.nan
        flops = tokens_per_s * self.task.flops_per_token(self.model_config)
        return self.peak.utilisation(flops / self.world.size)

    # ---- evaluation and checkpoints --------------------------------------------------------
    def _state(self, rank_rngs: list[dict]) -> dict:
        state = {
            "step": self.step,
            "rng": rng.get_state(),
            "batch_rng": self.batch_rng.bit_generator.state,
            "best_metric": self.task.best_metric,
            "best_score": self.best_score,
            "best_step": self.best_step,
            "train_config": self.cfg.to_dict(),
            "world_size": self.world.size,
        }
        if self.half:
            state["grad_scaler"] = self.scaler.state_dict()
        if self.world.size > 1:
            state["rank_rngs"] = rank_rngs
        return state

    def _save(self, best: bool) -> None:
        """Every rank takes part (its dropout stream is saved too); rank 0 writes."""
        rank_rngs = self.world.gather(rng.get_state())
        self._resync_drifted_replicas()
        if self.world.is_root:
            spec = lora_spec(self.cfg)
            files = checkpoint_files(
                self.model,
                task=self.task.name,
                model_config=self.model_config,
                tokenizer_dict=self.task.tokenizer_dict,
                optimizer=self.optimizer,
                state=self._state(rank_rngs),
                extras=self.task.checkpoint_extras(),
                extra_files=None if spec is None else adapter_files(self.model, spec,
                                                                    self.cfg.init_from),
            )
            write_checkpoints(self.cfg.out, files, best)
        self.saved_step = self.step

    def _resync_drifted_replicas(self) -> None:
        """Replicas stay bit-identical on identical machines; on mixed hardware, arithmetic
        may differ in the last bit, so each checkpoint brings rank 0's weights to all."""
        differ = self.world.differing_ranks(self.optimizer.param_buffers())
        if differ:
            if self.world.is_root:
                ranks = ", ".join(map(str, differ))
                _say(f"warning: at step {self.step} the weights of ranks {ranks} differed "
                     "from rank 0's (machines that round differently?); rank 0's were copied "
                     "to all")
            self.world.sync_optimizer(self.optimizer)

    def _evaluate_and_save(self, log) -> str | None:
        metrics = self.task.evaluate(self.model, self.world)
        if not self.world.is_root:
            self._save(best=False)
            return None
        self.peak.remeasure()
        improved = self.task.improves(metrics, self.best_score)
        if improved:
            self.best_score, self.best_step = metrics[self.task.best_metric], self.step
        self._save(best=improved)
        peak = backend.peak_memory_bytes(self.device)
        log.write(json_text({"kind": "eval", "step": self.step, **metrics,
                             "peak_memory_bytes": peak}, indent=None) + "\n")
        log.flush()
        return (self.task.eval_line(self.step, metrics) + f" | peak mem {memory_text(peak)}"
                + (" | best, saved" if improved else ""))

    # ---- the loop -------------------------------------------------------------------------
    def _log_line(self, record: dict) -> str:
        """Loss and speed averaged over the steps since the previous log line."""
        loss = float(np.mean([r["loss"] for r in self.recent]))
        seconds = sum(r["step_seconds"] for r in self.recent)
        tokens_per_s = sum(r["tokens"] for r in self.recent) / seconds
        self.recent.clear()
        return (
            f"step {record['step']:>{len(str(self.length.max_steps))}}/{self.length.max_steps} | "
            f"loss {loss:.4f} | lr {record['lr']:.2e} | {tokens_per_s:,.0f} tok/s | "
            f"MFU {self._mfu(tokens_per_s):.1%}"
            + (f" | loss scale {record['loss_scale']:g}, {record['skipped_steps']} steps skipped"
               if self.half else "")
        )

    def run(self) -> int:
        """Train to ``max_steps``; return the exit status (0, or 128 + signal number)."""
        cfg, world, stop = self.cfg, self.world, _StopRequest(self.world.is_root)
        root = world.is_root
        bar = tqdm(total=self.length.max_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   mininterval=0.5, file=sys.stderr, disable=not root)
        metrics = open(os.path.join(cfg.out, METRICS), "a") if root else nullcontext()
        with _stop_on_signals(stop), bar, metrics as log:
            while self.step < self.length.max_steps:
                record = self._train_step()
                # A signal may reach only some ranks: all stop at the same step.
                signum = int(world.max(stop.signum or 0))
                if root:
                    log.write(json_text(record, indent=None) + "\n")
                    log.flush()
                    self.recent.append(record)
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.3f}",
                                    tok_s=f"{record['tokens_per_s']:,.0f}",
                                    mfu=f"{record['mfu']:.1%}", refresh=False)
                    if self.step % cfg.log_every == 0:
                        _say(self._log_line(record))
                if self.step % self.length.eval_every == 0 or self.step == self.length.max_steps:
                    line = self._evaluate_and_save(log)
                    if line is not None:
                        _say(line)
                if signum:
                    if self.saved_step != self.step:
                        self._save(best=False)
                    if root:
                        _say(f"interrupted at step {self.step}, checkpoint saved to "
                             f"{os.path.join(cfg.out, LATEST)}")
                    return 128 + signum
        if root:
            self._report_end()
        return 0

    def _report_end(self) -> None:
        out = self.cfg.out
        print(
            f"done: {self.step} steps in {_duration(time.perf_counter() - self.started)}; best "
            f"{self.task.best_metric.replace('_', ' ')} {self.best_score:.4f} at step "
            f"{self.best_step}; checkpoints in {os.path.join(out, BEST)} and "
            f"{os.path.join(out, LATEST)}"
        )
        if self.peak.raised_to_achieved:
            print(f"note: the run outran the {self.peak.source} peak, so MFU is relative to the "
                  f"fastest rate it achieved ({self.peak.flops / 1e9:,.1f} GFLOP/s)")
        for line in self.task.finish(self.model, self.best_score):
            print(line)


def _start_identical(trainer: Trainer, world: World) -> None:
    """Rank 0's weights, optimizer state and step on every rank, checked; and the same data."""
    if world.distributed:
        world.check_same(trainer.task.fingerprint(), "read different training data",
                         "every machine must see the same --data (and Python, for the "
                         "default corpus)")
    world.sync_optimizer(trainer.optimizer)
    # frozen parameters (a LoRA run's base) are in no optimizer buffer: send them too
    world.broadcast_([p.data.reshape(-1) for p in trainer.model.parameters()
                      if not p.requires_grad])
    trainer.step = trainer.saved_step = world.bcast(trainer.step)
    trainer.scaler.load_state_dict(world.bcast(trainer.scaler.state_dict()))


def _threads_set() -> bool:
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    return any(name in os.environ for name in names)


def _print_header(trainer: Trainer, resume: Checkpoint | None, init: Checkpoint | None) -> None:
    cfg, config, world = trainer.cfg, trainer.model_config, trainer.world
    for line in trainer.task.describe():
        print(line)
    print(
        f"model: {trainer.model.num_parameters():,} parameters ({config.n_layer} layers, "
        f"{config.n_head} heads, d_model {config.d_model}, context {config.context_length}); "
        f"device {trainer.device}, peak {trainer.peak.flops / 1e9:,.1f} GFLOP/s "
        f"({trainer.peak.source})"
    )
    if world.distributed:
        print(f"distributed: {world.size} rank(s), {world.local_size} on this machine, "
              f"gradients summed over {world.transport}; global batch {trainer.global_batch} "
              f"= {cfg.batch_size} x {cfg.grad_accum_steps} micro-batch(es) x {world.size} "
              "rank(s)")
        if world.local_size > 1 and trainer.device == "cpu" and not _threads_set():
            print(f"note: {world.local_size} ranks share this machine and each one's BLAS may "
                  "start a thread per core; set OMP_NUM_THREADS to cores / ranks")
    elif cfg.grad_accum_steps > 1:
        print(f"gradient accumulation: {cfg.grad_accum_steps} micro-batches of "
              f"{cfg.batch_size} per step (batch {trainer.global_batch})")
    spec = lora_spec(cfg)
    if spec is not None:
        trainable = trainer.model.num_trainable_parameters()
        print(f"LoRA rank {spec.rank} (alpha {spec.alpha:g}) on {', '.join(spec.targets)}: "
              f"{trainable:,} trainable parameters "
              f"({trainable / trainer.model.num_parameters():.2%}), the rest frozen")
    if cfg.recompute not in (None, "none"):
        print(f"recompute: {cfg.recompute} (activations recomputed in backward)")
    if init is not None:
        tuning = fine_tuning_text(cfg, init)
        print(f"initialized from {init.path}"
              + (f"; fine-tuning with {tuning} (a {init.task} checkpoint's defaults where not "
                 "given)" if tuning else ""))
    if resume is not None:
        print(f"resuming {resume.path} at step {trainer.step}")
        note = world_note(cfg, resume, world)
        if note is not None:
            print(note)
    length = trainer.length
    if length.max_steps > length.decay_steps:
        print(f"note: the learning rate reaches --min-lr {cfg.min_lr:g} at step "
              f"{length.decay_steps} (--decay-steps) and stays there")
    epochs = (f" ({cfg.epochs} epochs of {length.steps_per_epoch})"
              if length.steps_per_epoch else "")
    print(f"training {length.max_steps - trainer.step} steps{epochs}, evaluating every "
          f"{length.eval_every}; run folder {cfg.out}", flush=True)


def _train(args: argparse.Namespace, world: World) -> int:
    """Rank 0 holds the run folder's lock from its first look into the folder to the end."""
    locks: list[RunLock] = []

    def claim(out: str) -> None:
        locks.append(RunLock(out))
        if os.path.isdir(out):
            locks[0].acquire()

    try:
        return _train_locked(args, world, claim, locks)
    finally:
        for lock in locks:
            lock.release()


def _train_locked(args: argparse.Namespace, world: World, claim: Callable[[str], None],
                  locks: list[RunLock]) -> int:
    found = world.from_root(lambda: plan(args, claim))
    cfg, resume, init = found.cfg, found.resume, found.init
    device = world.use_device(cfg.device)

    def build() -> Trainer:
        task = make_task(cfg, resume or init, resume)
        return Trainer(start(found, task, device, world))

    trainer = world.agree(build)
    _start_identical(trainer, world)
    if world.is_root:
        # Everything is validated: only now may the run folder change.
        prepare_run_dir(cfg, trainer.step if resume else None, args.overwrite, locks[0])
        _print_header(trainer, resume, init)
    return trainer.run()

