"""The settings of a run: the command line over a config file over (with --resume) the
resumed run's own options, a checkpoint's model shape adopted, every option validated before
anything on disk changes.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass

from .. import backend
from ..checkpoints.folder import LATEST, Checkpoint, read_checkpoint
from ..data.tokenizer import TOKENIZER_KINDS
from ..io.files import CheckpointError
from ..models.adapters import LoraSpec, parse_targets
from .config import LEARNED_VOCAB_OPTIONS, TrainConfig, applicable, check_fields, read_config_file
from .distributed import World
from .run_folder import has_run_files, refuse_existing_run
from .tasks import TASKS, task_name
from .tasks.common import flag, tokenizer_kind

__all__ = ["Plan", "lora_spec", "plan", "world_note"]

LAUNCH_FLAGS = ("config", "resume", "overwrite", "distributed")  # not training options


@dataclass(frozen=True)
class Plan:
    """A run's validated options and the checkpoints it starts from (rank 0 reads them)."""

    cfg: TrainConfig
    resume: Checkpoint | None = None  # --resume: the run's latest/
    init: Checkpoint | None = None  # --init-from


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


def _adopt_tokenizer(explicit: dict, source: Checkpoint) -> dict:
    """The options with --init-from's tokenizer, whose vocabulary the weights were trained
    on: an option that asks for another vocabulary is refused naming both."""
    kind = tokenizer_kind(source.tokenizer_dict)
    if kind not in TOKENIZER_KINDS:
        return explicit  # token ids without a tokenizer: the task says what it accepts
    size = source.model_config.vocab_size
    held = f"--init-from {source.path}: its tokenizer is {kind} with {size:,} tokens"
    if explicit.get("tokenizer", kind) != kind:
        raise CheckpointError(f"{held}, not --tokenizer {explicit['tokenizer']}")
    if explicit.get("vocab_size", size) != size:
        raise CheckpointError(f"{held}, not --vocab-size {explicit['vocab_size']}")
    learned = [name for name in LEARNED_VOCAB_OPTIONS
               if name in explicit and name != "vocab_size"]
    if learned:
        raise CheckpointError(f"{held}; {flag(learned[0])} would learn another vocabulary")
    return {**explicit, "tokenizer": kind}


def _resume_source(out: str, explicit: dict) -> tuple[Checkpoint, dict]:
    """The checkpoint to resume and its saved training options."""
    if not os.path.isdir(os.path.join(out, LATEST)) and not os.path.isdir(
        os.path.join(out, LATEST + ".old")
    ):
        never = (" (the run there stopped before its first checkpoint: start it again without "
                 "--resume)" if has_run_files(out) else "")
        raise CheckpointError(
            f"--resume: no checkpoint to resume in {out} (no {LATEST}/ folder){never}")
    source = read_checkpoint(os.path.join(out, LATEST))
    saved = source.state.get("train_config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{source.path}/state.json: lacks the training configuration")
    state = f"{source.path}/state.json"
    saved = check_fields(saved, state)
    if task_name(saved) != source.task:
        raise CheckpointError(f"{state}: its training configuration is of --task "
                              f"{task_name(saved)} but config.json holds a {source.task} model")
    task = TASKS[source.task]
    saved = applicable(saved)  # what the run was trained with
    try:
        TrainConfig(**saved)  # each value in its range: a hand edit is named as such
    except ValueError as e:
        raise CheckpointError(f"{state}: the run's training configuration is refused: {e}"
                              ) from None
    if "task" in explicit and task_name({**saved, **explicit}) != task_name(saved):
        raise CheckpointError(f"--resume: {source.path} was trained with --task "
                              f"{task_name(saved)}, not {explicit['task']}")
    for name in task.fixed:
        if name in explicit and explicit[name] != saved.get(name):
            raise CheckpointError(f"--resume: {source.path} was trained with {flag(name)} "
                                  f"{_shown(saved.get(name))}, not {_shown(explicit[name])}")
    return source, saved


def fine_tuning_text(cfg: TrainConfig, init: Checkpoint) -> str | None:
    """The options that ``init``'s kind fine-tunes with, as this run has them (given or
    adopted), for the run's header; None when the kind names none that the task takes."""
    takes = TASKS[cfg.task].options
    names = [k for k in init.kind.fine_tuning if k in takes]
    return " ".join(_option_text(k, getattr(cfg, k)) for k in names) or None


def _option_text(name: str, value) -> str:
    """An option as typed: ``--flag value``, or ``--flag``/``--no-flag`` for a switch."""
    if isinstance(value, bool):
        return flag(name) if value else flag(name).replace("--", "--no-", 1)
    return f"{flag(name)} {_shown(value)}"


def _shown(value) -> str:
    if value is None:
        return "(not given)"
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def _without_replaced_length(saved: dict, explicit: dict) -> dict:
    """The saved options, less the run length that a resumed run is newly given (--epochs
    replaces a saved --max-steps and the reverse)."""
    replaced = {"epochs": "max_steps", "max_steps": "epochs"}
    drop = {replaced[k] for k in replaced if k in explicit}
    return {k: v for k, v in saved.items() if k not in drop}


def _settings(args: argparse.Namespace, claim: Callable[[str], None]) -> Plan:
    """(config, checkpoint to resume, checkpoint to initialize from); ``claim(out)`` locks
    the run folder before a checkpoint in it is read."""
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: "
                         "choose one")
    cli = {k: v for k, v in vars(args).items() if k not in LAUNCH_FLAGS}
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
        return Plan(_adopt_model(cfg, resume, explicit, "--resume: checkpoint"), resume=resume)
    if explicit.get("init_from") is None:
        return Plan(TrainConfig(**explicit))
    init = read_checkpoint(explicit["init_from"])
    takes = TASKS[task_name(explicit)].options
    tuning = {k: v for k, v in init.kind.fine_tuning.items() if k in takes}
    dictated = {k: v for k, v in init.kind.dictates(init).items() if k in takes}
    for name, value in dictated.items():
        if name in explicit and explicit[name] != value:
            raise CheckpointError(f"--init-from {init.path}: its model was trained with "
                                  f"{_option_text(name, value)}, not "
                                  f"{_option_text(name, explicit[name])}")
    cfg = TrainConfig(**_adopt_tokenizer({**tuning, **explicit, **dictated}, init))
    starts = TASKS[cfg.task].init_from
    if init.task not in starts:
        raise CheckpointError(
            f"--init-from {init.path}: a {init.task} checkpoint; give a language-model checkpoint "
            f"({' or '.join(starts)})")
    _refuse_other_tokenizer(init, explicit)
    return Plan(_adopt_model(cfg, init, explicit, "--init-from: checkpoint"), init=init)


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


def lora_spec(cfg: TrainConfig) -> LoraSpec | None:
    """The adapters a --lora-rank run trains (None: the whole model trains)."""
    if not cfg.lora_rank:
        return None
    return LoraSpec(cfg.lora_rank, cfg.lora_alpha, parse_targets(cfg.lora_targets))


def world_note(cfg: TrainConfig, resume: Checkpoint, world: World) -> str | None:
    """What changes when a checkpoint resumes on another number of ranks."""
    saved_ranks = resume.state.get("world_size", 1)
    if saved_ranks == world.size:
        return None
    saved = TrainConfig(**applicable(check_fields(resume.state["train_config"], resume.path)))
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


def plan(args: argparse.Namespace, claim: Callable[[str], None]) -> Plan:
    """The validated options and checkpoints (rank 0 reads them for every rank); ``claim(out)``
    locks the run folder before a checkpoint in it is read."""
    found = _settings(args, claim)
    backend.normalize_device(found.cfg.device)
    if found.resume is None and not args.overwrite:
        refuse_existing_run(found.cfg.out)
    return found
