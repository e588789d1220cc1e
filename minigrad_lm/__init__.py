"""minigrad_lm: a from-scratch autograd engine and GPT training stack on NumPy and CuPy."""
import numpy as _np

from . import backend, ops, rng
from .backend import cuda_available, get_default_device, set_default_device
from .creation import arange, full, ones, ones_like, rand, randn, tensor, zeros, zeros_like
from .gradcheck import GradcheckError, gradcheck
from .ops import (abs, argmax, argmin, broadcast_to, clip, concatenate, exp, expand, gelu, log,
                  log_softmax, logsumexp, masked_fill, matmul, max, maximum, mean, min, minimum,
                  relu, reshape, sigmoid, softmax, split, sqrt, squeeze, stack, std, sum,
                  swapaxes, tanh, transpose, unsqueeze, var, where)
from .rng import manual_seed
from .tensor import Function, Tensor, enable_grad, is_grad_enabled, no_grad

from . import models, nn, optim  # noqa: E402  (mg.nn.Linear, mg.optim.AdamW, mg.models.GPT)
# mg.recompute.checkpoint(fn, *args); not mg.checkpoint: that name is the checkpoint-file module
from . import recompute  # noqa: E402

backend.tune_host_allocator()

float32, float64, int64 = _np.float32, _np.float64, _np.int64  # dtype names as in NumPy/PyTorch

__version__ = "0.1.0"
