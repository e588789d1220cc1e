"""Small helpers shared by the tests."""
import numpy as np

import minigrad_lm as mg


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
