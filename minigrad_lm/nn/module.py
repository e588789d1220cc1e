"""Module, Parameter, ModuleList, Sequential: the PyTorch habits, on minigrad_lm tensors."""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Iterator

import numpy as np

from .. import backend
from ..engine.tensor import Tensor


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable (requires_grad=True by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self) -> str:
        return "Parameter(" + super().__repr__() + ")"


class Module:
    """Base class: Parameters and Modules assigned as attributes register themselves."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 "before assigning attributes")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__}.forward is abstract")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- traversal ---------------------------------------------------------------------------
    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        return (m for _, m in self.named_modules())

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, parameter) in registration order; a shared parameter appears once."""
        seen = set()
        for prefix, m in self.named_modules():
            for name, p in m._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{prefix}.{name}" if prefix else name), p

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters()))

    # ---- modes and devices -------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, flag: bool = True) -> "Module":
        """Freeze (False) or unfreeze every parameter: a frozen one gets no gradient, and an
        optimizer created afterwards keeps no state for it."""
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    def num_trainable_parameters(self) -> int:
        return int(sum(p.size for p in self.parameters() if p.requires_grad))

    def to(self, device: str) -> "Module":
        """Move every parameter (and tensor buffer) to `device`, in place."""
        device = backend.normalize_device(device)
        for m in self.modules():
            for value in m.__dict__.values():
                if isinstance(value, Tensor) and value.device != device:
                    value.data = backend.to_device(value.data, device)
                    value.grad = None
                    value._grad_view = None
        return self

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Name -> host NumPy copy of each parameter (shared parameters under their first name)."""
        return OrderedDict((name, p.numpy().copy()) for name, p in self.named_parameters())

    def load_state_dict(self, state: dict, strict: bool = True) -> tuple[list, list]:
        """Copy arrays into the parameters in place (names, shapes and dtypes checked).

        Returns (missing, unexpected) key lists; with strict=True any of them raises a KeyError
        that names them. A shape or dtype mismatch always raises ValueError.
        """
        own = dict(self.named_parameters())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys "
                           f"{unexpected}")
        mismatched = []
        for name, p in own.items():
            if name not in state:
                continue
            value = state[name]
            arr = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
            if arr.shape != p.shape or arr.dtype != p.dtype:
                mismatched.append(f"{name}: checkpoint {arr.shape} {arr.dtype} vs model "
                                  f"{p.shape} {p.dtype}")
        if mismatched:
            raise ValueError("load_state_dict: mismatched parameters: " + "; ".join(mismatched))
        for name, p in own.items():
            if name in state:
                value = state[name]
                arr = value.data if isinstance(value, Tensor) else np.asarray(value)
                xp = backend.array_module(p.data)
                xp.copyto(p.data, backend.to_device(arr, p.device))
        return missing, unexpected

    # ---- printing ----------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  {self.extra_repr()}"] if self.extra_repr() else []
        for name, m in self._modules.items():
            child = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules, registered under their indices."""

    def __init__(self, modules: Iterable[Module] = ()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> None:
        setattr(self, str(len(self._modules)), module)

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Modules applied one after another."""

    def __init__(self, *modules: Module):
        super().__init__(modules)

    def forward(self, x):
        for m in self:
            x = m(x)
        return x
