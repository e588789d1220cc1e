"""Small helpers shared by the tests."""
import numpy as np

import minigrad_lm as mg
from minigrad_lm import nn


def T(array, device="cpu", requires_grad=False, dtype=None):
    """A tensor from a NumPy array on `device` (dtype kept unless given)."""
    arr = np.asarray(array, dtype=dtype) if dtype is not None else np.asarray(array)
    return mg.tensor(arr, device=device, requires_grad=requires_grad)


def check_op(fn, ref, arrays, device, atol=1e-10):
    """fn on tensors matches ref on float64 NumPy arrays, and passes gradcheck."""
    tensors = [T(a, device) for a in arrays]
    got = fn(*tensors).numpy()
    want = ref(*[np.asarray(a, dtype=np.float64) for a in arrays])
    np.testing.assert_allclose(got, want, atol=atol, rtol=1e-7)
    assert mg.gradcheck(fn, tensors)


def to_float64(module, device="cpu"):
    """The module on `device` in float64, buffers included (for gradcheck)."""
    module.to(device)
    for p in module.parameters():
        p.data = p.data.astype(np.float64)
    for m in module.modules():
        for v in m.__dict__.values():
            if isinstance(v, mg.Tensor) and not isinstance(v, nn.Parameter):
                v.data = v.data.astype(np.float64)
    return module


def x64(shape, device, seed=0):
    """A float64 standard-normal tensor of `shape` on `device`."""
    return mg.tensor(np.random.default_rng(seed).standard_normal(shape), device=device)
