"""LoRA (Hu et al., 2021): a trainable low-rank update beside a frozen Linear layer.

    y = x W^T + b + (alpha / r) (x A^T) B^T,   A: (r, in),  B: (out, r)

A starts Kaiming-uniform and B at zero (PEFT's init), so a fresh adapter changes nothing. Only
A and B train: W and b are frozen (requires_grad=False), so they get no gradient, no optimizer
state and no share of the optimizer's flat buffers. merge() folds the update into W for export.
"""
from __future__ import annotations

import math

from .. import backend
from ..engine import rng
from ..engine.tensor import Tensor
from . import functional as F
from .layers import Linear
from .module import Module, Parameter

__all__ = ["LoRALinear", "add_lora", "lora_layers", "merge_lora", "remove_lora"]


class LoRALinear(Linear):
    """A Linear (same weight and bias, frozen, same names) plus the adapter lora_A, lora_B."""

    def __init__(self, base: Linear, rank: int, alpha: float):
        Module.__init__(self)
        if not isinstance(rank, int) or rank < 1:
            raise ValueError(f"LoRA: rank must be a positive integer, got {rank!r}")
        if not alpha > 0:
            raise ValueError(f"LoRA: alpha must be > 0, got {alpha!r}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        for p in (self.weight, self.bias):
            if p is not None:
                p.requires_grad_(False)
        self.rank, self.alpha, self.scaling = rank, float(alpha), float(alpha) / rank
        w = base.weight
        bound = 1.0 / math.sqrt(self.in_features)  # kaiming_uniform_(a=sqrt(5)), as PEFT
        a = rng.host().uniform(-bound, bound, size=(rank, self.in_features))
        self.lora_A = Parameter(backend.to_device(a.astype(w.dtype), w.device))
        self.lora_B = Parameter(backend.xp_for(w.device).zeros((self.out_features, rank),
                                                               dtype=w.dtype))
        self.merged = False

    def delta(self):
        """The update (alpha / r) B A as an array of the weight's shape."""
        return (self.lora_B.data @ self.lora_A.data) * self.weight.dtype.type(self.scaling)

    def merge(self) -> None:
        """W += (alpha / r) B A: forward is then one GEMM (export, fast inference)."""
        if not self.merged:
            self.weight.data += self.delta()
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            self.weight.data -= self.delta()
            self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        # the scale goes on the (N, r) product, the smallest array on the way
        return y + F.linear(F.linear(x, self.lora_A) * self.scaling, self.lora_B)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, alpha={self.alpha:g}"


def lora_layers(model: Module) -> dict[str, LoRALinear]:
    """Dotted name -> LoRALinear of every adapted layer in `model`."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def add_lora(model: Module, targets, rank: int, alpha: float) -> list[str]:
    """Replace the Linear layers whose attribute name is in `targets` by LoRALinear and freeze
    every other parameter of `model`; returns the adapted layers' dotted names.

    Targets are Linear attribute names ("qkv", "out", "fc", "proj" in a GPT). A layer whose
    weight is shared with another module (a tied head) cannot be adapted alone and is refused.
    """
    targets = list(targets)
    found = {name.rsplit(".", 1)[-1] for name, m in model.named_modules()
             if isinstance(m, Linear) and name}
    unknown = [t for t in targets if t not in found]
    if not targets or unknown:
        raise ValueError(f"LoRA targets {unknown or targets} name no Linear layer of the model; "
                         f"its Linear layers are called {', '.join(sorted(found))}")
    counts: dict[int, int] = {}
    for m in model.modules():
        for p in m._parameters.values():
            counts[id(p)] = counts.get(id(p), 0) + 1
    adapted = []
    for prefix, parent in list(model.named_modules()):
        for attr, child in list(parent._modules.items()):
            if attr not in targets or not isinstance(child, Linear):
                continue
            name = f"{prefix}.{attr}" if prefix else attr
            if isinstance(child, LoRALinear):
                raise ValueError(f"LoRA: {name} already has an adapter")
            if counts[id(child.weight)] > 1:
                raise ValueError(f"LoRA: {name}.weight is shared with another layer (tied "
                                 "weights); it cannot take an adapter")
            setattr(parent, attr, LoRALinear(child, rank, alpha))
            adapted.append(name)
    adapters = {id(p) for m in lora_layers(model).values() for p in (m.lora_A, m.lora_B)}
    for p in model.parameters():
        if id(p) not in adapters:
            p.requires_grad_(False)
    return adapted


def merge_lora(model: Module) -> None:
    """Fold every adapter into its base weight (see LoRALinear.merge)."""
    for m in lora_layers(model).values():
        m.merge()


def remove_lora(model: Module, merge: bool) -> None:
    """Put plain Linear layers back, with the adapters merged into them or dropped."""
    for name, m in lora_layers(model).items():
        if merge:
            m.merge()
        else:
            m.unmerge()
        plain = Linear.__new__(Linear)
        Module.__init__(plain)
        plain.in_features, plain.out_features = m.in_features, m.out_features
        plain.weight, plain.bias = m.weight, m.bias
        parent = model
        for part in name.split(".")[:-1]:
            parent = parent._modules[part]
        setattr(parent, name.rsplit(".", 1)[-1], plain)
