"""Train a GPT language model, or fine-tune a sentence classifier on a GPT body.

    python -m minigrad_lm.train                      # char-level GPT on stdlib docstrings
    python -m minigrad_lm.train --data input.txt --out runs/mine
    python -m minigrad_lm.train --out runs/mine --resume --max-steps 3000
    python -m minigrad_lm.train --task classify --data train.tsv --val-data dev.tsv \\
        --init-from runs/default --out runs/sst2

The run folder (--out) gets crash-safe checkpoints in latest/ and best/ (by val loss), a
metrics.jsonl record per step and train_config.json. SIGINT or SIGTERM finishes the current
step, saves latest/ and exits with status 130 or 143. On the NumPy backend --resume continues
bit-identically: the weights, optimizer, step and every random state are in the checkpoint, and
the learning rate depends on the step alone (never on --max-steps), so --max-steps 20 followed
by --resume --max-steps 40 ends exactly where one 40-step run does.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np
from tqdm import tqdm

from . import backend, rng
from .checkpoint import CheckpointError, atomic_write_json, atomic_write_text, json_text
from .cli import check_device, report_errors
from .models import GPTConfig
from .optim import AdamW, clip_grad_norm_, lr_at, param_groups
from .run_state import (
    BEST,
    LATEST,
    METRICS,
    Checkpoint,
    checkpoint_files,
    make_model,
    read_checkpoint,
    run_has_checkpoint,
    truncate_metrics,
)
from .run_state import save_checkpoint as write_checkpoints
from .tasks import make_task
from .train_config import TrainConfig, build_parser, check_fields, read_config_file

__all__ = ["main", "measure_peak_flops"]

# The batch sampler has its own stream of the run's seed, apart from weights and dropout.
BATCH_STREAM = 1
RUN_FILES = (METRICS, "train_config.json")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("python -m minigrad_lm.train", __doc__.split("\n")[0])
    args = parser.parse_args(argv)
    return report_errors(lambda: _train(args))


# --------------------------------------------------------------------------------------------
# Configuration: command line, config file, resumed run, --init-from checkpoint
# --------------------------------------------------------------------------------------------


def _model_fields(config: GPTConfig) -> dict:
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
    if "dropout" not in explicit:
        values["dropout"] = source.model_config.dropout
    return TrainConfig(**values)


def _resume_source(out: str, explicit: dict) -> tuple[Checkpoint, dict]:
    """The checkpoint to resume and its saved training options."""
    if not os.path.isdir(os.path.join(out, LATEST)) and not os.path.isdir(
        os.path.join(out, LATEST + ".old")
    ):
        raise CheckpointError(f"--resume: no checkpoint to resume in {out} (no {LATEST}/ folder)")
    source = read_checkpoint(os.path.join(out, LATEST))
    saved = source.state.get("train_config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{source.path}/state.json: lacks the training configuration")
    saved = check_fields(saved, f"{source.path}/state.json")
    for key in ("task", "tokenizer"):
        if key in explicit and explicit[key] != saved.get(key):
            raise CheckpointError(
                f"--resume: {source.path} was trained with --{key} {saved.get(key)}, not "
                f"{explicit[key]}"
            )
    return source, saved


def _settings(args: argparse.Namespace) -> tuple[TrainConfig, Checkpoint | None, Checkpoint | None]:
    """(config, checkpoint to resume, checkpoint to initialize from)."""
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: "
                         "choose one")
    cli = {k: v for k, v in vars(args).items() if k not in ("config", "resume", "overwrite")}
    if args.resume and "init_from" in cli:
        raise ValueError("--init-from starts a new run from a checkpoint's weights and --resume "
                         "continues the run in --out: choose one")
    explicit = {**(read_config_file(args.config) if args.config else {}), **cli}
    out = explicit.get("out", TrainConfig.out)
    if args.resume:
        resume, saved = _resume_source(out, explicit)
        cfg = TrainConfig(**{**saved, **explicit, "out": out})
        return _adopt_model(cfg, resume, explicit, "--resume: checkpoint"), resume, None
    cfg = TrainConfig(**explicit)
    if cfg.init_from is None:
        return cfg, None, None
    init = read_checkpoint(cfg.init_from)
    if init.task != "lm":
        raise CheckpointError(
            f"--init-from {init.path}: a {init.task} checkpoint; give a language-model checkpoint"
        )
    return _adopt_model(cfg, init, explicit, "--init-from: checkpoint"), None, init


def _gpt_config(cfg: TrainConfig, vocab_size: int, source: Checkpoint | None) -> GPTConfig:
    if source is not None:
        return dataclasses.replace(source.model_config, dropout=cfg.dropout)
    return GPTConfig(
        vocab_size=vocab_size,
        context_length=cfg.context,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        d_model=cfg.d_model,
        dropout=cfg.dropout,
        norm_first=cfg.norm == "pre",
        positional=cfg.positional,
    )


# --------------------------------------------------------------------------------------------
# The run folder
# --------------------------------------------------------------------------------------------


def _refuse_existing_run(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out}: exists and is not a folder")
    if run_has_checkpoint(out) or any(os.path.exists(os.path.join(out, f)) for f in RUN_FILES):
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


def _prepare_run_dir(cfg: TrainConfig, resume_step: int | None, overwrite: bool) -> None:
    """Called once everything is validated, so a refused run never changes ``--out``."""
    if overwrite:
        _clear_run(cfg.out)
    os.makedirs(cfg.out, exist_ok=True)
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
            xp.cuda.Device(int(device.split(":")[1])).synchronize()

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

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
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


def _restore_random_state(source: Checkpoint, batch_rng: np.random.Generator) -> None:
    try:
        rng.set_state(source.state["rng"])
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


class Trainer:
    """The training loop with evaluation, checkpoints, logs, progress bar and signals."""

    def __init__(self, cfg, task, model, model_config, optimizer, batch_rng, start_step,
                 best, device, peak_flops):
        self.cfg, self.task, self.model, self.device = cfg, task, model, device
        self.model_config, self.optimizer, self.batch_rng = model_config, optimizer, batch_rng
        self.step = start_step
        self.best_val_loss, self.best_step = best
        self.peak_flops = peak_flops
        self.saved_step = start_step  # a resumed run's latest/ is at its first step
        self.params = model.parameters()
        self.recent: list[dict] = []  # train records since the last log line
        self.started = time.perf_counter()

    # ---- one step ------------------------------------------------------------------------
    def _train_step(self) -> dict:
        cfg = self.cfg
        lr = lr_at(self.step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.decay_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        self.optimizer.zero_grad()
        loss = self.task.loss(self.model, self.task.batch(self.batch_rng))
        value = loss.item()
        if not math.isfinite(value):
            raise ValueError(
                f"the loss became {value} at step {self.step + 1}; lower --lr or raise "
                f"--warmup-steps (checkpoints so far are kept)"
            )
        loss.backward()
        norm = float(clip_grad_norm_(self.params, cfg.grad_clip or math.inf))
        self.optimizer.step()
        seconds = time.perf_counter() - start
        self.step += 1
        tokens_per_s = self.task.tokens_per_step / seconds
        return {
            "kind": "train",
            "step": self.step,
            "loss": value,
            "lr": lr,
            "grad_norm": norm,
            "step_seconds": seconds,
            "tokens_per_s": tokens_per_s,
            "mfu": self._mfu(tokens_per_s),
            "time": time.perf_counter() - self.started,
        }

    def _mfu(self, tokens_per_s: float) -> float:
        return tokens_per_s * self.model_config.flops_per_token() / self.peak_flops

    # ---- evaluation and checkpoints --------------------------------------------------------
    def _state(self) -> dict:
        return {
            "step": self.step,
            "rng": rng.get_state(),
            "batch_rng": self.batch_rng.bit_generator.state,
            "best_val_loss": self.best_val_loss,
            "best_step": self.best_step,
            "train_config": self.cfg.to_dict(),
        }

    def _save(self, best: bool) -> None:
        files = checkpoint_files(
            self.model,
            task=self.task.name,
            model_config=self.model_config,
            tokenizer_dict=self.task.tokenizer_dict,
            num_classes=self.task.num_classes,
            optimizer=self.optimizer,
            state=self._state(),
        )
        write_checkpoints(self.cfg.out, files, best)
        self.saved_step = self.step

    def _evaluate_and_save(self, log) -> str:
        metrics = self.task.evaluate(self.model)
        if self.cfg.peak_flops is None:
            # Other work on the machine can only make a measurement too low: keep the highest.
            self.peak_flops = max(self.peak_flops, measure_peak_flops(self.device, 0.1))
        improved = self.best_val_loss is None or metrics["val_loss"] < self.best_val_loss
        if improved:
            self.best_val_loss, self.best_step = metrics["val_loss"], self.step
        self._save(best=improved)
        log.write(json_text({"kind": "eval", "step": self.step, **metrics}, indent=None) + "\n")
        log.flush()
        return self.task.eval_line(self.step, metrics) + (" | best, saved" if improved else "")

    # ---- the loop -------------------------------------------------------------------------
    def _log_line(self, record: dict) -> str:
        """Loss and speed averaged over the steps since the previous log line."""
        loss = float(np.mean([r["loss"] for r in self.recent]))
        seconds = sum(r["step_seconds"] for r in self.recent)
        tokens_per_s = len(self.recent) * self.task.tokens_per_step / seconds
        self.recent.clear()
        return (
            f"step {record['step']:>{len(str(self.cfg.max_steps))}}/{self.cfg.max_steps} | "
            f"loss {loss:.4f} | lr {record['lr']:.2e} | {tokens_per_s:,.0f} tok/s | "
            f"MFU {self._mfu(tokens_per_s):.1%}"
        )

    def run(self) -> int:
        """Train to ``max_steps``; return the exit status (0, or 128 + signal number)."""
        cfg, stop = self.cfg, _StopRequest()
        bar = tqdm(total=cfg.max_steps, initial=self.step, unit="step", dynamic_ncols=True,
                   mininterval=0.5, file=sys.stderr)
        with _stop_on_signals(stop), bar, open(os.path.join(cfg.out, METRICS), "a") as log:
            while self.step < cfg.max_steps:
                record = self._train_step()
                log.write(json_text(record, indent=None) + "\n")
                log.flush()
                self.recent.append(record)
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.3f}",
                                tok_s=f"{record['tokens_per_s']:,.0f}",
                                mfu=f"{record['mfu']:.1%}", refresh=False)
                if self.step % cfg.log_every == 0:
                    _say(self._log_line(record))
                if self.step % cfg.eval_every == 0 or self.step == cfg.max_steps:
                    _say(self._evaluate_and_save(log))
                if stop.signum is not None:
                    if self.saved_step != self.step:
                        self._save(best=False)
                    _say(f"interrupted at step {self.step}, checkpoint saved to "
                        f"{os.path.join(cfg.out, LATEST)}")
                    return 128 + stop.signum
        self._report_end()
        return 0

    def _report_end(self) -> None:
        out = self.cfg.out
        print(
            f"done: {self.step} steps in {_duration(time.perf_counter() - self.started)}; best "
            f"val loss {self.best_val_loss:.4f} at step {self.best_step}; checkpoints in "
            f"{os.path.join(out, BEST)} and {os.path.join(out, LATEST)}"
        )
        for line in self.task.finish(self.model):
            print(line)


def _build(cfg: TrainConfig, task, device: str, resume: Checkpoint | None,
           init: Checkpoint | None) -> Trainer:
    """Model, optimizer and random streams: fresh, from --init-from, or as --resume left them."""
    rng.manual_seed(cfg.seed)
    model_config = _gpt_config(cfg, task.vocab_size, resume or init)
    model = make_model(cfg.task, model_config, task.num_classes)
    model.to(device)  # before the optimizer, which keeps views of the parameters
    if init is not None:
        init.load_weights(model if cfg.task == "lm" else model.body)
    optimizer = AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                      betas=(cfg.beta1, cfg.beta2))
    batch_rng = np.random.default_rng([cfg.seed, BATCH_STREAM])
    start_step, best = 0, (None, None)
    if resume is not None:
        resume.load_weights(model)
        resume.load_optimizer(optimizer)
        _restore_random_state(resume, batch_rng)
        start_step = _resumed_step(resume, optimizer)
        best = (resume.state.get("best_val_loss"), resume.state.get("best_step"))
        if start_step >= cfg.max_steps:
            raise ValueError(
                f"--resume: {resume.path} is at step {start_step}, not below --max-steps "
                f"{cfg.max_steps}; raise --max-steps to train further"
            )
    peak = cfg.peak_flops or measure_peak_flops(device)
    return Trainer(cfg, task, model, model_config, optimizer, batch_rng, start_step, best,
                   device, peak)


def _print_header(trainer: Trainer, resume: Checkpoint | None, init: Checkpoint | None) -> None:
    cfg, config = trainer.cfg, trainer.model_config
    for line in trainer.task.describe():
        print(line)
    print(
        f"model: {trainer.model.num_parameters():,} parameters ({config.n_layer} layers, "
        f"{config.n_head} heads, d_model {config.d_model}, context {config.context_length}); "
        f"device {trainer.device}, peak {trainer.peak_flops / 1e9:,.1f} GFLOP/s "
        f"{'(configured)' if cfg.peak_flops else '(measured)'}"
    )
    if init is not None:
        print(f"initialized from {init.path}")
    if resume is not None:
        print(f"resuming {resume.path} at step {trainer.step}")
    if cfg.max_steps > cfg.decay_steps:
        print(f"note: the learning rate reaches --min-lr {cfg.min_lr:g} at step "
              f"{cfg.decay_steps} (--decay-steps) and stays there")
    print(f"training {cfg.max_steps - trainer.step} steps; run folder {cfg.out}", flush=True)


def _train(args: argparse.Namespace) -> int:
    cfg, resume, init = _settings(args)
    device = check_device(cfg.device)
    if resume is None and not args.overwrite:
        _refuse_existing_run(cfg.out)
    source = resume or init
    task = make_task(cfg, source.tokenizer_dict if source else None,
                     resume.num_classes if resume is not None else None)
    trainer = _build(cfg, task, device, resume, init)
    # Everything is validated: only now may the run folder change.
    _prepare_run_dir(cfg, trainer.step if resume else None, args.overwrite)
    _print_header(trainer, resume, init)
    return trainer.run()


if __name__ == "__main__":
    sys.exit(main())
