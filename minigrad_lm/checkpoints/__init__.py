"""Checkpoints outside training: what each task's checkpoint holds and how its model comes
back (:mod:`.kinds`)."""
