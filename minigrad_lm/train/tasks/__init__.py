"""The training tasks: language modelling (causal or masked), classification, translation.

Each task owns its data, batches, loss, evaluation and report lines; the trainer only
talks to this small interface, so it treats them all the same way (checkpoints, resume).
"""
from __future__ import annotations

from ..config import TrainConfig
from .classify import ClassifyTask
from .electra import ElectraTask
from .lm import LMTask
from .masked_lm import MaskedLMTask
from .translate import TranslateTask

__all__ = ["ClassifyTask", "ElectraTask", "LMTask", "MaskedLMTask", "TranslateTask", "make_task"]


def make_task(cfg: TrainConfig, source_tokenizer: dict | None, num_classes: int | None = None):
    """The task object for ``cfg.task``; ``source_tokenizer`` comes from a resumed or
    ``--init-from`` checkpoint, ``num_classes`` from a resumed classifier."""
    if cfg.task == "electra":
        return ElectraTask(cfg, source_tokenizer)
    if cfg.task in ("lm", "mlm"):
        masked = cfg.attention == "bidirectional"
        return (MaskedLMTask if masked else LMTask)(cfg, source_tokenizer)
    if cfg.task == "translate":
        return TranslateTask(cfg, source_tokenizer)
    return ClassifyTask(cfg, source_tokenizer, num_classes)
