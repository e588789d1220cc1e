"""Comparisons and logic (no gradient)."""
from __future__ import annotations

from ... import backend
from ..tensor import Tensor
from .common import _pair


def _compare(ufunc_name: str, a, b) -> Tensor:
    a, b = _pair(a, b)
    xp = backend.array_module(a.data)
    if a.device != b.device:
        raise RuntimeError(f"{ufunc_name}: tensors on different devices ({a.device} and "
                           f"{b.device})")
    return Tensor(getattr(xp, ufunc_name)(a.data, b.data))


def equal(a, b) -> Tensor:
    return _compare("equal", a, b)


def not_equal(a, b) -> Tensor:
    return _compare("not_equal", a, b)


def less(a, b) -> Tensor:
    return _compare("less", a, b)


def less_equal(a, b) -> Tensor:
    return _compare("less_equal", a, b)


def greater(a, b) -> Tensor:
    return _compare("greater", a, b)


def greater_equal(a, b) -> Tensor:
    return _compare("greater_equal", a, b)


def logical_not(x: Tensor) -> Tensor:
    return Tensor(backend.array_module(x.data).logical_not(x.data))
