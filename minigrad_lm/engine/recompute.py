"""Activation recompute (the idea of torch.utils.checkpoint): keep a function's inputs instead of
its intermediates, and run it again during backward to get them back.

    from minigrad_lm.engine.recompute import checkpoint  # also mg.recompute.checkpoint
    y = checkpoint(block, x)             # block's activations are not kept; backward reruns it

The forward runs under no_grad, so none of its intermediate arrays stay alive; only the inputs
are saved. Backward restores the random generators to their state before the forward (dropout
draws the same masks), reruns the function with a graph, backpropagates through that graph (the
parameters it uses get their gradients there) and puts the generators back where they were.
On the CPU the recomputed values, hence the gradients, are bit-identical to a run without
recompute. A retained graph recomputes on every backward, so its second backward is correct too.
"""
from __future__ import annotations

import warnings
from typing import Callable, Iterable

from .. import backend
from . import rng
from .tensor import Function, Tensor, backprop, enable_grad, is_grad_enabled, no_grad

__all__ = ["Checkpoint", "checkpoint"]


class Checkpoint(Function):
    """y = fn(*args), saving only args and the random state; backward reruns fn."""

    def forward(self, *arrays, fn, is_tensor):
        record = any(self.needs_grad[:len(arrays)])
        self.n_params = len(arrays) - len(is_tensor)
        arrays = arrays[:len(is_tensor)]  # the parameters only make the graph record this
        devices = sorted({"cpu"} | {backend.device_of(a) for a, t in zip(arrays, is_tensor) if t})
        states = [(d, rng.snapshot(d)) for d in devices] if record else None
        with no_grad():
            out = fn(*_wrap(arrays, is_tensor))
        if not isinstance(out, Tensor):
            raise TypeError(f"checkpoint: the function must return one Tensor, got "
                            f"{type(out).__name__}")
        if record:
            self.fn, self.arrays, self.is_tensor, self.states = fn, arrays, is_tensor, states
        return out.data

    def backward(self, gy):
        live = [(d, rng.snapshot(d)) for d, _ in self.states]
        for device, state in self.states:
            rng.restore(device, state)
        try:
            inputs = _wrap(self.arrays, self.is_tensor, self.needs_grad)
            with enable_grad():
                out = self.fn(*inputs)
        finally:
            for device, state in live:
                rng.restore(device, state)
        if out.requires_grad:
            if out._ctx is None:  # fn returned one of its inputs
                out.grad = Tensor(gy)
            else:
                backprop(out._ctx, gy)
        # the parameters got theirs from the inner backward
        return tuple(t.grad.data if isinstance(t, Tensor) and t.grad is not None else None
                     for t in inputs) + (None,) * self.n_params


def _wrap(arrays, is_tensor, needs_grad=None):
    """Fresh leaf Tensors for the array arguments (requiring grad where the outer graph needs
    their gradient); other arguments as they are."""
    return [Tensor(a, requires_grad=bool(needs_grad and needs_grad[i])) if t else a
            for i, (a, t) in enumerate(zip(arrays, is_tensor))]


def checkpoint(fn: Callable[..., Tensor], *args, params: Iterable[Tensor] = ()) -> Tensor:
    """fn(*args) without keeping its intermediate activations: backward recomputes them.

    args may mix Tensors and other values (passed through). fn must return one Tensor and must
    not depend on state that changes between the forward and the backward (other than the
    random generators, which are replayed). The parameters fn uses get their gradients from the
    recomputation; list them in `params` (a Module's own are found) so that the backward runs
    even when no argument requires grad, as with a frozen layer before fn (LoRA).
    """
    is_tensor = tuple(isinstance(a, Tensor) for a in args)
    if not params and callable(getattr(fn, "parameters", None)):  # a Module
        params = fn.parameters()
    trainable = [p for p in params if p.requires_grad]
    if is_grad_enabled() and not trainable and not any(
            a.requires_grad for a in args if isinstance(a, Tensor)):
        warnings.warn("checkpoint: no Tensor argument or listed parameter requires grad, so "
                      "the parameters fn uses get no gradient; pass them as params=",
                      stacklevel=2)
    return Checkpoint.apply(*args, *trainable, fn=fn, is_tensor=is_tensor)
