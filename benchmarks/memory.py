"""Peak resident memory of a config-M training step, for one implementation per process.

    python -m benchmarks.memory minigrad|torch

Reads the kernel's high-water mark (VmHWM) rather than getrusage: ru_maxrss survives exec, so a
child of a large benchmark process would report its parent's peak.
"""
import json
import sys

from .train_step import CONFIGS, minigrad_step_seconds, torch_step_seconds


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def main():
    impl = sys.argv[1]
    cfg, batch = CONFIGS["M"]
    if impl == "minigrad":
        baseline = peak_rss_mib()
        minigrad_step_seconds(cfg, batch, steps=3)
    else:
        import torch  # noqa: F401  (its import is not part of the step)
        from minigrad_lm.models import GPT
        model = GPT(cfg)
        baseline = peak_rss_mib()
        torch_step_seconds(model, cfg, batch, steps=3)
    peak = peak_rss_mib()
    print(json.dumps({"impl": impl, "peak_rss_mib": peak, "step_growth_mib": peak - baseline}))


if __name__ == "__main__":
    main()
