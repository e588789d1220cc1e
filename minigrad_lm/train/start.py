"""What a :class:`~minigrad_lm.train.trainer.Trainer` starts from: the model, optimizer and
random streams, fresh, from --init-from, or as --resume left them; the run's length; the
device's peak FLOP/s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..backend import memory
from ..checkpoints.folder import Checkpoint
from ..engine import amp, rng
from ..io.files import CheckpointError
from ..models.adapters import apply_spec
from ..nn import Module
from ..optim.optimizers import AdamW, decay_groups, layer_decay_groups
from .config import TrainConfig
from .distributed import World
from .flops import Peak
from .settings import Plan, lora_spec
from .tasks import Task

__all__ = ["BATCH_STREAM", "RunLength", "Start", "start"]

# The batch sampler has its own stream of the run's seed, apart from weights and dropout; the
# dropout masks of ranks other than 0 have one each (rank 0's is the single-process stream).
BATCH_STREAM = 1
RANK_STREAM = 3


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


@dataclass
class Start:
    """Everything a Trainer starts from."""

    cfg: TrainConfig
    length: RunLength
    task: Task
    model: Module
    model_config: memory.ModelShape  # GPTConfig, Seq2SeqConfig, ...: the task's model
    optimizer: AdamW
    batch_rng: np.random.Generator
    world: World
    device: str
    peak: Peak | None  # None on ranks other than 0, which never report MFU
    scaler: amp.GradScaler  # loss scaling, enabled by --precision fp16
    step: int = 0
    best_score: float | None = None
    best_step: int | None = None


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


def _resumed_step(source: Checkpoint, optimizer) -> int:
    step = source.state.get("step")
    if not isinstance(step, int) or step != optimizer.step_count:
        raise CheckpointError(
            f"{source.path}: state.json step {step!r} does not match the optimizer's step "
            f"{optimizer.step_count}"
        )
    return step


def start(plan: Plan, task: Task, device: str, world: World) -> Start:
    """Model, optimizer and random streams: fresh, from --init-from, or as --resume left them.

    Only rank 0 reads checkpoint files (other machines may not see them): the other ranks get
    its weights, optimizer state and step (the trainer's ``start_identical``).
    """
    cfg, resume, init = plan.cfg, plan.resume, plan.init
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
        init.load_pretrained(task.kind.pretrained_part(model, init.kind))
    spec = lora_spec(cfg)
    if spec is not None:  # before the optimizer, which then holds the adapters only
        apply_spec(model, spec, f"--lora-rank {spec.rank}")
    groups = (decay_groups(model, cfg.weight_decay) if cfg.layer_decay in (None, 1.0) else
              layer_decay_groups(model, cfg.weight_decay, cfg.lr, cfg.layer_decay,
                                 model_config.n_layer))
    optimizer = AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    batch_rng = np.random.default_rng([cfg.seed, BATCH_STREAM])
    if world.rank > 0:
        rng.manual_seed(_rank_seed(cfg.seed, world.rank))  # dropout masks of its own
    length = RunLength.of(cfg, task, cfg.batch_size * cfg.grad_accum_steps * world.size)
    peak = Peak(device, cfg.peak_flops) if world.is_root else None
    scaler = amp.GradScaler(enabled=cfg.precision == "fp16")
    begin = Start(cfg, length, task, model, model_config, optimizer, batch_rng, world, device,
                  peak, scaler)
    if resume is not None:
        _restore_random_state(resume, batch_rng, world.rank)
        begin.best_score = resume.state.get("best_score")
        begin.best_step = resume.state.get("best_step")
    if resume is not None and world.is_root:
        resume.load_weights(model)
        resume.load_optimizer(optimizer)
        begin.step = _resumed_step(resume, optimizer)
        if scaler.enabled and "grad_scaler" in resume.state:
            try:
                scaler.load_state_dict(resume.state["grad_scaler"])
            except (KeyError, TypeError, ValueError) as e:
                raise CheckpointError(f"{resume.path}/state.json: bad grad_scaler ({e!r})") \
                    from None
        if begin.step >= length.max_steps:
            more = "--epochs" if cfg.epochs is not None else "--max-steps"
            raise ValueError(
                f"--resume: {resume.path} is at step {begin.step}, not below the run's "
                f"{length.max_steps} steps; raise {more} to train further"
            )
    return begin
