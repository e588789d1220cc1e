"""The training application: the config and its flags (config.py), the loop (trainer.py), the
tasks (tasks/), run folders with crash-safe checkpoints (checkpoint.py) and data parallelism
(distributed.py). ``python -m minigrad_lm.train`` runs :func:`main`."""
from .config import TrainConfig
from .trainer import Trainer, main
