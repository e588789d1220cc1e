"""Learning-rate schedules: linear warmup, then cosine decay to a floor (or constant).
"""
from __future__ import annotations

import math

from .optimizers import Optimizer


def lr_at(step: int, lr: float, min_lr: float = 0.0, warmup_steps: int = 0,
          max_steps: int | None = None, schedule: str = "cosine") -> float:
    """Learning rate at `step` (0-based): linear warmup, then constant or cosine decay to min_lr."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant" or max_steps is None:
        return lr
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}: use 'constant' or 'cosine'")
    span = max(max_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


class LRScheduler:
    """Sets every group's lr from lr_at() each step(): warmup then cosine (or constant)."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 0, max_steps: int | None = None,
                 min_lr: float = 0.0, schedule: str = "cosine"):
        self.optimizer, self.warmup_steps, self.max_steps = optimizer, warmup_steps, max_steps
        self.min_lr, self.schedule = min_lr, schedule
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def _apply(self) -> None:
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = lr_at(self.last_step, base, self.min_lr, self.warmup_steps, self.max_steps,
                            self.schedule)

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]
