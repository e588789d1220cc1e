"""Checkpoints outside training: a checkpoint folder's files, written and read with every
file checked (:mod:`.folder`), each task's kind of checkpoint (:mod:`.kinds`), and a run's
metrics log (:mod:`.metrics`). Below ``train/``, so the inference commands never load it."""
