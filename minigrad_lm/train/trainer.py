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
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from .. import backend
from ..backend import memory
from ..backend.devices import memory_text
from ..cli import USAGE_ERROR, report_errors
from ..engine import rng
from ..io.files import CheckpointError, atomic_write_json, atomic_write_text, json_text
from ..models.adapters import LoraSpec, adapter_files, apply_spec, parse_targets
from ..optim.optimizers import AdamW, clip_grad_norm_, decay_groups, layer_decay_groups
from ..optim.schedules import LRScheduler
from . import distributed
from .checkpoint import (
    BEST,
    LATEST,
    METRICS,
    Checkpoint,
    RunLock,
    checkpoint_files,
    read_checkpoint,
    run_has_checkpoint,
    truncate_metrics,
)
from .checkpoint import save_checkpoint as write_checkpoints
from .config import TrainConfig, build_parser, check_fields, read_config_file
from .distributed import CollectiveError, World
from .tasks import TASKS, make_task, task_name
from .tasks.common import tokenizer_kind

__all__ = ["main", "measure_peak_flops"]

# The batch sampler has its own stream of the run's seed, apart from weights and dropout; the
# dropout masks of ranks other than 0 have one each (rank 0's is the single-process stream).
BATCH_STREAM = 1
RANK_STREAM = 3
RUN_FILES = (METRICS, "train_config.json")


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
# Configuration: command line, config file, resumed run, --init-from checkpoint
# --------------------------------------------------------------------------------------------


def _model_fields(config) -> dict:
    """The TrainConfig values that describe ``config``'s shape."""
    return {
        "context": config.context_length,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "d_model": config.d_model,
        "norm": "pre" if config.norm_first else "post",
        "positional": config.positional,
    }


def _adopt_model(cfg: TrainConfig, source: Checkpoint, explicit: dict, what: str) -> TrainConfig:
    """Take the model shape from a checkpoint; an explicit option that contradicts it is an
    error rather than a silently different model."""
    fields = _model_fields(source.model_config)
    conflicts = [
        f"--{k.replace('_', '-')} {explicit[k]} (checkpoint: {v})"
        for k, v in fields.items()
        if k in explicit and explicit[k] != v
    ]
    if conflicts:
        raise CheckpointError(
            f"{what} {source.path} was trained with a different model: {', '.join(conflicts)}"
        )
    values = {**cfg.to_dict(), **fields}
    if "dropout" not in explicit and source.task == cfg.task:
        # The checkpoint's own task keeps its dropout; a new task (a classifier on a
        # pretrained language model) takes that task's default.
        values["dropout"] = source.model_config.dropout
    return TrainConfig(**values)


def _resume_source(out: str, explicit: dict) -> tuple[Checkpoint, dict]:
    """The checkpoint to resume and its saved training options."""
    if not os.path.isdir(os.path.join(out, LATEST)) and not os.path.isdir(
        os.path.join(out, LATEST + ".old")
    ):
        never = (" (the run there stopped before its first checkpoint: start it again without "
                 "--resume)" if _has_run_files(out) else "")
        raise CheckpointError(
            f"--resume: no checkpoint to resume in {out} (no {LATEST}/ folder){never}")
    source = read_checkpoint(os.path.join(out, LATEST))
    saved = source.state.get("train_config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{source.path}/state.json: lacks the training configuration")
    saved = check_fields(saved, f"{source.path}/state.json")
    task = TASKS.get(task_name(saved))
    if task is not None:
        saved = {**task.saved_defaults, **saved}
    if "task" in explicit and task_name({**saved, **explicit}) != task_name(saved):
        raise CheckpointError(f"--resume: {source.path} was trained with --task "
                              f"{task_name(saved)}, not {explicit['task']}")
    if "tokenizer" in explicit and explicit["tokenizer"] != saved.get("tokenizer"):
        raise CheckpointError(f"--resume: {source.path} was trained with --tokenizer "
                              f"{saved.get('tokenizer')}, not {explicit['tokenizer']}")
    return source, saved


def _without_replaced_length(saved: dict, explicit: dict) -> dict:
    """The saved options, less the run length that a resumed run is newly given (--epochs
    replaces a saved --max-steps and the reverse)."""
    replaced = {"epochs": "max_steps", "max_steps": "epochs"}
    drop = {replaced[k] for k in replaced if k in explicit}
    return {k: v for k, v in saved.items() if k not in drop}


def _settings(args: argparse.Namespace, claim: Callable[[str], None]
              ) -> tuple[TrainConfig, Checkpoint | None, Checkpoint | None]:
    """(config, checkpoint to resume, checkpoint to initialize from); ``claim(out)`` locks
    the run folder before a checkpoint in it is read."""
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: "
                         "choose one")
    launch = ("config", "resume", "overwrite", "distributed")
    cli = {k: v for k, v in vars(args).items() if k not in launch}
    if args.resume and "init_from" in cli:
        raise ValueError("--init-from starts a new run from a checkpoint's weights and --resume "
                         "continues the run in --out: choose one")
    explicit = {**(read_config_file(args.config) if args.config else {}), **cli}
    out = explicit.get("out", TrainConfig.out)
    if isinstance(out, str):
        claim(out)
    if args.resume:
        resume, saved = _resume_source(out, explicit)
        cfg = TrainConfig(**{**_without_replaced_length(saved, explicit), **explicit, "out": out})
        return _adopt_model(cfg, resume, explicit, "--resume: checkpoint"), resume, None
    cfg = TrainConfig(**explicit)
    if cfg.init_from is None:
        return cfg, None, None
    init = read_checkpoint(cfg.init_from)
    starts = TASKS[cfg.task].init_from
    if init.task not in starts:
        raise CheckpointError(
            f"--init-from {init.path}: a {init.task} checkpoint; give a language-model checkpoint "
            f"({' or '.join(starts)})")
    _refuse_other_tokenizer(init, explicit)
    return _adopt_model(cfg, init, explicit, "--init-from: checkpoint"), None, init


def _refuse_other_tokenizer(init: Checkpoint, explicit: dict) -> None:
    """A pretrained encoder reads the tokens it learned: tokenizer options that ask for
    another vocabulary are an error naming both, not silently ignored."""
    kind = tokenizer_kind(init.tokenizer_dict)
    size = init.model_config.vocab_size
    asked = []
    if explicit.get("tokenizer", kind) != kind:
        asked.append(f"--tokenizer {explicit['tokenizer']}")
    if explicit.get("vocab_size", size) != size:
        asked.append(f"--vocab-size {explicit['vocab_size']}")
    if asked:
        raise CheckpointError(
            f"--init-from {init.path}: its tokenizer is {kind} with {size:,} tokens, not "
            f"{' '.join(asked)}; the encoder reads the tokens it was pretrained on (leave the "
            "tokenizer options out)")


def _lora_spec(cfg: TrainConfig) -> LoraSpec | None:
    """The adapters a --lora-rank run trains (None: the whole model trains)."""
    if not cfg.lora_rank:
        return None
    return LoraSpec(cfg.lora_rank, cfg.lora_alpha, parse_targets(cfg.lora_targets))


# --------------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------------


def _has_run_files(out: str) -> bool:
    return any(os.path.lexists(os.path.join(out, f)) for f in RUN_FILES)


def _refuse_existing_run(out: str) -> None:
    """A run with a checkpoint is never replaced unasked; one that stopped before its first
    checkpoint (a diverged loss, a crash) has nothing to resume, so a new run may start."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out}: exists and is not a folder")
    if run_has_checkpoint(out):
        raise ValueError(
            f"--out {out} already holds a training run; pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )


def _clear_run(out: str) -> None:
    """Delete what a previous run wrote in ``out`` (and nothing else)."""
    for name in (LATEST, BEST):
        for suffix in ("", ".old", ".tmp"):
            path = os.path.join(out, name + suffix)
            if os.path.isdir(path):
                shutil.rmtree(path)
    for name in RUN_FILES:
        if os.path.exists(os.path.join(out, name)):
            os.unlink(os.path.join(out, name))


def _prepare_run_dir(cfg: TrainConfig, resume_step: int | None, overwrite: bool,
                     lock: RunLock) -> None:
    """Called once everything is validated, so a refused run never changes ``--out``."""
    os.makedirs(cfg.out, exist_ok=True)
    lock.acquire()  # held since the start when --out existed; else another run may have begun
    if resume_step is None and not overwrite:
        _refuse_existing_run(cfg.out)
        if _has_run_files(cfg.out):
            print(f"note: {cfg.out} holds a run that stopped before its first checkpoint; "
                  "starting it again")
    if overwrite:
        _clear_run(cfg.out)
    metrics = os.path.join(cfg.out, METRICS)
    if resume_step is not None and os.path.exists(metrics):
        truncate_metrics(cfg.out, resume_step)
    else:
        atomic_write_text(metrics, "")
    atomic_write_json(os.path.join(cfg.out, "train_config.json"), cfg.to_dict())


# --------------------------------------------------------------------------------------------
# MFU and signals
# --------------------------------------------------------------------------------------------


def measure_peak_flops(device: str, seconds: float = 0.2) -> float:
    """Float32 matmul FLOP/s on ``device``: the denominator of MFU when none is configured.

    The fastest of many timed matmuls counts, so a busy machine (another process taking the
    cores for a moment) lowers the estimate far less than an average would.
    """
    xp = backend.xp_for(device)
    n = 512 if device == "cpu" else 4096  # large enough to keep the device busy
    a = xp.full((n, n), 0.5, dtype=np.float32)
    b = xp.full((n, n), 0.25, dtype=np.float32)

    def sync():
        if device != "cpu":
            xp.cuda.Device(backend.device_index(device)).synchronize()

    a @ b  # warm-up: thread pools, kernels
    sync()
    fastest, start = math.inf, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        sync()
        fastest = min(fastest, time.perf_counter() - t0)
    return 2.0 * n**3 / fastest


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


def _rank_seed(seed: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, RANK_STREAM, rank]).generate_state(1, np.uint64)[0])


def _restore_random_state(source: Checkpoint, batch_rng: np.random.Generator,
                          rank: int) -> None:
    """The batch stream (shared by all ranks) and this rank's dropout stream, when saved; a
    rank the checkpoint did not have keeps its fresh stream."""
    try:
        states = [source.state["rng"], *source.state.get("rank_rngs", [])[1:]]
        if rank < len(states):
            rng.set_state(states[rank])
        batch_rng.bit_generator.state = source.state["batch_rng"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source.path}/state.json: bad random state ({e!r})") from None


def _say(line: str) -> None:
    """Print a log line above the progress bar, not through it."""
    tqdm.write(line, file=sys.stdout)


def _resumed_step(source: Checkpoint, optimizer) -> int:
    step = source.state.get("step")
    if not isinstance(step, int) or step != optimizer.step_count:
        raise CheckpointError(
            f"{source.path}: state.json step {step!r} does not match the optimizer's step "
            f"{optimizer.step_count}"
        )
    return step


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass(frozen=True)
class RunLength:
    """How long the run is and when it evaluates, in optimizer steps: given, or (--epochs)
    worked out from the number of training rows and the global batch."""

    max_steps: int
    decay_steps: int
    eval_every: int
    steps_per_epoch: int | None = None

    @classmethod
    def of(cls, cfg: TrainConfig, task, global_batch: int) -> RunLength:
        per_epoch = None
        max_steps = cfg.max_steps
        if cfg.epochs is not None:
            per_epoch = math.ceil(task.train_rows / global_batch)
            max_steps = cfg.epochs * per_epoch
        eval_every = cfg.eval_every
        if eval_every is None:  # twice an epoch: the best checkpoint is picked often enough
            eval_every = max(1, math.ceil((per_epoch or max_steps) / 2))
        return cls(max_steps, cfg.decay_steps or max_steps, eval_every, per_epoch)


class Trainer:
    """The training loop with evaluation, checkpoints, logs, progress bar and signals.

    Every rank runs it in lockstep; rank 0 alone evaluates, logs and writes checkpoints.
    """

    def __init__(self, cfg, length: RunLength, task, model, model_config, optimizer,
                 batch_rng, start_step, best, device, peak_flops, world: World):
        self.cfg, self.length, self.task, self.model, self.device = (cfg, length, task, model,
                                                                     device)
        self.model_config, self.optimizer, self.batch_rng = model_config, optimizer, batch_rng
        self.lr_schedule = LRScheduler(optimizer, cfg.warmup_steps, length.decay_steps, cfg.min_lr)
        self.world = world
        self.step = start_step
        self.best_score, self.best_step = best
        self.peak_flops = peak_flops
        self.saved_step = start_step  # a resumed run's latest/ is at its first step
        self.params = model.parameters()
        # The global batch is cut into equal micro-batches (grad-accum-steps per rank), so its
        # mean loss and gradient are the means of theirs.
        self.micro_batches = cfg.grad_accum_steps * world.size
        self.global_batch = cfg.batch_size * self.micro_batches
        per_rank = cfg.batch_size * cfg.grad_accum_steps
        self.rows = slice(world.rank * per_rank, (world.rank + 1) * per_rank)
        self.recent: list[dict] = []  # train records since the last log line
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
            loss = self.task.loss(self.model, batch)
            loss.backward()  # accumulates into the optimizer's flat gradient buffers
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
        norm = float(clip_grad_norm_(self.params, cfg.grad_clip or math.inf))
        self.optimizer.step()
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
        return record

    def _mfu(self, tokens_per_s: float) -> float:
        flops = tokens_per_s * self.model_config.flops_per_token(self.task.head_share)
        return flops / (self.peak_flops * self.world.size)

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
        if self.world.size > 1:
            state["rank_rngs"] = rank_rngs
        return state

    def _save(self, best: bool) -> None:
        """Every rank takes part (its dropout stream is saved too); rank 0 writes."""
        rank_rngs = self.world.gather(rng.get_state())
        self._resync_drifted_replicas()
        if self.world.is_root:
            spec = _lora_spec(self.cfg)
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
        if self.cfg.peak_flops is None:
            # Other work on the machine can only make a measurement too low: keep the highest.
            self.peak_flops = max(self.peak_flops, measure_peak_flops(self.device, 0.1))
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
        for line in self.task.finish(self.model, self.best_score):
            print(line)


def _build(cfg: TrainConfig, task, device: str, resume: Checkpoint | None,
           init: Checkpoint | None, world: World) -> Trainer:
    """Model, optimizer and random streams: fresh, from --init-from, or as --resume left them.

    Only rank 0 reads checkpoint files (other machines may not see them): the other ranks get
    its weights, optimizer state and step from :func:`_start_identical`.
    """
    rng.manual_seed(cfg.seed)
    model_config = task.model_config(resume or init)
    extras = task.checkpoint_extras()
    head = task.kind.head(model_config, extras)
    nbytes, detail = memory.training_bytes(model_config, task.batch_rows(), cfg.context, head)
    outputs = f", {head.outputs} outputs" if head.outputs is not None else ""
    memory.require(nbytes, detail, f"training a model of {model_config.n_layer} layers, d_model "
                   f"{model_config.d_model}, vocabulary {model_config.vocab_size}{outputs}",
                   device)
    model = task.kind.build(model_config, extras)
    model.to(device)  # before the optimizer, which keeps views of the parameters
    if init is not None and world.is_root:
        init.load_pretrained(task.kind.pretrained_part(model))
    spec = _lora_spec(cfg)
    if spec is not None:  # before the optimizer, which then holds the adapters only
        apply_spec(model, spec)
    groups = (decay_groups(model, cfg.weight_decay) if cfg.layer_decay in (None, 1.0) else
              layer_decay_groups(model, cfg.weight_decay, cfg.lr, cfg.layer_decay,
                                 model_config.n_layer))
    optimizer = AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    batch_rng = np.random.default_rng([cfg.seed, BATCH_STREAM])
    if world.rank > 0:
        rng.manual_seed(_rank_seed(cfg.seed, world.rank))  # dropout masks of its own
    start_step, best = 0, (None, None)
    if resume is not None:
        _restore_random_state(resume, batch_rng, world.rank)
        best = resume.state.get("best_score"), resume.state.get("best_step")
    length = RunLength.of(cfg, task, cfg.batch_size * cfg.grad_accum_steps * world.size)
    if resume is not None and world.is_root:
        resume.load_weights(model)
        resume.load_optimizer(optimizer)
        start_step = _resumed_step(resume, optimizer)
        if start_step >= length.max_steps:
            more = "--epochs" if cfg.epochs is not None else "--max-steps"
            raise ValueError(
                f"--resume: {resume.path} is at step {start_step}, not below the run's "
                f"{length.max_steps} steps; raise {more} to train further"
            )
    peak = cfg.peak_flops or (measure_peak_flops(device) if world.is_root else math.nan)
    return Trainer(cfg, length, task, model, model_config, optimizer, batch_rng, start_step,
                   best, device, peak, world)


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


def _world_note(cfg: TrainConfig, resume: Checkpoint, world: World) -> str | None:
    """What changes when a checkpoint resumes on another number of ranks."""
    saved_ranks = resume.state.get("world_size", 1)
    if saved_ranks == world.size:
        return None
    saved = TrainConfig(**check_fields(resume.state["train_config"], resume.path))
    saved_batch = saved.batch_size * saved.grad_accum_steps * saved_ranks
    batch = cfg.batch_size * cfg.grad_accum_steps * world.size
    head = (f"note: {resume.path} was written by {saved_ranks} rank(s) and resumes on "
            f"{world.size}")
    if batch == saved_batch:
        return (f"{head}, with the same global batch of {batch} sequences: training goes on as "
                "before (up to float rounding); ranks the checkpoint did not have start new "
                "dropout streams")
    per_rank = saved_batch / (cfg.grad_accum_steps * world.size)
    keep = (f"; --batch-size {per_rank:.0f} would keep it" if per_rank.is_integer() else "")
    return (f"{head}: the global batch changes from {saved_batch} to {batch} sequences, so the "
            f"run does not continue as it would have{keep}")


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
        f"device {trainer.device}, peak {trainer.peak_flops / 1e9:,.1f} GFLOP/s "
        f"{'(configured)' if cfg.peak_flops else '(measured)'}"
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
    spec = _lora_spec(cfg)
    if spec is not None:
        trainable = trainer.model.num_trainable_parameters()
        print(f"LoRA rank {spec.rank} (alpha {spec.alpha:g}) on {', '.join(spec.targets)}: "
              f"{trainable:,} trainable parameters "
              f"({trainable / trainer.model.num_parameters():.2%}), the rest frozen")
    if cfg.recompute != "none":
        print(f"recompute: {cfg.recompute} (activations recomputed in backward)")
    if init is not None:
        print(f"initialized from {init.path}")
    if resume is not None:
        print(f"resuming {resume.path} at step {trainer.step}")
        note = _world_note(cfg, resume, world)
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


def _plan(args: argparse.Namespace, claim: Callable[[str], None]
          ) -> tuple[TrainConfig, Checkpoint | None, Checkpoint | None]:
    """The validated settings and checkpoints (rank 0 reads them for every rank)."""
    cfg, resume, init = _settings(args, claim)
    backend.normalize_device(cfg.device)
    if resume is None and not args.overwrite:
        _refuse_existing_run(cfg.out)
    return cfg, resume, init


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
    cfg, resume, init = world.from_root(lambda: _plan(args, claim))
    device = world.use_device(cfg.device)
    source = resume or init

    def build() -> Trainer:
        return _build(cfg, make_task(cfg, source, resume), device, resume, init, world)

    trainer = world.agree(build)
    _start_identical(trainer, world)
    if world.is_root:
        # Everything is validated: only now may the run folder change.
        _prepare_run_dir(cfg, trainer.step if resume else None, args.overwrite, locks[0])
        _print_header(trainer, resume, init)
    return trainer.run()

