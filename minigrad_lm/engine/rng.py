"""Random number state: one seeded NumPy generator for values drawn on the host (initial weights,
batches) and one CuPy generator per GPU for dropout masks drawn on the device.

Weights are always drawn on the host and then moved, so a model initialised with the same seed
is identical on every device. The host state is JSON-serializable for exact resume.
"""
from __future__ import annotations

import numpy as np

from .. import backend

_host = np.random.default_rng(0)
_device_generators: dict = {}
_seed = 0


def manual_seed(seed: int) -> None:
    """Seed every generator minigrad_lm uses (host and GPUs)."""
    global _host, _seed
    _seed = int(seed)
    _host = np.random.default_rng(_seed)
    _device_generators.clear()


def host() -> np.random.Generator:
    return _host


def for_device(device: str):
    """The generator that draws arrays directly on `device`."""
    if device == "cpu":
        return _host
    gen = _device_generators.get(device)
    if gen is None:
        cp = backend.cupy()
        with cp.cuda.Device(backend.device_index(device)):
            gen = cp.random.default_rng(_seed + 1 + backend.device_index(device))
        _device_generators[device] = gen
    return gen


def get_state() -> dict:
    """JSON-serializable state of the host generator (what exact resume on the CPU needs)."""
    return {"seed": _seed, "bit_generator": _host.bit_generator.state}


def set_state(state: dict) -> None:
    global _seed
    _seed = int(state["seed"])
    _host.bit_generator.state = state["bit_generator"]
    _device_generators.clear()


def snapshot(device: str):
    """The state of `device`'s generator, for restore(): a recomputed forward replays the same
    dropout masks (minigrad_lm.recompute)."""
    gen = for_device(device)
    if device == "cpu":
        return gen.bit_generator.state
    # CuPy keeps its cuRAND states in one device array (about 13 MB on an H200): copy it
    return gen.bit_generator._state.copy()


def restore(device: str, state) -> None:
    gen = for_device(device)
    if device == "cpu":
        gen.bit_generator.state = state
    else:
        gen.bit_generator._state[...] = state
