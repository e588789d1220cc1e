"""The training application: the config and its flags (config.py), the loop (trainer.py), the
tasks (tasks/), the run folder while a run writes it (run_folder.py) and data parallelism
(distributed.py). Checkpoints are read and written by :mod:`minigrad_lm.checkpoints`.
``python -m minigrad_lm.train`` runs :func:`main`."""
from .config import TrainConfig
from .trainer import Trainer, main
