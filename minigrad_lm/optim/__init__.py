"""Optimizers over flat buffers (SGD, Adam, AdamW), gradient clipping, weight-decay groups and
the learning-rate schedule."""
from .optimizers import SGD, Adam, AdamW, Optimizer, clip_grad_norm_, decay_groups
from .schedules import LRScheduler, lr_at
