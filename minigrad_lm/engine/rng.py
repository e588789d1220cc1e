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


def draw_seed(device: str) -> int:
    """A 63-bit seed from `device`'s generator, for a counter-based draw (counter_uniform)."""
    gen = for_device(device)
    return int(gen.integers(0, 2 ** 63, dtype=np.int64)) if device == "cpu" else int(
        backend.to_numpy(gen.integers(0, 2 ** 63, size=1, dtype=np.int64))[0])


_GOLDEN = 0x9E3779B97F4A7C15
_MIX_1, _MIX_2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def counter_uniform(xp, seed: int, counters):
    """Uniform float32 in [0, 1) as a pure function of (seed, counter): SplitMix64's finalizer
    on seed * golden + counter. Any block of a large random array can be drawn on its own and
    drawn again identically (tiled attention's dropout mask, forward and backward)."""
    z = counters.astype(xp.uint64) + xp.uint64((seed * _GOLDEN) % 2 ** 64)
    z ^= z >> xp.uint64(30)
    z *= xp.uint64(_MIX_1)
    z ^= z >> xp.uint64(27)
    z *= xp.uint64(_MIX_2)
    z ^= z >> xp.uint64(31)
    return (z >> xp.uint64(40)).astype(xp.float32) * xp.float32(2.0 ** -24)
