"""minigrad_lm: a from-scratch autograd engine and GPT training stack on NumPy and CuPy.

The layers, each importing only the ones before it: io (safe files) and backend (devices,
kernels) -> engine (Tensor, ops, autograd) -> nn -> optim -> models -> inference -> data ->
train -> the command-line tools (generate, classify, evaluate, translate, export, plot).
Importing the package changes nothing process-wide; the engine's first heavy use switches on
its one process-wide setting (backend/tuning.py; MINIGRAD_MALLOC_TUNING=0 opts out).
"""
import numpy as _np

from . import backend, engine, models, nn, optim  # mg.nn.Linear, mg.optim.AdamW, mg.models.GPT
from .backend import cuda_available, get_default_device, set_default_device
from .engine import amp, ops, recompute, rng
from .engine.creation import (
    arange,
    full,
    ones,
    ones_like,
    rand,
    randn,
    tensor,
    zeros,
    zeros_like,
)
from .engine.gradcheck import GradcheckError, gradcheck
from .engine.ops import (
    abs,
    argmax,
    argmin,
    broadcast_to,
    clip,
    concatenate,
    exp,
    expand,
    gelu,
    log,
    log_softmax,
    logsumexp,
    masked_fill,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    relu,
    reshape,
    sigmoid,
    softmax,
    split,
    sqrt,
    squeeze,
    stack,
    std,
    sum,
    swapaxes,
    tanh,
    transpose,
    unsqueeze,
    var,
    where,
)
from .engine.rng import manual_seed
from .engine.tensor import Function, Tensor, enable_grad, is_grad_enabled, no_grad

float32, float64, int64 = _np.float32, _np.float64, _np.int64  # dtype names as in NumPy/PyTorch

__version__ = "0.1.0"
