"""Learning-rate schedules: linear warmup, then cosine decay to a floor (or constant).
"""
from __future__ import annotations

import math

from .optimizers import Optimizer


def lr_at(step: int, lr: float, min_lr: float = 0.0, warmup_steps: int = 0,
          decay_steps: int | None = None, schedule: str = "cosine") -> float:
    """Learning rate at `step` (0-based): linear warmup, then constant or a cosine from lr down to
    min_lr, reached at decay_steps (warmup included) and kept after."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant" or decay_steps is None:
        return lr
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}: use 'constant' or 'cosine'")
    span = max(decay_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


class LRScheduler:
    """Sets every group's lr to lr_at(the optimizer's step count, the group's initial lr); a
    group's ``lr_scale`` (layer-wise lr decay) scales its floor ``min_lr`` too.

    The lr depends on the step alone, and the step is the optimizer's own count, restored with
    its state: a resumed (or broadcast) optimizer continues the schedule where it stopped.
    step() is idempotent between optimizer steps, so it may be called before or after each.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 0,
                 decay_steps: int | None = None, min_lr: float = 0.0, schedule: str = "cosine"):
        self.optimizer, self.warmup_steps, self.decay_steps = optimizer, warmup_steps, decay_steps
        self.min_lr, self.schedule = min_lr, schedule
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.min_lrs = [min_lr * g.get("lr_scale", 1.0) for g in optimizer.param_groups]
        self.step()

    def step(self) -> None:
        """Set the lr of the optimizer's next step."""
        for g, base, floor in zip(self.optimizer.param_groups, self.base_lrs, self.min_lrs):
            g["lr"] = lr_at(self.optimizer.step_count, base, floor, self.warmup_steps,
                            self.decay_steps, self.schedule)

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]
