"""``python -m minigrad_lm.train``: see minigrad_lm/train/trainer.py for the flags."""
import sys

from .trainer import main

sys.exit(main())
