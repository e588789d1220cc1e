"""Mixed precision as in torch.amp: `autocast` runs the GEMMs (linear layers, attention) in
float16 while the parameters, their gradients and the optimizer state stay float32; `GradScaler`
scales the loss so that small float16 gradients do not flush to zero, and skips the steps whose
gradients overflowed.

    scaler = mg.amp.GradScaler()
    with mg.amp.autocast():                      # float16
        loss = model.loss(x, y)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)                         # optional: before clipping the true gradients
    clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(opt)                             # skipped when a gradient is inf or NaN
    scaler.update()                              # halve after a skip, double after N clean steps

Under autocast, nn.functional casts the inputs of linear and attention to float16 (each weight
is cast where it is used, so its gradient comes back float32), and those of layer_norm,
softmax, log_softmax and cross_entropy to float32: their statistics and sums stay float32, as
do the gradient norm (over the float32 gradients) and the loss scaler's checks.

Backends: NumPy has float16 storage and arithmetic but no float16 BLAS; its float16 GEMMs run as
float32 BLAS on the float16-rounded operands, rounded once (what a GPU's float16 GEMM with
float32 accumulation computes), and its float16 elementwise loops convert every element, so on
the CPU float16 checks the numerics and saves activation memory, not time. CuPy runs float16
GEMMs on cuBLAS. Neither has a bfloat16 dtype with arithmetic (ml_dtypes' bfloat16 is storage
for NumPy, without BLAS; CuPy has none), so bfloat16 is refused rather than emulated.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from .. import backend
from .tensor import Tensor

_dtype: np.dtype | None = None  # the autocast dtype while autocast is on

PRECISIONS = ("fp32", "fp16", "bf16")  # train --precision; bf16 is refused with NO_BFLOAT16
NO_BFLOAT16 = "neither NumPy nor CuPy has bfloat16 arithmetic; use float16 (fp16)"


def parse_dtype(dtype) -> np.dtype:
    """np.float16 or one of its names; bfloat16 and others raise a ValueError saying why."""
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if name in ("bf16", "bfloat16"):
        raise ValueError(f"autocast: bfloat16 is not supported: {NO_BFLOAT16}")
    if name not in ("fp16", "float16", "half"):
        raise ValueError(f"autocast: dtype must be float16, got {dtype!r}")
    return np.dtype(np.float16)


class autocast(contextlib.ContextDecorator):
    """Context manager and decorator: GEMMs in `dtype` (float16), reductions in float32."""

    def __init__(self, dtype=np.float16, enabled: bool = True):
        self.dtype = parse_dtype(dtype) if enabled else None

    def __enter__(self):
        global _dtype
        self._prev, _dtype = _dtype, self.dtype
        return self

    def __exit__(self, *exc):
        global _dtype
        _dtype = self._prev
        return False


def low_precision(x: Tensor) -> np.dtype | None:
    """The dtype a GEMM on float tensor x runs in under autocast, or None (no cast)."""
    return _dtype if _dtype is not None and x.dtype.kind == "f" else None


def full_precision(x: Tensor) -> bool:
    """Does a reduction on x need its input cast to float32 (autocast on, x in half)?"""
    return _dtype is not None and x.dtype == np.float16


class GradScaler:
    """Dynamic loss scaling (torch.amp.GradScaler's rules and names).

    The loss is multiplied by `scale` before backward; step() divides the gradients by it and
    skips the optimizer step when any is inf or NaN, update() then halves the scale (times
    backoff_factor), and doubles it (growth_factor) after growth_interval clean steps in a row.
    `skipped` counts the skipped steps. enabled=False makes every method a pass-through, so one
    training loop serves every precision.
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True):
        if not (init_scale > 0 and growth_factor > 1 and 0 < backoff_factor < 1
                and growth_interval >= 1):
            raise ValueError(f"GradScaler: need init_scale > 0, growth_factor > 1, 0 < "
                             f"backoff_factor < 1 and growth_interval >= 1; got {init_scale}, "
                             f"{growth_factor}, {backoff_factor}, {growth_interval}")
        self.enabled = enabled
        self.scale_value = float(init_scale)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.clean_steps = 0  # steps without inf/NaN since the last change of scale
        self.skipped = 0
        self._unscaled: dict[int, bool] = {}  # id(optimizer) -> were its gradients finite?

    def get_scale(self) -> float:
        return self.scale_value if self.enabled else 1.0

    def scale(self, loss: Tensor) -> Tensor:
        """loss * scale (the scale as a float32 constant, so a float16 loss becomes float32)."""
        if not self.enabled:
            return loss
        if loss.dtype != np.float32:
            loss = loss.astype(np.float32)
        return loss * np.float32(self.scale_value)

    def unscale_(self, optimizer) -> bool:
        """Divide optimizer's gradients by the scale in place, once per step; returns whether
        they are all finite (the norm and the check are float32)."""
        if not self.enabled:
            return True
        key = id(optimizer)
        if key not in self._unscaled:
            grads = optimizer.present_grads()
            for g in grads:
                g *= g.dtype.type(1.0 / self.scale_value)
            self._unscaled[key] = all(bool(backend.array_module(g).isfinite(g).all())
                                      for g in grads)
        return self._unscaled[key]

    def step(self, optimizer) -> bool:
        """optimizer.step() unless a gradient is inf or NaN; returns whether it stepped."""
        if not self.enabled:
            optimizer.step()
            return True
        finite = self.unscale_(optimizer)
        if finite:
            optimizer.step()
        return finite

    def update(self) -> None:
        """Adjust the scale after this step's step() calls (halve on overflow, grow after
        growth_interval clean steps)."""
        if not self.enabled:
            return
        if not self._unscaled:
            raise RuntimeError("GradScaler.update: call step(optimizer) first")
        if all(self._unscaled.values()):
            self.clean_steps += 1
            if self.clean_steps >= self.growth_interval:
                grown = self.scale_value * self.growth_factor
                if math.isfinite(grown) and grown <= np.finfo(np.float32).max:
                    self.scale_value = grown
                self.clean_steps = 0
        else:
            self.skipped += 1
            self.scale_value *= self.backoff_factor
            self.clean_steps = 0
        self._unscaled.clear()

    def state_dict(self) -> dict:
        return {"scale": self.scale_value, "growth_factor": self.growth_factor,
                "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval,
                "clean_steps": self.clean_steps, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.scale_value = float(state["scale"])
        self.growth_factor = float(state["growth_factor"])
        self.backoff_factor = float(state["backoff_factor"])
        self.growth_interval = int(state["growth_interval"])
        self.clean_steps, self.skipped = int(state["clean_steps"]), int(state["skipped"])
