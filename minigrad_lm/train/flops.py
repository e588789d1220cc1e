"""Model FLOP utilisation: the FLOP/s a run achieves over the device's peak. A utilisation
above 100% is never true, so the peak is never taken below a rate the run has shown.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from .. import backend

__all__ = ["Peak", "measure_peak_flops"]

# Re-measurements a run may make when it beats the peak measured so far (each costs a moment).
MAX_REPROBES = 3


def measure_peak_flops(device: str, seconds: float = 0.2) -> float:
    """Float32 matmul FLOP/s on ``device``: the denominator of MFU when none is configured.

    The fastest of many timed matmuls counts, so a busy machine (another process taking the
    cores for a moment) lowers the estimate far less than an average would.
    """
    xp = backend.xp_for(device)
    n = 512 if device == "cpu" else 4096  # large enough to keep the device busy
    a = xp.full((n, n), 0.5, dtype=np.float32)
    b = xp.full((n, n), 0.25, dtype=np.float32)

    def sync():
        if device != "cpu":
            xp.cuda.Device(backend.device_index(device)).synchronize()

    a @ b  # warm-up: thread pools, kernels
    sync()
    fastest, start = math.inf, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        sync()
        fastest = min(fastest, time.perf_counter() - t0)
    return 2.0 * n**3 / fastest


class Peak:
    """The device's peak FLOP/s, the denominator of MFU: ``--peak-flops``, or the fastest of
    timed matmuls. A busy moment can only make a measurement too low; when the run then
    achieves more, the peak is measured again (a few times per run) and never left below the
    achieved rate, so MFU is at most 100%."""

    def __init__(self, device: str, configured: float | None,
                 measure: Callable[[str, float], float] = measure_peak_flops):
        self.device, self.configured, self._measure = device, configured, measure
        self.flops = configured if configured else measure(device, 0.2)
        self.reprobes = 0
        self.raised_to_achieved = False  # the run outran every measurement (or --peak-flops)

    @property
    def source(self) -> str:
        return "configured" if self.configured else "measured"

    def remeasure(self, seconds: float = 0.1) -> None:
        """Measure again (at an evaluation, say) and keep the highest."""
        if not self.configured:
            self.flops = max(self.flops, self._measure(self.device, seconds))

    def utilisation(self, flops_per_s: float) -> float:
        """``flops_per_s`` over the peak, at most 1."""
        if flops_per_s > self.flops and not self.configured and self.reprobes < MAX_REPROBES:
            self.reprobes += 1
            self.remeasure()
        if flops_per_s > self.flops:
            self.flops, self.raised_to_achieved = flops_per_s, True
        return flops_per_s / self.flops
