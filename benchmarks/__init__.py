"""Benchmarks (python -m benchmarks.<name>). They measure the package as its command-line tools
run it: with the process-wide CPU tuning on (minigrad_lm.backend.tuning)."""
import minigrad_lm.backend

minigrad_lm.backend.tune_for_training()
