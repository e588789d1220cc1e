"""Tensor, Function and reverse-mode autograd.

The graph is made of Functions, not Tensors: each Function keeps the Functions (or leaf Tensors)
that produced its inputs, plus whatever arrays its backward needs. An intermediate Tensor that
the user drops is freed at once unless a Function saved its array, as in PyTorch.
backward() walks the graph iteratively (no recursion limit), sums gradients of values used more
than once, reduces broadcast gradients to the input's shape, and frees the graph when done.
Higher-order gradients are not supported: backward functions run on raw arrays.
"""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from .. import backend

_grad_enabled = True


class no_grad(contextlib.ContextDecorator):
    """Context manager and decorator: operations inside build no graph."""

    def __enter__(self):
        global _grad_enabled
        self._prev, _grad_enabled = _grad_enabled, False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._prev
        return False


class enable_grad(contextlib.ContextDecorator):
    """Context manager and decorator: operations inside build a graph, even under no_grad."""

    def __enter__(self):
        global _grad_enabled
        self._prev, _grad_enabled = _grad_enabled, True

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._prev
        return False


def is_grad_enabled() -> bool:
    return _grad_enabled


class Function:
    """One differentiable operation: forward on arrays, backward from output gradient to inputs.

    Subclasses implement `forward(*args)` (Tensor arguments arrive as arrays, other arguments as
    they are) and `backward(gy)` returning one gradient per positional argument (None where an
    argument is not a Tensor or needs no gradient; `self.needs_grad[i]` says which are needed).
    `self.xp` is the array module of the inputs. Save only what backward needs.
    backward may consume its saved arrays (reuse them as output storage) unless `self.retained`:
    the engine sets it when the graph is retained, and a later backward will need them again.
    """

    xp: Any
    # Per argument: does it need a gradient? Without a graph (no_grad, constants) forward sees
    # this all-False default, so it can skip saving what only backward would use.
    needs_grad: tuple = (False,) * 16
    retained: bool = False  # backward(retain_graph=True) is running: keep the saved arrays
    parents: tuple | None  # per argument: producing Function, leaf Tensor, or None
    shapes: tuple

    @classmethod
    def apply(cls, *args, **kwargs) -> "Tensor":
        fn = cls.__new__(cls)
        arrays = []
        record = False
        first = None
        for a in args:
            if isinstance(a, Tensor):
                if first is None:
                    first = a
                elif type(a.data) is not type(first.data) or (
                        type(a.data) is not np.ndarray and a.device != first.device):
                    raise RuntimeError(
                        f"{cls.__name__}: tensors on different devices ({first.device} and "
                        f"{a.device}); move them with .to(device) first")
                arrays.append(a.data)
                record = record or a.requires_grad
            else:
                arrays.append(a)
        fn.xp = np if first is None or type(first.data) is np.ndarray else backend.array_module(
            first.data)
        record = record and _grad_enabled
        if record:
            fn.needs_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
            fn.shapes = tuple(a.data.shape if isinstance(a, Tensor) else None for a in args)
        out = fn.forward(*arrays, **kwargs)
        if type(out) is not np.ndarray and isinstance(out, np.generic):
            out = np.asarray(out)  # NumPy reductions return scalars; keep arrays everywhere
        if not record:
            return Tensor(out)
        fn.parents = tuple(
            (a._ctx if a._ctx is not None else a) if isinstance(a, Tensor) and a.requires_grad
            else None for a in args)
        result = Tensor(out)
        result.requires_grad = True
        result._ctx = fn
        return result

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward is abstract")

    def backward(self, gy):
        raise NotImplementedError(f"{type(self).__name__}.backward is abstract")

    def release(self) -> None:
        """Drop saved arrays and the links to the inputs once backward has used them."""
        self.__dict__.clear()
        self.parents = None


def unbroadcast(grad, shape: tuple):
    """Sum a broadcast gradient back to `shape` (the one place that undoes broadcasting).

    Only broadcasting is undone: a gradient of another shape (a buggy backward's (3, 2) for a
    (2, 3) input) is an error, never a reshape."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    if lead < 0 or any(n != 1 and n != g for n, g in zip(shape, grad.shape[lead:])):
        raise RuntimeError(f"gradient of shape {grad.shape} cannot reduce to shape {shape}")
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


class Tensor:
    """An n-dimensional array on a device, with an optional gradient."""

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_grad_view", "__weakref__")
    __array_ufunc__ = None  # make NumPy defer to our reflected operators (np.float32(2) * t)

    def __init__(self, data, requires_grad: bool = False):
        self.data = data
        self.grad: Tensor | None = None
        self._ctx: Function | None = None
        self._grad_view = None  # preallocated gradient storage (a view into a flat buffer)
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ---- properties -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self) -> str:
        return "cpu" if type(self.data) is np.ndarray else backend.device_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and self.data.dtype.kind not in "fc":
            raise TypeError(f"only floating-point tensors can require gradients, got dtype "
                            f"{self.data.dtype} (shape {self.data.shape})")
        self.requires_grad = flag
        return self

    # ---- conversion -------------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The values as a host NumPy array (shares memory on the CPU, copies from a GPU)."""
        return backend.to_numpy(self.data)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def float(self) -> "Tensor":
        return self.to(dtype=np.float32)

    def double(self) -> "Tensor":
        return self.to(dtype=np.float64)

    def detach(self) -> "Tensor":
        return Tensor(self.data)

    # ---- autograd ---------------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's .grad that requires it."""
        run_backward(self, gradient, retain_graph)

    def zero_grad(self) -> None:
        self.grad = None

    # ---- python protocol --------------------------------------------------------------------
    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(", threshold=200)
        extras = []
        if self.dtype != np.float32:
            extras.append(f"dtype={self.dtype}")
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self._ctx is not None:
            extras.append(f"grad_fn={type(self._ctx).__name__}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extras) + ")"

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __bool__(self) -> bool:
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    __hash__ = object.__hash__

def _leaf_accumulate(leaf: Tensor, grad) -> None:
    """Add `grad` into leaf.grad; the first store copies, so no two leaves share an array."""
    if grad.dtype != leaf.data.dtype:
        grad = grad.astype(leaf.data.dtype)
    if leaf.grad is not None:
        leaf.grad.data += grad
    elif leaf._grad_view is not None:
        xp = backend.array_module(grad)
        xp.copyto(leaf._grad_view, grad)
        leaf.grad = Tensor(leaf._grad_view)
    else:
        leaf.grad = Tensor(grad.copy())


def _check_seed(root: Tensor, gradient):
    xp = backend.array_module(root.data)
    if gradient is None:
        if root.data.size != 1:
            raise RuntimeError(
                f"backward() on a tensor of shape {root.shape} needs an explicit gradient "
                "(only a scalar's gradient defaults to 1)")
        return xp.ones_like(root.data)
    g = gradient.data if isinstance(gradient, Tensor) else xp.asarray(gradient,
                                                                      dtype=root.dtype)
    if g.shape != root.shape:
        raise ValueError(f"backward: gradient shape {g.shape} does not match tensor shape "
                         f"{root.shape}")
    if not bool(xp.isfinite(g).all()):
        raise ValueError("backward: the gradient seed contains NaN or infinity")
    return g


def _topological_order(root_fn: Function) -> list:
    """Functions reachable from root_fn, each after every Function that consumes its output."""
    post, seen = [], set()
    stack = [(root_fn, False)]
    while stack:
        fn, done = stack.pop()
        if done:
            post.append(fn)
            continue
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        if fn.parents is None:
            raise RuntimeError(
                "backward through a graph that was already freed by an earlier backward(); "
                "pass retain_graph=True to the first backward() to keep it")
        stack.append((fn, True))
        for p in fn.parents:
            if p is not None and not isinstance(p, Tensor) and id(p) not in seen:
                stack.append((p, False))
    post.reverse()
    return post


def run_backward(root: Tensor, gradient=None, retain_graph: bool = False) -> None:
    if not root.requires_grad:
        raise RuntimeError("backward() on a tensor that does not require grad (no leaf of its "
                           "graph has requires_grad=True, or it was computed under no_grad)")
    seed = _check_seed(root, gradient)
    if type(seed) is np.ndarray:
        backend.tuning.engine_started()  # the host allocator's one setting (backend/tuning.py)
    if root._ctx is None:
        _leaf_accumulate(root, seed)
        return
    backprop(root._ctx, seed, retain_graph)


def backprop(root_fn: Function, seed, retain_graph: bool = False) -> None:
    """Propagate the gradient `seed` of root_fn's output to every leaf below it (unchecked:
    run_backward checks the seed first)."""
    grads = {id(root_fn): seed}
    for fn in _topological_order(root_fn):
        gy = grads.pop(id(fn), None)
        if gy is None:  # no gradient reached it (e.g. only integer outputs used)
            if not retain_graph:
                fn.release()
            continue
        if retain_graph:
            fn.retained = True
        gxs = fn.backward(gy)
        for parent, need, shape, gx in zip(fn.parents, fn.needs_grad, fn.shapes, gxs):
            if not need or gx is None:
                continue
            if gx.shape != shape:
                gx = unbroadcast(gx, shape)
            if isinstance(parent, Tensor):
                _leaf_accumulate(parent, gx)
            else:
                key = id(parent)
                prev = grads.get(key)
                grads[key] = gx if prev is None else prev + gx
        if not retain_graph:
            fn.release()
