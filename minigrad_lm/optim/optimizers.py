"""SGD, Adam and AdamW over flat buffers; gradient clipping; weight-decay groups.

Each parameter group's parameters and gradients become views into one contiguous buffer per
group, so an update is a few whole-buffer array operations (no Python loop over parameters, no
host round trip) and a gradient all-reduce is one call. Create the optimizer after moving the
model to its device; load_state_dict copies in place and keeps the views.
"""
from __future__ import annotations

import re
from typing import Iterable

import numpy as np

from .. import backend
from ..backend import kernels
from ..engine.tensor import Tensor


class FlatGroup:
    """One parameter group: its hyperparameters and the flat data/grad buffers behind its views."""

    def __init__(self, params: list[Tensor], options: dict):
        if not params:
            raise ValueError("optimizer: a parameter group has no parameters")
        devices = {p.device for p in params}
        dtypes = {p.dtype for p in params}
        if len(devices) > 1 or len(dtypes) > 1:
            raise ValueError(f"optimizer: a parameter group mixes devices {sorted(devices)} or "
                             f"dtypes {sorted(map(str, dtypes))}")
        self.params, self.options = params, options
        xp = backend.array_module(params[0].data)
        self.xp = xp
        sizes = [p.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        total = int(self.offsets[-1])
        self.data = xp.empty(total, dtype=params[0].dtype)
        self.grad = xp.zeros(total, dtype=params[0].dtype)
        for p, lo, hi in zip(params, self.offsets[:-1], self.offsets[1:]):
            self.data[lo:hi] = p.data.reshape(-1)
            p.data = self.data[lo:hi].reshape(p.shape)
            p._grad_view = self.grad[lo:hi].reshape(p.shape)
            p.grad = None
        self._views = [p.data for p in params]
        self._scratch = None
        # updates each parameter has received (torch counts per parameter: one whose gradient
        # arrives late gets a fully bias-corrected first step)
        self.steps = np.zeros(len(params), dtype=np.int64)

    def check_views(self) -> None:
        """Refuse to update parameters that were replaced after the optimizer was built."""
        for p, view in zip(self.params, self._views):
            if p.data is not view:
                raise RuntimeError("optimizer: a parameter's array was replaced after the "
                                   "optimizer was created (e.g. by model.to(device)); create "
                                   "the optimizer after moving the model")

    def adopt_assigned_grads(self) -> None:
        """Copy gradients assigned by hand (p.grad = ...) into the flat buffer that the update
        reads; p.grad becomes a view of it again, as after backward."""
        for p in self.params:
            if p.grad is not None and p.grad.data is not p._grad_view:
                if p.grad.shape != p.shape:
                    raise ValueError(f"optimizer: a gradient of shape {p.grad.shape} was "
                                     f"assigned to a parameter of shape {p.shape}")
                self.xp.copyto(p._grad_view, backend.to_device(p.grad.data, p.device))
                p.grad = Tensor(p._grad_view)

    def scratch(self):
        """A temporary as large as the group, allocated once (not part of the saved state)."""
        if self._scratch is None:
            self._scratch = self.xp.empty_like(self.data)
        return self._scratch

    def count_step(self) -> list[tuple[slice, int]]:
        """Count a step for the parameters that have a gradient; return the parts of the buffer
        to update with their step number: the whole buffer when all parameters are in step
        (the usual case), else one part per run of neighbours with gradients and equal steps."""
        has = [p.grad is not None for p in self.params]
        if all(has):
            self.steps += 1
            if self.steps[0] == self.steps[-1] and (self.steps == self.steps[0]).all():
                return [(slice(None), int(self.steps[0]))]
        else:
            self.steps[has] += 1
        parts: list[tuple[slice, int]] = []
        for i in np.flatnonzero(has):
            lo, hi, t = int(self.offsets[i]), int(self.offsets[i + 1]), int(self.steps[i])
            if parts and parts[-1][0].stop == lo and parts[-1][1] == t:
                parts[-1] = (slice(parts[-1][0].start, hi), t)
            else:
                parts.append((slice(lo, hi), t))
        return parts


class Optimizer:
    """Base: parameter groups as dicts (PyTorch's `param_groups`), flat state, zero_grad."""

    defaults: dict = {}

    def __init__(self, params, **options):
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.groups: list[FlatGroup] = []
        seen = set()
        for i, g in enumerate(groups):
            ps = list(g["params"])
            for p in ps:
                if id(p) in seen:
                    raise ValueError("optimizer: a parameter appears in more than one group")
                seen.add(id(p))
            # frozen parameters (requires_grad=False) get no state and no share of the buffers
            trainable = [p for p in ps if p.requires_grad]
            if ps and not trainable:
                raise ValueError(f"optimizer: all {len(ps)} parameters of group {i} are frozen "
                                 "(requires_grad=False); leave the group out")
            ps = trainable
            opts = {**self.defaults, **options, **{k: v for k, v in g.items() if k != "params"}}
            self.groups.append(FlatGroup(ps, opts))
        self.step_count = 0
        self.state: list[dict] = [{} for _ in self.groups]

    @property
    def param_groups(self) -> list[dict]:
        """Hyperparameters per group; assign e.g. group["lr"] to change the learning rate."""
        return [g.options for g in self.groups]

    def grad_buffers(self) -> list:
        """The flat gradient buffer of each group (every gradient is a view into one): what a
        gradient all-reduce sums in place."""
        return [g.grad for g in self.groups]

    def present_grads(self) -> list:
        """The gradient array of every parameter that has one this step (what a loss scaler
        unscales and checks; the flat buffers also hold stale values of the others)."""
        return [p.grad.data for g in self.groups for p in g.params if p.grad is not None]

    def param_buffers(self) -> list:
        """The flat parameter buffer of each group: what a replica check compares."""
        return [g.data for g in self.groups]

    def buffers(self) -> list:
        """Every flat buffer: the parameters, then each group's state by name (a replica that
        holds another's copy of all of them takes the same steps)."""
        return self.param_buffers() + [st[name] for st in self.state for name in sorted(st)]

    def counts(self) -> tuple[int, list[np.ndarray], list[list[str]]]:
        """The step counts and the names of the state buffers: the rest of a replica's state."""
        return (self.step_count, [g.steps.copy() for g in self.groups],
                [sorted(st) for st in self.state])

    def load_counts(self, counts: tuple[int, list[np.ndarray], list[list[str]]]) -> None:
        """Take another replica's counts(), allocating the state buffers it names (zeros until
        its buffers() are copied in)."""
        self.step_count, steps, names = counts
        for i, (g, group_steps, keys) in enumerate(zip(self.groups, steps, names)):
            g.steps = np.array(group_steps, dtype=np.int64)
            self.state[i] = {key: self._buffer(g, self.state[i], key) for key in keys}

    def layout(self) -> list[list[tuple[tuple[int, ...], str]]]:
        """Shape and dtype of every parameter, by group: what replicas of one model share."""
        return [[(tuple(p.shape), str(p.dtype)) for p in g.params] for g in self.groups]

    def scale_grads_(self, factor: float) -> None:
        """Multiply every gradient by ``factor`` in place (e.g. a sum over micro-batches into
        their mean)."""
        for g in self.groups:
            g.grad *= factor

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.groups:
            if set_to_none:
                for p in g.params:
                    p.grad = None
            else:
                g.grad[...] = 0
                for p in g.params:
                    p.grad = Tensor(p._grad_view)

    def step(self) -> None:
        self.step_count += 1
        for g, state in zip(self.groups, self.state):
            g.check_views()
            g.adopt_assigned_grads()
            for part, t in g.count_step():
                self._update(g, state, part, t)

    def _update(self, group: FlatGroup, state: dict, part: slice, t: int) -> None:
        """Update group.data[part], whose parameters are at their t-th step (t >= 1)."""
        raise NotImplementedError(f"{type(self).__name__}._update is abstract")

    def _buffer(self, group: FlatGroup, state: dict, name: str):
        if name not in state:
            state[name] = group.xp.zeros_like(group.data)
        return state[name]

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """{"step": int, "param_groups": [options], "buffers": {"g0.exp_avg": ndarray, ...}};
        "g0.step" holds group 0's per-parameter step counts (int64). load_state_dict takes it
        without "param_groups" too: the options then stay as they are."""
        buffers = {f"g{i}.{name}": backend.to_numpy(arr).copy()
                   for i, st in enumerate(self.state) for name, arr in st.items()}
        buffers.update({f"g{i}.step": g.steps.copy() for i, g in enumerate(self.groups)})
        groups = [{k: v for k, v in g.options.items()} for g in self.groups]
        return {"step": self.step_count, "param_groups": groups, "buffers": buffers}

    def load_state_dict(self, state: dict) -> None:
        """Copy a state_dict() in; one without per-parameter steps (written before they
        existed) gives its global step to every parameter."""
        groups = state.get("param_groups")
        if groups is not None:
            if len(groups) != len(self.groups):
                raise ValueError(f"optimizer state has {len(groups)} parameter groups, this "
                                 f"optimizer has {len(self.groups)}")
            for g, opts in zip(self.groups, groups):
                g.options.update({k: (tuple(v) if isinstance(v, list) else v)
                                  for k, v in opts.items()})
        for i, g in enumerate(self.groups):
            self.state[i] = {}
            steps = np.full(len(g.params), int(state["step"]), dtype=np.int64)
            for key, arr in state["buffers"].items():
                prefix, name = key.split(".", 1)
                if prefix != f"g{i}":
                    continue
                if name == "step":
                    if arr.shape != steps.shape or arr.dtype.kind not in "iu" or (arr < 0).any():
                        raise ValueError(f"optimizer state {key} has shape {arr.shape}, "
                                         f"expected {steps.shape}: one step count >= 0 per "
                                         f"parameter (got dtype {arr.dtype})")
                    steps = arr.astype(np.int64)
                    continue
                if arr.shape != g.data.shape:
                    raise ValueError(f"optimizer state {key} has shape {arr.shape}, expected "
                                     f"{g.data.shape}")
                self.state[i][name] = backend.to_device(np.array(arr, dtype=g.data.dtype),
                                                        backend.device_of(g.data))
            g.steps = steps
        self.step_count = int(state["step"])


class SGD(Optimizer):
    """p -= lr * (g + wd p), with (Nesterov) momentum as in torch.optim.SGD."""

    defaults = {"lr": 1e-2, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}

    def _update(self, group, state, part, t):
        o = group.options
        p, g = group.data[part], group.grad[part]
        if o["weight_decay"]:
            g = g + o["weight_decay"] * p
        if o["momentum"]:
            buf = self._buffer(group, state, "momentum")[part]
            if t == 1:
                buf[...] = g
            else:
                buf *= o["momentum"]
                buf += g
            g = g + o["momentum"] * buf if o["nesterov"] else buf
        p -= o["lr"] * g


class Adam(Optimizer):
    """Adam with bias correction (torch.optim.Adam's formula); weight_decay is L2 on the gradient.

    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
    """

    defaults = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
    decoupled = False

    def _update(self, group, state, part, t):
        o = group.options
        xp = group.xp
        b1, b2 = o["betas"]
        data, grad = group.data[part], group.grad[part]
        exp_avg = self._buffer(group, state, "exp_avg")[part]
        exp_avg_sq = self._buffer(group, state, "exp_avg_sq")[part]
        lr, eps, wd = o["lr"], o["eps"], o["weight_decay"]
        fused = kernels.module_with("adam_update_", data, grad, exp_avg, exp_avg_sq)
        if fused:
            scratch = group.scratch()[part] if xp is np else None  # the CPU kernel's temporary
            fused.adam_update_(data, grad, exp_avg, exp_avg_sq, lr, b1, b2, eps, wd, t,
                               self.decoupled, scratch)
            return
        if wd and self.decoupled:
            data *= 1 - lr * wd
        elif wd:
            grad = grad + wd * data  # the L2 penalty
        exp_avg *= b1
        exp_avg += (1 - b1) * grad
        exp_avg_sq *= b2
        exp_avg_sq += (1 - b2) * grad * grad
        data -= lr / (1 - b1 ** t) * exp_avg / (xp.sqrt(exp_avg_sq / (1 - b2 ** t)) + eps)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * wd before the Adam step."""

    defaults = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}
    decoupled = True


def clip_grad_norm_(parameters: Iterable[Tensor], max_norm: float) -> Tensor:
    """Scale gradients in place so their global L2 norm is at most max_norm.

    Returns the norm before clipping as a 0-d Tensor on the gradients' device: on a GPU the
    clipping happens without a host synchronisation (float(norm) reads it when needed).
    """
    grads = [p.grad.data for p in parameters if p.grad is not None]
    if not grads:
        return Tensor(np.zeros((), dtype=np.float32))
    xp = backend.array_module(grads[0])
    total = xp.sqrt(sum(xp.vdot(g.reshape(-1), g.reshape(-1)) for g in grads))
    if xp is np:
        if total > max_norm:
            for g in grads:
                g *= g.dtype.type(max_norm / (total + 1e-6))
    else:
        coef = xp.minimum(max_norm / (total + 1e-6), 1.0)
        for g in grads:
            g *= coef.astype(g.dtype)
    return Tensor(xp.asarray(total, dtype=grads[0].dtype))


def layer_decay_groups(model, weight_decay: float, lr: float, decay: float, n_layer: int
                       ) -> list[dict]:
    """:func:`decay_groups` for each depth of a Transformer, the lr of each scaled by ``decay``
    per level below the top (ULMFiT's discriminative fine-tuning, BERT's layer-wise lr decay):
    the embeddings (depth 0) learn slowest, the layers above them faster, and what sits on the
    last layer (the final norm, a new head) at ``lr``. Each group's ``lr_scale`` lets the
    schedule scale its floor alike."""
    groups = []
    for depth in range(n_layer + 2):
        scale = decay ** (n_layer + 1 - depth)
        part = [(n, p) for n, p in model.named_parameters()
                if p.requires_grad and _depth(n, n_layer) == depth]
        for wd, keep in ((weight_decay, lambda p: p.ndim >= 2), (0.0, lambda p: p.ndim < 2)):
            params = [p for _, p in part if keep(p)]
            if params:
                groups.append({"params": params, "weight_decay": wd, "lr": lr * scale,
                               "lr_scale": scale})
    if not groups:
        raise ValueError("optimizer: every parameter of the model is frozen")
    return groups


def _depth(name: str, n_layer: int) -> int:
    """0 for the embeddings, i + 1 for Transformer layer i, n_layer + 1 for the rest."""
    match = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return 0 if re.search(r"(?:^|\.)(tok_emb|pos_emb)\.", name) else n_layer + 1


def decay_groups(model, weight_decay: float) -> list[dict]:
    """Two groups by nanoGPT's rule: weight decay on every parameter of 2+ dimensions (matmul
    weights, embeddings, LoRA adapters), none on biases and norm gains. Frozen parameters are
    left out."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("optimizer: every parameter of the model is frozen")
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
