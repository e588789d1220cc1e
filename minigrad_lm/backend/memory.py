"""How much memory a model needs, estimated from its config before anything is allocated.

A config read from a file or the command line can ask for a billion-wide layer; building it
would take minutes and then fail, or take the machine down with it. :func:`require` compares
the estimate with the memory the device has free and refuses what cannot fit, naming both.
"""

from __future__ import annotations

import os

from ..io.untrusted import InputError
from .devices import cupy, device_index

__all__ = ["MemoryEstimateError", "available_bytes", "gib", "inference_bytes",
           "parameter_count", "require", "training_bytes"]

FLOAT32 = 4


class MemoryEstimateError(InputError, MemoryError):
    """A config needs more memory than the device has: refused before allocating."""


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:,.1f} MiB"


def parameter_count(config, num_classes: int | None = None) -> int:
    """Trainable parameters of a GPT (and of a classifier head on it), counted from the
    config alone (Python ints: no overflow, whatever the sizes)."""
    v, t, c, n = config.vocab_size, config.context_length, config.d_model, config.n_layer
    norm = 2 * c if config.bias else c
    per_layer = 12 * c * c + 2 * norm + (9 * c if config.bias else 0)
    count = v * c + n * per_layer + norm
    count += t * c  # learned positions, or the sinusoidal table (a buffer of the same size)
    if not config.tie_weights:
        count += v * c
    if num_classes is not None:
        count += c * num_classes + num_classes
    return count


def _activations(config, batch: int, context: int, num_classes: int | None) -> int:
    """Values a forward pass keeps for backward: per layer and token about 17 d_model (norms,
    q/k/v, MLP in and out) plus the attention row; then the logits and their gradient."""
    c, h = config.d_model, config.n_head
    per_token = config.n_layer * (17 * c + h * context) + 2 * c
    per_token += 3 * (num_classes if num_classes is not None else config.vocab_size)
    return FLOAT32 * batch * context * per_token


def training_bytes(config, batch: int, context: int | None = None,
                   num_classes: int | None = None) -> tuple[int, str]:
    """(bytes, what they are) to train: weights, gradients and AdamW's two moments (four
    float32 copies) plus the activations of one micro-batch."""
    context = context or config.context_length
    weights = 4 * FLOAT32 * parameter_count(config, num_classes)
    acts = _activations(config, batch, context, num_classes)
    return weights + acts, (f"weights, gradients and AdamW moments {gib(weights)}, activations "
                            f"of a batch of {batch} x {context} tokens {gib(acts)}")


def inference_bytes(config, batch: int = 1, num_classes: int | None = None) -> tuple[int, str]:
    """(bytes, what they are) to run: the weights, a key/value cache over the context and one
    window's activations (nothing is kept for backward)."""
    t, c = config.context_length, config.d_model
    weights = FLOAT32 * parameter_count(config, num_classes)
    cache = FLOAT32 * batch * 2 * config.n_layer * t * c
    acts = FLOAT32 * batch * t * (8 * c + config.n_head * t)
    # A language model's logits cover every position; a classifier's one pooled row.
    acts += FLOAT32 * batch * (t * config.vocab_size if num_classes is None else num_classes)
    return weights + cache + acts, (f"weights {gib(weights)}, key/value cache and activations "
                                    f"{gib(cache + acts)}")


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_available() -> int | None:
    """What a container's memory limit (cgroup v2) still allows."""
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
            return max(0, int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        return None


def available_bytes(device: str = "cpu") -> tuple[int | None, str]:
    """(free bytes, where the number comes from); None when the system does not say."""
    if device != "cpu":
        cp = cupy()
        index = device_index(device) if ":" in device else 0
        return int(cp.cuda.Device(index).mem_info[0]), f"free on {device}"
    found = [(n, src) for n, src in ((_meminfo_available(), "available"),
                                     (_cgroup_available(), "left under the cgroup limit"))
             if n is not None]
    return min(found) if found else (None, "")


def require(nbytes: int, detail: str, what: str, device: str = "cpu") -> None:
    """Refuse ``what`` when ``nbytes`` is more than ``device`` has free."""
    free, source = available_bytes(device)
    if free is not None and nbytes > free:
        raise MemoryEstimateError(f"{what} needs about {gib(nbytes)} ({detail}), but only "
                                  f"{gib(free)} of memory is {source}")
