"""Checkpoints written by older versions of this code, brought to today's format in one step
before anything else reads them. ``config.json``'s ``"version"`` says which format it is:

- 1: ``config.json`` held ``num_classes`` for every task (null but for a classifier); a masked
  language model was task ``lm`` with a bidirectional model; a classifier from before the
  choice of pooling names none (it pooled by the mean). ``state.json`` from before the best
  score was named keeps ``best_val_loss``; a classifier run's options from before word dropout
  lack it (it trained without).
- 2: today's (:data:`VERSION`).
"""
from __future__ import annotations

from typing import Any

from ..io.files import CheckpointError
from ..io.untrusted import ANY, MapOf, Object, Str, check, short
from .kinds import KINDS

__all__ = ["VERSION", "upgrade"]

VERSION = 2
_TASK_SPEC = Object({"task": Str(tuple(KINDS)), "model": MapOf(ANY)},
                    required=("task", "model"), extra=True)


def upgrade(config: dict[str, Any], state: dict[str, Any], name: str
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, state.json) of a checkpoint in today's format; ``name`` (config.json's
    path) is named by the error for a version this code cannot read."""
    version = config.get("version")
    if version == VERSION:
        return config, state
    if version != 1:
        raise CheckpointError(f"{name}: checkpoint format version {short(version)}, this code "
                              f"reads versions 1 to {VERSION}")
    config = check(config, _TASK_SPEC, name)
    if config.get("num_classes", 0) is None:
        config = {k: v for k, v in config.items() if k != "num_classes"}
    kind = KINDS[config["task"]]
    kind.config_spec.check(config["model"], name, "model")
    state = {**state, "best_score": state.get("best_score", state.get("best_val_loss"))}
    config, state = kind.upgrade(config, state)
    return {**config, "version": VERSION}, state
