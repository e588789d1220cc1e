"""Gradient checking by central differences in float64."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .. import backend
from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """Analytic and numeric gradients disagree (the message names input, element and values)."""


def gradcheck(fn: Callable[..., Tensor], inputs: Sequence[Tensor], eps: float = 1e-6,
              atol: float = 1e-5, rtol: float = 1e-4, seed: int = 0) -> bool:
    """Compare backward() with central differences for every element of every float input.

    Float inputs are copied to float64 and made to require grad; others pass through unchanged.
    Inputs that are already float64 and require grad are used as they are (their .grad is reset),
    so fn may also reach them by closure: `gradcheck(lambda *ps: model.loss(x, y),
    model.parameters())` checks a float64 model's every parameter. The output is contracted with
    a random upstream gradient (not just summed), which backward must leave unmodified.

    Returns:
        True when every gradient matches; otherwise raises GradcheckError naming the input, the
        worst element's index, and the analytic and numeric values.
    """
    args = [t if _checked_in_place(t) else
            Tensor(t.data.astype(np.float64), requires_grad=True)
            if isinstance(t, Tensor) and t.dtype.kind == "f" else t for t in inputs]
    for t in args:
        if isinstance(t, Tensor):
            t.grad = None
    out = fn(*args)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    upstream = backend.to_device(
        np.asarray(np.random.default_rng(seed).standard_normal(out.shape)), out.device)
    upstream_copy = upstream.copy()
    out.backward(upstream)
    if not bool((upstream == upstream_copy).all()):
        raise GradcheckError("gradcheck: backward modified the upstream gradient in place")

    def contracted() -> float:
        with no_grad():
            return float((fn(*args).data * upstream).sum())

    for i, t in enumerate(args):
        if not (isinstance(t, Tensor) and t.requires_grad):
            continue
        analytic = np.zeros(t.shape) if t.grad is None else backend.to_numpy(t.grad.data)
        if analytic.shape != t.shape:
            raise GradcheckError(f"gradcheck: input {i} has shape {t.shape} but its gradient has "
                                 f"shape {analytic.shape}")
        numeric = np.zeros(t.shape)
        flat = t.data.reshape(-1)  # a view: perturbing it perturbs the input
        for j in range(t.size):
            orig = float(flat[j])
            flat[j] = orig + eps
            plus = contracted()
            flat[j] = orig - eps
            minus = contracted()
            flat[j] = orig
            numeric.reshape(-1)[j] = (plus - minus) / (2 * eps)
        err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        if err.size and (err.max() > 0 or not np.isfinite(analytic).all()):
            worst = np.unravel_index(int(np.nanargmax(np.where(np.isfinite(err), err, np.inf))),
                                     t.shape)
            raise GradcheckError(
                f"gradcheck: input {i} (shape {t.shape}) element {tuple(int(k) for k in worst)}:"
                f" analytic {analytic[worst]:.8g} vs numeric {numeric[worst]:.8g} "
                f"(atol={atol}, rtol={rtol})")
    return True


def _checked_in_place(t) -> bool:
    return isinstance(t, Tensor) and t.requires_grad and t.dtype == np.float64
