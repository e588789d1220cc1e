"""What every training task declares and does: the :class:`Task` base class.

A task owns its rules: its name, per-task option defaults and checks, its model, its data and
batches, its loss, its evaluation and report lines, the metric that picks the best checkpoint
and what its checkpoint holds beyond the weights. The trainer, the configuration and the
checkpoint code ask ``TASKS[cfg.task]`` and never compare task names.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ...checkpoints.kinds import CheckpointKind
from ...engine.tensor import Tensor
from ...nn import Module
from ..distributed import LOCAL, World
from .common import FIXED_ON_RESUME

if TYPE_CHECKING:
    from ...checkpoints.folder import Checkpoint
    from ..config import TrainConfig


class Task(ABC):
    """A training task. Subclasses set the class variables and implement the abstract methods;
    one is registered in :data:`minigrad_lm.train.tasks.TASKS` under its ``name``."""

    kind: ClassVar[type[CheckpointKind]]  # its checkpoints (minigrad_lm.checkpoints.kinds)
    name: ClassVar[str]  # --task NAME: its kind's name
    summary: ClassVar[str]  # what it trains, for --help
    # Options whose best value depends on the task, filled in where the user gave none (and
    # "max_steps" or "epochs": the run's length when neither is given).
    defaults: ClassVar[dict[str, Any]] = {}
    # Options that, given with another task's name, mean this task (an old spelling).
    alias: ClassVar[dict[str, Any]] = {}
    # Options (default None) that this task reads and others refuse when given.
    options: ClassVar[tuple[str, ...]] = ()
    # Options a resumed run keeps from its checkpoint: given again, they must agree with it.
    fixed: ClassVar[tuple[str, ...]] = FIXED_ON_RESUME
    # Tasks whose checkpoints --init-from may start this one from (their weights fit).
    init_from: ClassVar[tuple[str, ...]] = ()
    best_metric: ClassVar[str] = "val_loss"  # the evaluate() key that picks best/
    higher_is_better: ClassVar[bool] = False
    # The share of the tokens that go through the vocabulary projection (MFU's FLOP count).
    head_share: float = 1.0

    # Set by __init__: the data the task trains on.
    cfg: TrainConfig
    vocab_size: int
    tokenizer_dict: dict[str, Any]
    train_rows: int  # what one epoch visits (rows or batches), for --epochs

    @staticmethod
    def check(cfg: TrainConfig) -> None:
        """Refuse option combinations this task cannot train, one ValueError line each."""

    @abstractmethod
    def __init__(self, cfg: TrainConfig, source_tokenizer: dict | None = None,
                 resumed_extras: dict[str, Any] | None = None):
        """Read and encode the data; ``source_tokenizer`` comes from a resumed or
        ``--init-from`` checkpoint, ``resumed_extras`` from a resumed checkpoint's config."""

    # ---- the model ---------------------------------------------------------------------------
    @abstractmethod
    def model_config(self, source: Checkpoint | None):
        """The model's shape: fresh from the options, or a resumed / --init-from checkpoint's."""

    def checkpoint_extras(self) -> dict[str, Any]:
        """The task's own keys of config.json (``kind.extras``)."""
        return {}

    def flops_per_token(self, model_config) -> float:
        """Training FLOPs per token of the model (tokens/s to MFU)."""
        return model_config.flops_per_token(self.head_share)

    def batch_rows(self) -> int:
        """Sequences in one micro-batch (the memory estimate's batch)."""
        return self.cfg.batch_size

    # ---- the data ----------------------------------------------------------------------------
    @abstractmethod
    def describe(self) -> list[str]:
        """Header lines: the data, the vocabulary, a baseline."""

    @abstractmethod
    def draw(self, rng: np.random.Generator, size: int, step: int) -> np.ndarray:
        """The ``size`` picks (rows, windows, batches) of step ``step``: a function of the
        batch stream and the step alone, so a resumed run draws what the first would have."""

    @abstractmethod
    def batch_at(self, picks: np.ndarray) -> tuple[np.ndarray, ...]:
        """The arrays of a micro-batch of ``picks``."""

    @abstractmethod
    def tokens(self, batch) -> int:
        """The real tokens of a batch (the work done, for tokens/s and MFU)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A digest of the data: ranks check that they all read the same."""

    # ---- training and evaluation -------------------------------------------------------------
    @abstractmethod
    def loss(self, model: Module, batch) -> Tensor:
        """The mean training loss of a micro-batch."""

    @abstractmethod
    def evaluate(self, model: Module, world: World = LOCAL) -> dict[str, Any]:
        """Metrics (``best_metric`` among them on rank 0) for the eval line and metrics log."""

    @abstractmethod
    def eval_line(self, step: int, metrics: dict[str, Any]) -> str:
        """The log line of an evaluation."""

    def improves(self, metrics: dict[str, Any], best: float | None) -> bool:
        """Whether ``metrics`` beat the best score so far (a new best/ checkpoint)."""
        if best is None:
            return True
        score = metrics[self.best_metric]
        return score > best if self.higher_is_better else score < best

    def finish(self, model: Module, best: float | None) -> list[str]:
        """Lines printed after the run (a sample, examples, a warning)."""
        return []
