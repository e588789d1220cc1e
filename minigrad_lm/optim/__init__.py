"""Optimizers over flat buffers (SGD, Adam, AdamW), gradient clipping, parameter groups and the
learning-rate schedule."""
from .optimizers import SGD, Adam, AdamW, Optimizer, clip_grad_norm_, param_groups
from .schedules import LRScheduler, lr_at
