"""Peak resident memory of a config-M training step, for one implementation per process.

    python -m benchmarks.memory minigrad|torch
"""
import json
import resource
import sys

from .train_step import CONFIGS, minigrad_step_seconds, torch_step_seconds


def main():
    impl = sys.argv[1]
    cfg, batch = CONFIGS["M"]
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if impl == "minigrad":
        minigrad_step_seconds(cfg, batch, steps=3)
    else:
        import torch  # noqa: F401  (imported before the baseline is read below)
        from minigrad_lm.models import GPT
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        torch_step_seconds(GPT(cfg), cfg, batch, steps=3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"impl": impl, "peak_rss_mib": peak / 1024,
                      "step_growth_mib": (peak - baseline) / 1024}))


if __name__ == "__main__":
    main()
