"""How much memory a model needs, estimated from its config before anything is allocated.

A config read from a file or the command line can ask for a billion-wide layer; building it
would take minutes and then fail, or take the machine down with it. :func:`require` compares
the estimate with the memory the device has free and refuses what cannot fit, naming both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from ..io.untrusted import InputError
from .devices import cupy, device_index

__all__ = ["Head", "MemoryEstimateError", "ModelShape", "available_bytes", "gib",
           "inference_bytes", "require", "training_bytes"]

FLOAT32 = 4


@dataclass(frozen=True)
class Head:
    """A task's output layer when it is not the vocabulary projection: its own parameters and
    its outputs per row (a classifier's classes)."""

    parameters: int = 0
    outputs: int | None = None  # None: logits over the vocabulary at every position


class MemoryEstimateError(InputError, MemoryError):
    """A config needs more memory than the device has: refused before allocating."""


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:,.1f} MiB"


class ModelShape(Protocol):
    """What a model config tells the estimates of memory and FLOPs (GPTConfig,
    Seq2SeqConfig, ...)."""

    vocab_size: int
    context_length: int
    n_layer: int
    n_head: int
    d_model: int

    def parameter_count(self) -> int: ...
    def buffer_count(self) -> int: ...
    def kept_per_token(self, context: int) -> int: ...
    def cache_per_token(self) -> int: ...
    def flops_per_token(self, head_share: float = 1.0) -> float: ...


def training_bytes(config: ModelShape, batch: int, context: int | None = None,
                   head: Head | None = None) -> tuple[int, str]:
    """(bytes, what they are) to train: weights, gradients and AdamW's two moments (four
    float32 copies) plus the activations of one micro-batch and the output layer's logits and
    their gradient."""
    context = context or config.context_length
    head = head or Head()
    weights = FLOAT32 * (4 * (config.parameter_count() + head.parameters)
                         + config.buffer_count())
    outputs = head.outputs if head.outputs is not None else config.vocab_size
    acts = FLOAT32 * batch * context * (config.kept_per_token(context) + 3 * outputs)
    return weights + acts, (f"weights, gradients and AdamW moments {gib(weights)}, activations "
                            f"of a batch of {batch} x {context} tokens {gib(acts)}")


def inference_bytes(config: ModelShape, batch: int = 1, head: Head | None = None
                    ) -> tuple[int, str]:
    """(bytes, what they are) to run: the weights, a key/value cache over the context and one
    window's activations (nothing is kept for backward)."""
    t, head = config.context_length, head or Head()
    weights = FLOAT32 * (config.parameter_count() + head.parameters + config.buffer_count())
    cache = FLOAT32 * batch * t * config.cache_per_token()
    acts = FLOAT32 * batch * t * (8 * config.d_model + config.n_head * t)
    # A language model's logits cover every position; a classifier's one pooled row.
    acts += FLOAT32 * batch * (t * config.vocab_size if head.outputs is None else head.outputs)
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
